"""Where a model's error sits: blown highlights (clean luminance >= 0.95) against the rest.

Under unclipped noise, white skies and walls are where a denoiser's estimate of the noise is
hardest to check: the clean value sits at the top of the range. One JSON line per (model,
ensemble, image): PSNR, the mean squared error in the highlights and elsewhere (x 1e4), the
largest highlight error, and the highlights' share.

  python benchmarks/bench_highlights.py --models RUN/checkpoints/ckpt-00012500,shipped --ensemble 1,8

Default images: the last 2 sun80 photos (held out by every sun80 config), never Kodak24.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import corpus, emit

from distgan.denoise import denoise_array, load_denoiser
from distgan.imagefile import list_images, read_image
from distgan.evaluation import eval_noisy
from distgan.metrics import psnr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="shipped", help="comma-separated; 'shipped' = the packaged one")
    ap.add_argument("--data", default=None, help="folder of clean images (default: held-out sun80 pair)")
    ap.add_argument("--noise", default="gaussian:25:unclipped")
    ap.add_argument("--ensemble", default="1")
    ap.add_argument("--threshold", type=float, default=0.95)
    args = ap.parse_args()
    files = list_images(args.data) if args.data else corpus()[1][-2:]
    images = []  # (name, clean, noisy, highlight mask): prepared once for every model
    for f in files:
        clean = read_image(f)[0]
        images.append((f.name, clean, eval_noisy(clean, args.noise, 0, f.name)[0],
                       clean.mean(axis=2) >= args.threshold))
    for model in args.models.split(","):
        den = load_denoiser(None if model == "shipped" else model)
        label = model if model == "shipped" else str(Path(*Path(model).parts[-3:]))
        for n in (int(t) for t in args.ensemble.split(",")):
            for name, clean, noisy, hl in images:
                y = denoise_array(den, noisy, noise_level=args.noise, ensemble=n)
                err = np.square(y - clean)
                emit(bench="highlights", model=label, ensemble=n, image=name, noise=args.noise,
                     psnr=round(psnr(clean, y), 2),
                     highlight_mse_1e4=round(float(err[hl].mean() * 1e4), 2) if hl.any() else None,
                     rest_mse_1e4=round(float(err[~hl].mean() * 1e4), 2),
                     highlight_max_err=round(float(np.sqrt(err[hl].max())), 3) if hl.any() else None,
                     highlight_share=round(float(hl.mean()), 4))


if __name__ == "__main__":
    main()

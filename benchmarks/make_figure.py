"""docs/kodak-crops.png: a crop of one Kodak24 image, clean | noisy | BM3D | distgan, at
unclipped gaussian sigma 25 (seeded as `distgan eval` seeds it), PSNR of the whole image
under each panel. Usage: python benchmarks/make_figure.py [kodimNN.png] [--model PATH]
"""

from __future__ import annotations

import sys

import numpy as np
from _common import KODAK, ROOT
from PIL import Image, ImageDraw

from distgan.denoise import denoise_array, load_denoiser
from distgan.imagefile import read_image
from distgan.evaluation import eval_noisy
from distgan.metrics import psnr
from distgan.noise import parse_spec


def main() -> None:
    name = next((a for a in sys.argv[1:] if a.endswith(".png")), "kodim23.png")
    model = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else None
    clean, _ = read_image(KODAK / name)
    spec = parse_spec("gaussian:25:unclipped")
    noisy, _ = eval_noisy(clean, spec, 0, name)
    import bm3d

    b = np.clip(bm3d.bm3d_rgb(noisy, sigma_psd=25 / 255), 0, 1)
    ours = denoise_array(load_denoiser(model), noisy, noise_level=str(spec))
    y, x, s = 150, 150, 180
    panels = [("clean", clean, None), ("noisy", noisy, psnr(clean, noisy)),
              ("BM3D", b, psnr(clean, b)), ("distgan", ours, psnr(clean, ours))]
    canvas = Image.new("RGB", (4 * s + 5 * 4, s + 22), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img, p) in enumerate(panels):
        crop = (np.clip(img[y : y + s, x : x + s], 0, 1) * 255).round().astype(np.uint8)
        canvas.paste(Image.fromarray(crop), (4 + i * (s + 4), 4))
        text = label if p is None else f"{label} {p:.2f} dB"
        draw.text((4 + i * (s + 4), s + 7), text, fill="black")
    out = ROOT / "docs" / "kodak-crops.png"
    canvas.save(out)
    print(out)


if __name__ == "__main__":
    main()

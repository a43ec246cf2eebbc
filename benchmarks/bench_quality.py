"""The README's quality table: distgan against BM3D, NLM, TV and wavelet on Kodak24 at
gaussian 15, 25 and 50 (unclipped, as the published tables) and the mixed noise, in one run.

One JSON line per (method, noise) with mean PSNR / SSIM and s/MP, then the targets for
distgan and for its x8 self-ensemble ('distgan x8', `denoise --ensemble 8`): distgan - BM3D at
sigma 25, and distgan - best classical on the mixed noise.
`--limit K` scores the first K images; `--model PATH` (default: the shipped model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import KODAK, emit

from distgan.imagefile import list_images
from distgan.metrics import markdown_table, run_eval
from distgan.noise import parse_spec

SPECS = ["gaussian:15:unclipped", "gaussian:25:unclipped", "gaussian:50:unclipped",
         "mix:gaussian:15+s&p:0.02"]
OURS = ["distgan", "distgan x8"]
METHODS = [*OURS, "noisy", "bm3d", "nlm", "tv", "wavelet"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(KODAK))
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each")
    args = ap.parse_args()
    files = list_images(args.data)
    if not files:
        raise SystemExit(f"bench_quality: no images in {args.data}")
    files = files[: args.limit] if args.limit else files
    rep = run_eval(files, [parse_spec(s) for s in SPECS], METHODS, args.model, seed=0, jobs=args.jobs)
    for r in rep["results"]:
        emit(bench="quality", images=len(files), **r)
    res = {(r["method"], r["noise"]): r["psnr"] for r in rep["results"]}
    mix = SPECS[3]
    best = max(("bm3d", "nlm", "tv", "wavelet"), key=lambda m: res[(m, mix)])
    for ours in OURS:
        emit(bench="quality", method=ours, target="gaussian25_vs_bm3d_db", value=round(
            res[(ours, SPECS[1])] - res[("bm3d", SPECS[1])], 2))
        emit(bench="quality", method=ours, target="mix_vs_best_classical_db", best_classical=best,
             value=round(res[(ours, mix)] - res[(best, mix)], 2))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rep) + "\n")


if __name__ == "__main__":
    main()

"""The quality table: distgan against BM3D, NLM, TV and wavelet on Kodak24, in one run.

= `distgan eval --data KODAK24 --noise all --ensemble 1,8 --noise-level true,auto`: every
noise of `--noise all` (gaussian 15, 25 and 50 unclipped, as the published tables; poisson,
speckle, s&p, a gaussian + s&p mix, camera noise at ISO 1600), seed 0. One JSON line per
(method, noise) with mean PSNR / SSIM and s/MP, then one line per target:

  - gaussian 25: distgan - BM3D (at least -0.45 dB, i.e. 31.3 dB where BM3D is 31.76)
  - gaussian 15 and 50: distgan - BM3D (within 0.5 dB)
  - the mix and camera:1600: distgan - the best classical method (at least +0.5 dB)
  - every column: distgan - NLM (at least +1.5 dB)
  - gaussian 15, 25, 50: 'distgan auto' (sigma estimated) - distgan (told the truth), at
    least -0.3 dB

`--limit K` scores the first K images; `--model PATH` (default: the shipped model);
`--jobs 2` scores images in 2 processes of one thread each (same scores).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import KODAK, emit

from distgan.evaluation import NOISE_GRID, markdown_table, run_eval
from distgan.imagefile import list_images
from distgan.noise import parse_spec

OURS = ["distgan", "distgan x8"]
CLASSICAL = ["bm3d", "nlm", "tv", "wavelet"]
METHODS = [*OURS, "distgan auto", "noisy", *CLASSICAL]
G15, G25, G50 = NOISE_GRID[:3]
MIX = "mix:gaussian:15+s&p:0.02"
CAMERA = "camera:1600"


def targets(res: dict, noises: list[str]) -> list[dict]:
    """Each target as (value, threshold, met), from {(method, noise): psnr}."""
    out = []

    def add(method, name, value, threshold, **kw):
        out.append({"bench": "quality", "method": method, "target": name, "value": round(value, 2),
                    "threshold": threshold, "met": bool(value >= threshold), **kw})

    for ours in OURS:
        add(ours, "gaussian25_vs_bm3d_db", res[(ours, G25)] - res[("bm3d", G25)], -0.45)
        for g in (G15, G50):
            add(ours, f"{g.split(':')[1]}_vs_bm3d_db", res[(ours, g)] - res[("bm3d", g)], -0.5)
        for n in (MIX, CAMERA):
            best = max(CLASSICAL, key=lambda m: res[(m, n)])
            add(ours, f"{n.split(':')[0]}_vs_best_classical_db", res[(ours, n)] - res[(best, n)], 0.5,
                best_classical=best)
        add(ours, "every_column_vs_nlm_db_min", min(res[(ours, n)] - res[("nlm", n)] for n in noises), 1.5)
    for g in (G15, G25, G50):
        add("distgan auto", f"auto_vs_true_sigma_{g.split(':')[1]}_db",
            res[("distgan auto", g)] - res[("distgan", g)], -0.3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(KODAK))
    ap.add_argument("--markdown", default=None, help="also write the table here")
    ap.add_argument("--json", default=None, help="also write the full report (per image) here")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each")
    args = ap.parse_args()
    files = list_images(args.data)
    if not files:
        raise SystemExit(f"bench_quality: no images in {args.data}")
    files = files[: args.limit] if args.limit else files
    noises = list(NOISE_GRID)
    rep = run_eval(files, [parse_spec(s) for s in noises], METHODS, args.model, seed=0, jobs=args.jobs)
    for r in rep["results"]:
        emit(bench="quality", images=len(files), **r)
    res = {(r["method"], r["noise"]): r["psnr"] for r in rep["results"]}
    for row in targets(res, noises):
        emit(**row)
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rep) + "\n")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(rep, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Denoiser speed and memory, one run:

  - seconds per MP and peak RSS at 0.25, 1, 4, 16 and 100 MP (synthetic uint8 photos), each
    size in a fresh process so its peak is its own; the shipped architecture
    (configs/shipped.yaml; compute does not depend on the weights). Times are medians of
    `repeats(mp)` calls (5 up to 1 MP, 3 at 4 MP, one above), after one warm-up call
  - on one 0.25 MP image: scikit-image's denoise_nl_means (fast mode, median of 5) and BM3D
    (bm3d_rgb with the true sigma, median of 3), as s/MP ratios against ours
  - linearity: t(100 MP) / t(1 MP)
  - the same at 4 MP in float32, against the default precision ("auto": bfloat16 on a CPU
    with AVX512-BF16/AMX, as here)

`--quick` runs 0.25, 1 and 4 MP only. `--set model.KEY=VALUE` (repeatable) times another
architecture: configs/shipped.yaml with those overrides, e.g. a candidate generator
`--set "model.gen_filters=[64, 128, 256]"`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import ROOT, emit, median_time, quick


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def synthetic(mp: float, seed: int = 0) -> np.ndarray:
    h = int(round((mp * 1e6 * 3 / 4) ** 0.5))
    w = int(round(mp * 1e6 / h))
    rng = np.random.default_rng(seed)
    out = np.empty((h, w, 3), np.uint8)
    base = (np.linspace(40, 200, w)[None, :, None]).astype(np.uint8)
    for y in range(0, h, 1024):  # built in bands, never as a float copy
        band = out[y : y + 1024]
        band[:] = base
        band += rng.integers(0, 40, band.shape, dtype=np.uint8)
    return out


def repeats(mp: float) -> int:
    """How many timed calls a size gets: a 0.25 MP call lasts ~0.1 s and varies by a third
    from one call to the next on a shared 2-core machine; a 100 MP one lasts ~20 s."""
    return 5 if mp <= 1 else 3 if mp <= 4 else 1


def child(mp: float, model: str, precision: str) -> None:
    """One size, in this fresh process: prints a JSON object."""
    from distgan.denoise import denoise_array, load_denoiser

    den = load_denoiser(model, precision)
    warm = synthetic(0.05)
    denoise_array(den, warm, noise_level=10)  # tracing is not throughput
    img = synthetic(mp)
    rss_before = peak_rss_mb()
    dt = median_time(lambda: denoise_array(den, img, noise_level=10), repeats(mp), warmup=0)
    print(json.dumps({"mp": mp, "seconds": dt, "precision": den.precision, "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": rss_before, "shape": list(img.shape)}))


def overrides() -> list[str]:
    """The values of every `--set` on the command line."""
    return [sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--set"]


def model_file() -> str:
    from distgan.config import load_config
    from distgan.models import build_generator

    cfg = load_config(ROOT / "configs" / "shipped.yaml", overrides())
    path = os.path.join(tempfile.mkdtemp(prefix="bench-denoise-"), "g.keras")
    build_generator(cfg.model, cfg.data.chunk).save(path)
    return path


def run_child(mp: float, model: str, precision: str = "auto") -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", str(mp), model, precision],
                       capture_output=True, text=True, cwd=ROOT, timeout=3600)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    model = model_file()
    sizes = (0.25, 1, 4) if quick() else (0.25, 1, 4, 16, 100)
    res = {}
    for mp in sizes:
        res[mp] = run_child(mp, model)
        emit(bench="denoise", method="distgan", megapixels=mp, overrides=overrides(),
             s_per_mp=round(res[mp]["seconds"] / mp, 3), runs=repeats(mp), precision=res[mp]["precision"],
             peak_rss_mb=round(res[mp]["peak_rss_mb"]), shape=res[mp]["shape"])
    f32 = run_child(4, model, "float32")
    emit(bench="denoise", method="distgan", megapixels=4, precision="float32",
         s_per_mp=round(f32["seconds"] / 4, 3), runs=repeats(4), peak_rss_mb=round(f32["peak_rss_mb"]),
         ratio_to_default=round(f32["seconds"] / res[4]["seconds"], 2))
    ours = res[0.25]["seconds"] / 0.25
    img = synthetic(0.25).astype(np.float32) / 255
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 25 / 255, img.shape), 0, 1)
    from skimage.restoration import denoise_nl_means

    nlm = median_time(lambda: denoise_nl_means(
        noisy, h=0.8 * 25 / 255, sigma=25 / 255, patch_size=5, patch_distance=6, fast_mode=True,
        channel_axis=-1), 5, warmup=0) / 0.25
    emit(bench="denoise", method="nlm_fast", megapixels=0.25, s_per_mp=round(nlm, 3), runs=5,
         ratio_to_distgan=round(nlm / ours, 2))
    import bm3d

    b = median_time(lambda: bm3d.bm3d_rgb(noisy, sigma_psd=25 / 255), 3, warmup=0) / 0.25
    emit(bench="denoise", method="bm3d", megapixels=0.25, s_per_mp=round(b, 3), runs=3,
         ratio_to_distgan=round(b / ours, 2))
    big = max(sizes)
    emit(bench="denoise", method="linearity", t_ratio=round(res[big]["seconds"] / res[1]["seconds"], 2),
         pixel_ratio=big / 1)


if __name__ == "__main__":
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        child(float(sys.argv[i + 1]), sys.argv[i + 2], sys.argv[i + 3])
    else:
        main()

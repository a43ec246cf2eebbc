"""`distgan eval`: distgan against the classical denoisers on a folder of clean photos.

Each image gets each noise spec, seeded by (seed, image name, spec) so that every method
and every run sees the same noisy image; each method is scored on it (PSNR / SSIM on RGB
in [0, 1], and seconds per megapixel). distgan is told the true noise parameters, as BM3D
is told the true sigma.
"""

from __future__ import annotations

import numpy as np

from .errors import UserError
from .metrics import psnr, ssim


# `--noise all`: the published tables' unclipped gaussian levels, then the other kinds.
NOISE_GRID = (
    "gaussian:15:unclipped", "gaussian:25:unclipped", "gaussian:50:unclipped", "poisson:30",
    "speckle:0.02", "s&p:0.05", "mix:gaussian:15+s&p:0.02", "camera:1600",
)


def true_sigma(spec, clean: np.ndarray, noisy: np.ndarray) -> float:
    """σ on [0, 1]: the spec's for pure gaussian noise, else the measured std of the noise."""
    if len(spec.parts) == 1 and spec.parts[0][0] == "gaussian":
        return spec.parts[0][1] / 255.0
    return float(np.std(noisy - clean))


def eval_noisy(clean: np.ndarray, spec, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The same noise for the same (seed, image, spec), whatever else is evaluated."""
    import zlib

    from .noise import add_noise

    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(str(spec).encode())])
    return add_noise(clean, spec, rng)


def distgan_method(ensemble: int, auto: bool = False) -> str:
    """The method name of distgan with a self-ensemble of n, told the true noise or left to
    estimate sigma itself: 'distgan', 'distgan x8', 'distgan auto', 'distgan x8 auto'."""
    return "distgan" + (f" x{ensemble}" if ensemble > 1 else "") + (" auto" if auto else "")


def ensemble_of(method: str) -> int:
    word = next((w for w in method.split() if w.startswith("x") and w[1:].isdigit()), "x1")
    return int(word[1:])


def _score_image(path, specs, methods, model, seed) -> list[dict]:
    """Every (noise, method) row of one image."""
    import time

    from .baselines import BASELINES
    from .imagefile import read_image

    den = None
    if any(m.startswith("distgan") for m in methods):
        from .denoise import denoise_array, load_denoiser

        den = load_denoiser(model)  # cached: loaded once per process
    clean, _ = read_image(path)
    mp = clean.shape[0] * clean.shape[1] / 1e6
    rows = []
    for spec in specs:
        noisy, params = eval_noisy(clean, spec, seed, path.name)
        sigma = true_sigma(spec, clean, noisy)
        for m in methods:
            t0 = time.perf_counter()
            if m.startswith("distgan"):
                # told the true noise parameters, as BM3D is told the true σ; or, as 'auto',
                # given only its own estimate of a gaussian σ, as `distgan denoise` does
                level = "auto" if m.endswith(" auto") else str(spec)
                out = denoise_array(den, noisy, noise_level=level, ensemble=ensemble_of(m))
            else:
                out = BASELINES[m](noisy, clean, sigma)
            dt = time.perf_counter() - t0
            rows.append({"image": path.name, "method": m, "noise": str(spec),
                         "psnr": psnr(clean, out), "ssim": ssim(clean, out), "s_per_mp": dt / mp})
    return rows


def _one_thread() -> None:
    """A worker of `run_eval(jobs > 1)`: one thread, so the jobs do not fight over cores and
    each one's s/MP is a one-core figure (with jobs=1, TensorFlow uses every core). It
    imports TensorFlow as quietly as the command that started it."""
    from .console import quiet_tensorflow

    quiet_tensorflow(threads=1)


def run_eval(files, specs, methods, model=None, seed=0, progress=None, jobs: int = 1) -> dict:
    """Score each method on each (image, noise): PSNR / SSIM on RGB in [0, 1], and s/MP.

    `jobs` > 1 scores images in that many worker processes of one thread each; the scores
    are the same as in one process (the noise depends only on seed, image and spec).
    """
    if not files:
        raise UserError("eval: no images to score")
    if jobs < 1:
        raise UserError(f"eval: --jobs must be >= 1, got {jobs}")
    per_image: dict[int, list[dict]] = {}
    if jobs == 1:
        for i, path in enumerate(files):
            per_image[i] = _score_image(path, specs, methods, model, seed)
            for r in per_image[i] if progress else ():
                progress(r)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            futures = {pool.submit(_score_image, path, specs, methods, model, seed): i
                       for i, path in enumerate(files)}
            for f in as_completed(futures):
                per_image[futures[f]] = f.result()
                for r in per_image[futures[f]] if progress else ():
                    progress(r)
    rows = [r for i in range(len(files)) for r in per_image[i]]
    results = []
    for m in methods:
        for spec in specs:
            sel = [r for r in rows if r["method"] == m and r["noise"] == str(spec)]
            results.append({"method": m, "noise": str(spec),
                            "psnr": float(np.mean([r["psnr"] for r in sel])),
                            "ssim": float(np.mean([r["ssim"] for r in sel])),
                            "s_per_mp": float(np.median([r["s_per_mp"] for r in sel]))})
    return {"results": results, "images": rows}


def markdown_table(report: dict) -> str:
    """method x noise: mean PSNR / SSIM, and the median s/MP of the method."""
    res = report["results"]
    noises = list(dict.fromkeys(r["noise"] for r in res))
    methods = list(dict.fromkeys(r["method"] for r in res))
    lines = ["| method | " + " | ".join(noises) + " | s/MP |",
             "|---|" + "---|" * (len(noises) + 1)]
    for m in methods:
        cells = {r["noise"]: r for r in res if r["method"] == m}
        spmp = float(np.median([c["s_per_mp"] for c in cells.values()]))
        lines.append(f"| {m} | " + " | ".join(
            f"{cells[n]['psnr']:.2f} / {cells[n]['ssim']:.3f}" for n in noises) + f" | {spmp:.3g} |")
    return "\n".join(lines)

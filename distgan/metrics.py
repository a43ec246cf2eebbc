"""Image-quality metrics, whole-image evaluation and sample grids.

PSNR and SSIM come from `skimage.metrics`, on RGB in [0, 1] (data_range=1).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .denoise import Infer, apply_tiled, apply_whole, with_params


def psnr(clean: np.ndarray, test: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(clean, np.clip(test, 0, 1), data_range=1.0))


def ssim(clean: np.ndarray, test: np.ndarray) -> float:
    h, w = clean.shape[:2]
    win = min(7, h, w)
    win -= 1 - win % 2  # odd window no larger than the image
    if win < 3:
        return float("nan")
    return float(
        structural_similarity(
            clean, np.clip(test, 0, 1), data_range=1.0, channel_axis=-1, win_size=win
        )
    )


def evaluate(infer: Infer, images, tile: int | None, overlap: int) -> tuple[dict, list[np.ndarray]]:
    """Denoise whole held-out images and score them: in one call each (mirrored out to a
    multiple of 16) with `tile` None, as a fully convolutional model runs in `distgan
    denoise`, else in chunks of `tile` joined back.

    Returns ({test_mse, psnr, ssim, psnr_noisy, ssim_noisy}, denoised images): means over
    every (image, noise) pair, and psnr / ssim per noise spec as 'psnr <spec>'.
    """
    rows, outs = [], []
    for im in images:
        fn = with_params(infer, im.params)
        den = apply_whole(fn, im.noisy) if tile is None else apply_tiled(fn, im.noisy, tile, overlap)
        outs.append(den)
        rows.append(
            (
                float(np.mean((np.clip(den, 0, 1) - im.clean) ** 2)),
                psnr(im.clean, den),
                ssim(im.clean, den),
                psnr(im.clean, im.noisy),
                ssim(im.clean, im.noisy),
            )
        )
    keys = ("test_mse", "psnr", "ssim", "psnr_noisy", "ssim_noisy")
    means = np.nanmean(np.array(rows), axis=0) if rows else [float("nan")] * len(keys)
    scores = dict(zip(keys, map(float, means)))
    specs = list(dict.fromkeys(getattr(im, "spec", "") for im in images))
    if len(specs) > 1:
        for spec in specs:
            sel = [r for r, im in zip(rows, images) if im.spec == spec]
            scores[f"psnr {spec}"] = float(np.mean([r[1] for r in sel]))
            scores[f"ssim {spec}"] = float(np.nanmean([r[2] for r in sel]))
    return scores, outs


def sample_grid(images, denoised: list[np.ndarray], size: int = 128, gap: int = 2) -> np.ndarray:
    """Rows clean / noisy / denoised (as in the paper), one column per image: uint8 RGB.

    Each image contributes its central size x size crop (or the whole image, padded).
    """

    def crop(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[:2]
        y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
        c = np.clip(x[y0 : y0 + size, x0 : x0 + size], 0, 1)
        canvas = np.ones((size, size, 3), np.float32)
        canvas[: c.shape[0], : c.shape[1]] = c
        return canvas

    n = len(images)
    grid = np.ones((3 * size + 4 * gap, n * size + (n + 1) * gap, 3), np.float32)
    for j, (im, den) in enumerate(zip(images, denoised)):
        for i, x in enumerate((im.clean, im.noisy, den)):
            y0, x0 = gap + i * (size + gap), gap + j * (size + gap)
            grid[y0 : y0 + size, x0 : x0 + size] = crop(x)
    return np.rint(grid * 255).astype(np.uint8)

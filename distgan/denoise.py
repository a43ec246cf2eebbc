"""Apply a denoiser to an image of any size, streaming rows of overlapping tiles.

`apply_tiled` cuts one row of tiles at a time (`tiling.iter_rows`), runs the model on
them in batches, and blends the result into a preallocated output (`tiling.RowJoiner`),
so memory does not grow with the number of tiles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .tiling import RowJoiner, iter_rows, make_layout

Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (noisy tiles, params) -> tiles


def apply_tiled(
    infer: Infer,
    image: np.ndarray,
    params: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int = 16,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Denoise float32 H x W x 3 `image` tile by tile; `params` is one conditioning vector."""
    layout = make_layout(image.shape, tile, overlap)
    joiner = RowJoiner(layout, out, dtype=np.float32)
    p = np.asarray(params, np.float32)[None]
    for row in iter_rows(image, tile, overlap):
        done = [
            np.asarray(infer(row[i : i + batch_size], np.repeat(p, len(row[i : i + batch_size]), 0)))
            for i in range(0, len(row), batch_size)
        ]
        joiner.add_row(np.concatenate(done))
    return joiner.result()


def blend(image: np.ndarray, denoised: np.ndarray, strength: float) -> np.ndarray:
    """y = (1 - I) * x + I * f(x): I = 0 gives the input back, I = 1 the model output."""
    if strength == 1.0:
        return denoised
    if strength == 0.0:
        return image
    return (1.0 - strength) * image + strength * denoised

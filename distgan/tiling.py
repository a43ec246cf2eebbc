"""Split any image into square tiles and join them back (numpy and scikit-image only).

Tiles sit on a grid with stride `tile - overlap`. An image that the grid does not cover
exactly is padded at the bottom and right by mirroring (symmetric), which gives a model
natural content at the border; `join` crops the padding away again.

* `split` / `join` are exact inverses for every size from 1 x 1 up, at any overlap.
* With overlap, `join` blends tiles with a smooth window (raised cosine over the overlap,
  flat in the middle), normalised by the summed weights, so independently processed tiles
  leave no seam and identical tiles give back the input exactly.
* The streaming form (`iter_rows` + `RowJoiner`) walks one row of tiles at a time and
  writes finished pixel rows into a preallocated output, so a 100 MP image never has all
  its tiles, nor a float64 copy of itself, in memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from skimage.util import view_as_windows


@dataclass(frozen=True)
class Layout:
    """Where the tiles of an image lie. Cheap: describes 100 MP without allocating it."""

    height: int
    width: int
    channels: int  # 0 for a 2-D (greyscale) image
    tile: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image must be at least 1 x 1, got {self.height} x {self.width}")
        if self.tile < 1:
            raise ValueError(f"tile must be >= 1, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile), got {self.overlap} for {self.tile}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def _count(self, n: int) -> int:
        return 1 if n <= self.tile else math.ceil((n - self.tile) / self.stride) + 1

    @property
    def rows(self) -> int:
        return self._count(self.height)

    @property
    def cols(self) -> int:
        return self._count(self.width)

    @property
    def n_tiles(self) -> int:
        return self.rows * self.cols

    @property
    def padded_height(self) -> int:
        return (self.rows - 1) * self.stride + self.tile

    @property
    def padded_width(self) -> int:
        return (self.cols - 1) * self.stride + self.tile

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) + ((self.channels,) if self.channels else ())

    def origins(self) -> np.ndarray:
        """(n_tiles, 2) top-left corners in row-major order."""
        ys = np.arange(self.rows) * self.stride
        xs = np.arange(self.cols) * self.stride
        return np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)


def make_layout(shape: tuple[int, ...], tile: int, overlap: int = 0) -> Layout:
    if len(shape) not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C image, got shape {shape}")
    return Layout(shape[0], shape[1], shape[2] if len(shape) == 3 else 0, tile, overlap)


def mirror_index(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices into an axis of length n, mirrored past its ends (numpy's 'symmetric')."""
    m = np.mod(idx, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def _as3d(image: np.ndarray) -> np.ndarray:
    return image[..., None] if image.ndim == 2 else image


def _windows(band: np.ndarray, layout: Layout, rows: int) -> np.ndarray:
    """Tiles of a padded band (rows*stride-ish x padded_width x C), row-major."""
    t, s = layout.tile, layout.stride
    c = band.shape[2]
    win = view_as_windows(band, (t, t, c), step=(s, s, c))  # (rows, cols, 1, t, t, c)
    tiles = win.reshape(rows * layout.cols, t, t, c)
    return tiles if layout.channels else tiles[..., 0]


def split(image: np.ndarray, tile: int, overlap: int = 0) -> tuple[np.ndarray, Layout]:
    """Cut `image` (H x W or H x W x C) into (n_tiles, tile, tile[, C]) tiles, row-major."""
    image = np.asarray(image)
    layout = make_layout(image.shape, tile, overlap)
    ys = mirror_index(np.arange(layout.padded_height), layout.height)
    xs = mirror_index(np.arange(layout.padded_width), layout.width)
    padded = _as3d(image)[ys][:, xs]
    return np.ascontiguousarray(_windows(padded, layout, layout.rows)), layout


def iter_rows(image: np.ndarray, tile: int, overlap: int = 0) -> Iterator[np.ndarray]:
    """Yield one row of tiles at a time, (cols, tile, tile[, C]): the streaming `split`.

    Only a band of `tile` pixel rows is copied per step, so memory does not grow with
    the image's height.
    """
    image = np.asarray(image)
    layout = make_layout(image.shape, tile, overlap)
    xs = mirror_index(np.arange(layout.padded_width), layout.width)
    img = _as3d(image)
    for r in range(layout.rows):
        ys = mirror_index(np.arange(r * layout.stride, r * layout.stride + tile), layout.height)
        yield np.ascontiguousarray(_windows(img[ys][:, xs], layout, 1))


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D weights: raised-cosine ramps over `overlap` pixels at each end, 1 between.

    Strictly positive, so every pixel has weight even at image borders.
    """
    w = np.ones(tile, np.float64)
    if overlap:
        ramp = np.sin(0.5 * np.pi * (np.arange(overlap) + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[tile - overlap :] = np.minimum(w[tile - overlap :], ramp[::-1])
    return w


class RowJoiner:
    """Blend rows of tiles into `out` as they arrive; the streaming `join`.

    Keeps only a float64 band of `tile` pixel rows of the padded width. Pixel rows that
    no later tile row touches are normalised, cast and written to `out` as soon as they
    are final. Call `add_row` once per tile row, in order.
    """

    def __init__(self, layout: Layout, out: np.ndarray | None = None, dtype=np.float32):
        self.layout = layout
        self.out = np.empty(layout.shape, dtype) if out is None else out
        if self.out.shape != layout.shape:
            raise ValueError(f"output has shape {self.out.shape}, layout wants {layout.shape}")
        c = max(layout.channels, 1)
        t = layout.tile
        self._acc = np.zeros((t, layout.padded_width, c), np.float64)
        self._wsum = np.zeros((t, layout.padded_width, 1), np.float64)
        w = blend_window(t, layout.overlap)
        self._w2 = (w[:, None] * w[None, :])[..., None]
        self._row = 0

    def add_row(self, tiles: np.ndarray) -> None:
        lay = self.layout
        t, s = lay.tile, lay.stride
        if self._row >= lay.rows:
            raise ValueError("all tile rows were already added")
        tiles = _as3d(tiles) if lay.channels else np.asarray(tiles)[..., None]
        if tiles.shape[0] != lay.cols or tiles.shape[1:3] != (t, t):
            raise ValueError(f"expected {lay.cols} tiles of {t} x {t}, got {tiles.shape}")
        if lay.overlap == 0:  # no blending: tiles butt together, a pure reshape
            strip = tiles.transpose(1, 0, 2, 3).reshape(t, lay.cols * t, -1)
            self._emit(strip, t)
        else:
            for c in range(lay.cols):
                x = c * s
                self._acc[:, x : x + t] += tiles[c] * self._w2
                self._wsum[:, x : x + t] += self._w2
            last = self._row == lay.rows - 1
            done = t if last else s
            self._emit(self._acc[:done] / self._wsum[:done], done)
            # Shift the band up by one stride (numpy copies safely between overlapping views).
            self._acc[: t - s] = self._acc[s:]
            self._wsum[: t - s] = self._wsum[s:]
            self._acc[t - s :] = 0
            self._wsum[t - s :] = 0
        self._row += 1

    def _emit(self, pixels: np.ndarray, n: int) -> None:
        """Write the first n finished pixel rows of the current tile row."""
        lay = self.layout
        y0 = self._row * lay.stride
        y1 = min(y0 + n, lay.height)
        if y1 <= y0:
            return
        block = pixels[: y1 - y0, : lay.width]
        block = block if lay.channels else block[..., 0]
        if np.issubdtype(self.out.dtype, np.integer):
            info = np.iinfo(self.out.dtype)
            block = np.clip(np.rint(block), info.min, info.max)
        self.out[y0:y1] = block

    def result(self) -> np.ndarray:
        if self._row != self.layout.rows:
            raise ValueError(f"only {self._row} of {self.layout.rows} tile rows were added")
        return self.out


def join(tiles: np.ndarray, layout: Layout, out: np.ndarray | None = None) -> np.ndarray:
    """Rebuild the image from `split`'s tiles (possibly processed); exact for unchanged tiles."""
    tiles = np.asarray(tiles)
    if tiles.shape[0] != layout.n_tiles:
        raise ValueError(f"layout has {layout.n_tiles} tiles, got {tiles.shape[0]}")
    joiner = RowJoiner(layout, out, dtype=tiles.dtype)
    for r in range(layout.rows):
        joiner.add_row(tiles[r * layout.cols : (r + 1) * layout.cols])
    return joiner.result()

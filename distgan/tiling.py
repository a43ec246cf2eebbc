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
    padded = mirror_pad(_as3d(image), layout.padded_height, layout.padded_width)
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


def round_into(values: np.ndarray, dtype) -> np.ndarray:
    """Float pixel values rounded and clipped to an integer dtype's range, in place."""
    info = np.iinfo(dtype)
    return np.clip(np.rint(values, out=values), info.min, info.max, out=values)


def dihedral(tiles: np.ndarray, s: int) -> np.ndarray:
    """Symmetry s (0-7) of each tile in a batch (n, h, w, c): s % 4 quarter turns, then a
    mirror if s >= 4. A view."""
    r = np.rot90(tiles, s % 4, axes=(1, 2))
    return r[:, :, ::-1] if s >= 4 else r


def undo_dihedral(tiles: np.ndarray, s: int) -> np.ndarray:
    """The inverse of `dihedral(., s)`."""
    r = tiles[:, :, ::-1] if s >= 4 else tiles
    return np.rot90(r, -(s % 4), axes=(1, 2))


def mirror_pad(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` grown at the bottom and right to height x width by mirroring, as tiles are."""
    ys = mirror_index(np.arange(height), image.shape[0])
    xs = mirror_index(np.arange(width), image.shape[1])
    return image[ys][:, xs]


def _weight_sums(w: np.ndarray, n: int, stride: int, length: int) -> np.ndarray:
    """Sum of the 1-D window over n tiles at `stride`, along an axis of `length` pixels."""
    out = np.zeros(length, np.float64)
    for i in range(n):
        out[i * stride : i * stride + len(w)] += w
    return out


class RowJoiner:
    """Blend rows of tiles into `out` as they arrive; the streaming `join`.

    Keeps one band of `tile` pixel rows of the padded width: float32 for an integer output
    (exact after rounding: a uint16 value has 16 of float32's 24 bits), float64 for a float
    one. The blend weights are a separable product w(y) w(x) on a regular grid, so their
    sum is too and is kept as two 1-D arrays. Pixel rows that no later tile row touches are
    normalised, cast and written to `out` as soon as they are final. Call `add_row` once per
    tile row, in order.
    """

    EMIT_ROWS = 64  # pixel rows normalised at a time: bounds the temporaries

    def __init__(self, layout: Layout, out: np.ndarray | None = None, dtype=np.float32):
        self.layout = layout
        self.out = np.empty(layout.shape, dtype) if out is None else out
        if self.out.shape != layout.shape:
            raise ValueError(f"output has shape {self.out.shape}, layout wants {layout.shape}")
        c = max(layout.channels, 1)
        t, s = layout.tile, layout.stride
        acc = np.float32 if np.issubdtype(self.out.dtype, np.integer) else np.float64
        self._acc = np.zeros((t, layout.padded_width, c), acc)
        w = blend_window(t, layout.overlap)
        self._w2 = (w[:, None] * w[None, :])[..., None].astype(acc)
        self._wy = _weight_sums(w, layout.rows, s, layout.padded_height)
        self._wx = _weight_sums(w, layout.cols, s, layout.padded_width)[None, :, None]
        self._row = 0

    def add_row(self, tiles) -> None:
        """Add one row of `cols` tiles: an array, or an iterable of batches of tiles (so a
        row's model outputs never need to exist all at once)."""
        lay = self.layout
        t, s = lay.tile, lay.stride
        if self._row >= lay.rows:
            raise ValueError("all tile rows were already added")
        c = 0
        for batch in [tiles] if isinstance(tiles, np.ndarray) else tiles:
            batch = _as3d(batch) if lay.channels else np.asarray(batch)[..., None]
            if batch.ndim != 4 or batch.shape[1:3] != (t, t) or c + len(batch) > lay.cols:
                raise ValueError(f"expected {lay.cols} tiles of {t} x {t}, got a batch of "
                                 f"{batch.shape} after {c}")
            for tile in batch:
                x = c * s
                if lay.overlap:
                    self._acc[:, x : x + t] += tile * self._w2
                else:  # tiles butt together: a copy
                    self._acc[:, x : x + t] = tile
                c += 1
        if c != lay.cols:
            raise ValueError(f"expected {lay.cols} tiles of {t} x {t}, got {c}")
        last = self._row == lay.rows - 1
        self._emit(t if last else s)
        # Shift the band up by one stride (numpy copies safely between overlapping views).
        self._acc[: t - s] = self._acc[s:]
        self._acc[t - s :] = 0
        self._row += 1

    def _emit(self, n: int) -> None:
        """Normalise and write the first n pixel rows of the band, if inside the image."""
        lay = self.layout
        y0 = self._row * lay.stride
        integer = np.issubdtype(self.out.dtype, np.integer)
        for i in range(0, min(n, lay.height - y0), self.EMIT_ROWS):
            j = min(i + self.EMIT_ROWS, n, lay.height - y0)
            wy = self._wy[y0 + i : y0 + j, None, None]
            block = self._acc[i:j, : lay.width] / (wy * self._wx[:, : lay.width])
            block = block if lay.channels else block[..., 0]
            self.out[y0 + i : y0 + j] = round_into(block, self.out.dtype) if integer else block

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

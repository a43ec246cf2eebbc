"""The training stream's noise: a batch of crops noised at once, in float32.

`noise.add_noise` (scikit-image, float64, one image per call) stays the reference: eval,
the CLI and the tests use it. This module draws the same kinds, levels, clipping and
conditioning vector for many crops in one call, 2-4x faster per kind (bench_noise.py), which
is what a data pipeline that must outrun its trainers needs. Only the sampling differs:

- normals: Box-Muller from float32 uniforms, exact up to float32 rounding, |z| <= 5.77
  (numpy's float64 ziggurat is slower on this CPU than log, sqrt, sin and cos in float32);
- Poisson counts: exact where lambda < 10, by inversion; above, the Cornish-Fisher expansion
  round(lambda + sqrt(lambda - 0.139) z + (z^2 - 1) / 6), whose total variation distance
  from Poisson is <= 0.3 % at lambda >= 10 and whose mean, variance and skewness match
  it (numpy's own sampler costs ~40 ns a draw here);
- impulse kinds: one 32-bit draw per value; pepper is -1 instead of 0 in a crop that already
  holds negative values, and the result is clipped to [that, 1], as scikit-image does.

Where a C compiler is at hand, the same sampling runs fused and vectorized in `_kernels.c`
(`native.py` builds it on first use), 2-4x faster again; `backend="numpy"` keeps this
module's own path, which is also what runs where the kernels can't be built.

`tests/test_noisebatch.py` checks each kind's moments against `noise.add_noise`, on both.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from . import native
from .noise import (
    _CAMERA_FULL_WELL_ISO100,
    _CAMERA_READ_ELECTRONS,
    NoiseSpec,
    NoiseSpecError,
    SpecArrays,
    impulse_thresholds,
)

EXACT_POISSON_BELOW = 10.0
BLOCK_VALUES = 50_000
BACKENDS = ("auto", "native", "numpy")
IMPULSE_KINDS = ("salt", "pepper", "s&p")
_F = np.float32


def _bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random uint32 values, two from every 64-bit draw of the generator."""
    return rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n]


def uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """n float32 values uniform on [0, 1) with 24 random bits each (a third faster than
    `rng.random(dtype=np.float32)` here)."""
    bits = _bits(rng, n)
    bits >>= 8
    out = bits.astype(np.float32)
    out *= _F(2.0**-24)
    return out


def normals(rng: np.random.Generator, shape) -> np.ndarray:
    """Standard normal float32 values by Box-Muller."""
    n = int(np.prod(shape))
    h = (n + 1) // 2
    u = uniforms(rng, 2 * h)
    r = np.subtract(_F(1), u[:h])  # (0, 1]: log never sees 0
    np.log(r, out=r)
    r *= _F(-2)
    np.sqrt(r, out=r)
    theta = u[h:]
    theta *= _F(2 * np.pi)
    out = np.empty(2 * h, np.float32)
    np.cos(theta, out=out[:h])
    np.sin(theta, out=out[h:])
    out[:h] *= r
    out[h:] *= r
    return out[:n].reshape(shape)


def _poisson_small(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact Poisson counts for small lam (1-D float32) by inversion: count the CDF steps
    below one uniform each. Finished values are dropped every 4 steps, so the work is about
    sum(count + 4), not max(count) for every value."""
    out = np.empty(lam.size, np.uint8)
    idx = np.arange(lam.size, dtype=np.int32)
    u = uniforms(rng, lam.size)
    p = np.exp(-lam)
    cdf = p.copy()
    count = np.zeros(lam.size, np.uint8)
    for k in range(1, 65):  # P(count > 64) < 1e-30 for lam < 10
        count += (u > cdf).view(np.uint8)
        p *= lam
        p *= _F(1 / k)
        cdf += p
        if k % 4 == 0:
            running = u > cdf
            if k == 4:
                out[:] = count  # idx is still 0..n-1: a plain copy, no scatter
            else:
                out[idx] = count  # final for the finished ones; the others are overwritten
            keep = np.flatnonzero(running)
            if not keep.size:
                break
            idx, u, p, cdf, count, lam = (a[keep] for a in (idx, u, p, cdf, count, lam))
    else:
        out[idx] = count
    return out.astype(np.float32)


def poisson_counts(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson(lam) counts as float32, for lam >= 0 (see the module docstring).

    The approximation is computed for every value (arithmetic is cheaper here than picking
    values out by a mask), then the few values with small lam are replaced by exact draws.
    """
    flat = np.ascontiguousarray(lam, np.float32).ravel()
    z = normals(rng, flat.shape)
    k = np.maximum(flat - _F(0.139), _F(0))  # -0.139: the rounding and skew terms' variance
    np.sqrt(k, out=k)
    k *= z
    z *= z
    z -= _F(1)
    z *= _F(1 / 6)
    k += z
    k += flat
    k += _F(0.5)
    np.floor(k, out=k)
    np.maximum(k, 0, out=k)
    small = np.flatnonzero(flat < _F(EXACT_POISSON_BELOW))
    if small.size:
        k[small] = _poisson_small(flat[small], rng)
    return k.reshape(np.shape(lam))


def _to_linear(x: np.ndarray) -> np.ndarray:
    """`noise.srgb_to_linear` in float32, the power as exp(2.4 log(.)) (3x faster here)."""
    x = np.clip(x, 0, 1)
    curve = x + _F(0.055)
    curve *= _F(1 / 1.055)
    np.log(curve, out=curve)
    curve *= _F(2.4)
    np.exp(curve, out=curve)
    low = x <= _F(0.04045)
    np.copyto(curve, x * _F(1 / 12.92), where=low)
    return curve


def _to_srgb(x: np.ndarray) -> np.ndarray:
    """`noise.linear_to_srgb` in float32, in place."""
    np.maximum(x, _F(0), out=x)
    low = x <= _F(0.0031308)
    lin = x * _F(12.92)
    np.log(x, out=x, where=~low)
    x *= _F(1 / 2.4)
    np.exp(x, out=x)
    x *= _F(1.055)
    x -= _F(0.055)
    np.copyto(x, lin, where=low)
    return x


def _per_crop(levels: np.ndarray) -> np.ndarray:
    return np.asarray(levels, np.float32)[:, None, None, None]


def _clip(x: np.ndarray, clip: bool) -> None:
    if clip:
        np.clip(x, 0, 1, out=x)


def _impulse(x: np.ndarray, kind: str, amount: np.ndarray, rng: np.random.Generator) -> None:
    """Each value flips with probability `amount` (per crop): to 1 (salt), to the crop's low
    value (pepper), or to either with equal odds (s&p). One 32-bit draw per value, compared
    with amount * 2^32; then clipped to [low, 1], where scikit-image clips too."""
    thr = impulse_thresholds(amount)[:, None, None, None]
    bits = _bits(rng, x.size).reshape(x.shape)
    signed = bool(x.min() < 0)  # only after unclipped noise; else every crop's low is 0
    low = np.where(x.min(axis=(1, 2, 3)) < 0, _F(-1), _F(0))[:, None, None, None] if signed else _F(0)
    if kind in ("pepper", "s&p"):
        np.copyto(x, np.broadcast_to(low, x.shape), where=bits < thr)
    if kind in ("salt", "s&p"):
        np.copyto(x, _F(1), where=bits < (thr if kind == "salt" else thr >> 1))
    if signed or x.max() > 1:
        np.clip(x, low, _F(1), out=x)


def kernels_for(backend: str) -> native.Kernels | None:
    """The compiled kernels that `backend` asks for: None means the numpy path."""
    if backend not in BACKENDS:
        raise ValueError(f"noise backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "numpy":
        return None
    k = native.kernels()
    if k is None and backend == "native":
        raise RuntimeError("the compiled data kernels are unavailable here (see the warning above)")
    return k


def _apply(x: np.ndarray, kind: str, levels: np.ndarray, rng: np.random.Generator, clip: bool) -> None:
    """Noise the crops `x` (n, H, W, C) in place, crop i at levels[i], a few crops per numpy
    call, so that temporaries of ~50k values stay in cache, where whole-batch ones run 2x
    slower here."""
    step = max(1, BLOCK_VALUES // max(1, x[0].size))
    for i in range(0, len(x), step):
        _apply_block(x[i : i + step], kind, levels[i : i + step], rng, clip)


def _apply_block(x: np.ndarray, kind: str, levels: np.ndarray, rng: np.random.Generator,
                 clip: bool) -> None:
    if kind == "gaussian":
        z = normals(rng, x.shape)
        z *= _per_crop(levels) / _F(255)
        x += z
    elif kind == "speckle":
        z = normals(rng, x.shape)
        z *= np.sqrt(_per_crop(levels))
        z *= x
        x += z
    elif kind in IMPULSE_KINDS:
        _impulse(x, kind, levels, rng)
        return
    elif kind == "poisson":
        photons = _per_crop(levels)
        x[...] = poisson_counts(np.maximum(x, 0) * photons, rng) / photons
    elif kind == "camera":
        peak = _F(_CAMERA_FULL_WELL_ISO100 * 100.0) / _per_crop(levels)
        electrons = _to_linear(x)
        electrons *= peak
        electrons = poisson_counts(electrons, rng)
        electrons += normals(rng, x.shape) * _F(_CAMERA_READ_ELECTRONS)
        electrons /= peak
        x[...] = _to_srgb(electrons)
    else:
        raise NoiseSpecError(f"unknown noise kind {kind!r}")
    _clip(x, clip)


def _rows(idx: list[int]) -> slice | np.ndarray:
    """A slice where the rows are consecutive (a view, no copy), else an index array."""
    if idx[-1] - idx[0] == len(idx) - 1:
        return slice(idx[0], idx[-1] + 1)
    return np.asarray(idx)


def add_noise_batch(
    images: np.ndarray, specs: Sequence[NoiseSpec], rng: np.random.Generator,
    out: np.ndarray | None = None, backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Noise crop i of `images` (N, H, W, C float in [0, 1]) with concrete `specs[i]`.

    Returns (noisy float32 N x H x W x C, params float32 N x N_PARAMS), as `add_noise` would
    for each crop. The compiled kernels noise crop by crop, each by its own recipe. The
    numpy path noises the crops that share a kind at a step of their recipe together: sort
    the crops by their first kind to make those groups views instead of copies.
    `out`, if given, is a float32 array of the images' shape that receives the noisy crops.
    `backend`: "native" (the compiled kernels), "numpy", or "auto" (native where it builds).
    """
    kernels = kernels_for(backend)
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(specs):
        raise ValueError(f"add_noise_batch wants N x H x W x C images and N specs, "
                         f"got {images.shape} and {len(specs)}")
    table = SpecArrays.of(specs)  # refuses a `random` spec
    if out is None:
        out = np.empty(images.shape, np.float32)
    out[...] = images  # a copy: the clean crops stay clean
    if kernels is not None:
        kernels.noise(out, table, rng)  # crop by crop, each by its own recipe
        return out, table.params()
    for step in range(max((len(s.parts) for s in specs), default=0)):
        groups: dict[tuple[str, bool], list[int]] = defaultdict(list)
        for i, s in enumerate(specs):
            if step < len(s.parts):
                groups[(s.parts[step][0], s.clip)].append(i)
        for (kind, clip), idx in groups.items():
            levels = np.array([specs[i].parts[step][1] for i in idx], np.float32)
            rows = _rows(idx)
            if isinstance(rows, slice):
                _apply(out[rows], kind, levels, rng, clip)
            else:
                sub = out[rows]
                _apply(sub, kind, levels, rng, clip)
                out[rows] = sub
    return out, table.params()

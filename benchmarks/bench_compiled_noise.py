"""Would a compiled noise kernel reach the data targets? A numba prototype against the numpy
path the pipeline runs, in one run, on one core. numba is not a dependency of distgan:
`pip install numba` first (the script says so and stops without it).

The prototype fuses draw, noise and clip in one scalar loop per value: SplitMix64 bits, a
256-layer float32 ziggurat for normals (numpy's own design), and for Poisson the pipeline's
rule (inversion below lambda = 10, Cornish-Fisher above). One JSON line each:
  normals   ns per standard normal: the ziggurat, noisebatch's Box-Muller, numpy's float32
  gaussian:25, poisson:30   us per 64 px chunk: the fused kernel against noisebatch._apply
"""

from __future__ import annotations

import math
import sys

import numpy as np
from _common import emit, median_time

try:
    from numba import njit
except ImportError:
    sys.exit("bench_compiled_noise: needs numba (pip install numba); it is not a dependency")

from distgan.noisebatch import BLOCK_VALUES, _apply, normals

R = 3.6541528853610088  # the ziggurat's tail start and layer area, 256 layers
V = 0.00492867323399
SCALE = float(1 << 24)  # 24-bit magnitudes


def ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, w, f): accept if |magnitude| < k[i]; x = magnitude * w[i]; f[i] = pdf at the edge."""
    k, w, f = np.zeros(256, np.int64), np.zeros(256), np.zeros(256)
    dn = tn = R
    q = V / math.exp(-0.5 * dn * dn)
    k[0], w[0], w[255] = int(dn / q * SCALE), q / SCALE, dn / SCALE
    f[0], f[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(V / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1], tn = int(dn / tn * SCALE), dn
        f[i], w[i] = math.exp(-0.5 * dn * dn), dn / SCALE
    return k, w.astype(np.float32), f.astype(np.float32)


KI, WI, FI = ziggurat_tables()  # module globals: numba compiles them in as constants
GOLD, C1, C2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@njit(inline="always")
def _bits(st):
    st = st + GOLD
    z = (st ^ (st >> np.uint64(30))) * C1
    z = (z ^ (z >> np.uint64(27))) * C2
    return st, z ^ (z >> np.uint64(31))


@njit(inline="always")
def _uniform(st):
    st, z = _bits(st)
    return st, np.float32(z >> np.uint64(40)) * np.float32(1.0 / 16777216.0)


@njit(inline="always")
def _layer_draw(st):
    """One 64-bit draw: a layer (8 bits), a sign (1 bit), a 24-bit magnitude, its value."""
    st, r = _bits(st)
    idx, mag = np.intp(r & np.uint64(0xFF)), np.int64(r >> np.uint64(40))
    neg = (r >> np.uint64(8)) & np.uint64(1)
    x = np.float32(mag) * WI[idx]
    return st, idx, mag, (-x if neg else x), neg


@njit
def _normal_slow(st, idx, mag, x, neg):
    """The ziggurat's rare path (~1.5 %): the wedges and the tail. Scalars only, so the
    fast path's call site costs no array reference counting."""
    while True:
        if idx == 0:
            while True:
                st, a = _uniform(st)
                st, b = _uniform(st)
                xx = -np.float32(1 / R) * np.float32(math.log(1 - a))
                if -2 * np.float32(math.log(1 - b)) > xx * xx:
                    return st, (np.float32(-(R + xx)) if neg else np.float32(R + xx))
        else:
            st, a = _uniform(st)
            if (FI[idx - 1] - FI[idx]) * a + FI[idx] < np.float32(math.exp(-0.5 * x * x)):
                return st, x
        st, idx, mag, x, neg = _layer_draw(st)
        if mag < KI[idx]:
            return st, x


@njit(inline="always")
def _normal(st):
    st, idx, mag, x, neg = _layer_draw(st)
    if mag < KI[idx]:
        return st, x
    return _normal_slow(st, idx, mag, x, neg)


@njit
def fill_normals(out, seed):
    st = np.uint64(seed)
    for i in range(out.size):
        st, out[i] = _normal(st)


@njit
def gaussian_kernel(x, sigma, seed):
    st, f, s = np.uint64(seed), x.reshape(-1), np.float32(sigma / 255.0)
    for i in range(f.size):
        st, z = _normal(st)
        f[i] = min(max(f[i] + s * z, np.float32(0)), np.float32(1))


@njit
def poisson_kernel(x, peak, seed):
    st, f, pk = np.uint64(seed), x.reshape(-1), np.float32(peak)
    for i in range(f.size):
        lam = max(f[i], np.float32(0)) * pk
        if lam < 10:
            st, u = _uniform(st)
            p = np.float32(math.exp(-lam))
            c, k = p, 0
            while u > c and k < 64:
                k += 1
                p *= lam / np.float32(k)
                c += p
            n = np.float32(k)
        else:
            st, z = _normal(st)
            sd = np.float32(math.sqrt(lam - np.float32(0.139)))
            n = max(np.float32(math.floor(lam + sd * z + (z * z - 1) / 6 + np.float32(0.5))), np.float32(0))
        f[i] = min(n / pk, np.float32(1))


def main() -> None:
    n_values = 4_000_000
    out = np.empty(n_values, np.float32)
    fill_normals(out[:16], 1)  # compile
    zig = median_time(lambda: fill_normals(out, 2), repeats=3)
    assert abs(out.std() - 1) < 0.003 and abs((np.abs(out) > 3).mean() - 0.0027) < 0.0003
    rng = np.random.default_rng(0)
    blocks = range(n_values // BLOCK_VALUES)  # numpy draws in cache-sized blocks, as noisebatch
    bm = median_time(lambda: [normals(rng, (BLOCK_VALUES,)) for _ in blocks], repeats=3)
    f32 = median_time(lambda: [rng.standard_normal(BLOCK_VALUES, dtype=np.float32) for _ in blocks],
                      repeats=3)
    n_np = len(blocks) * BLOCK_VALUES
    emit(bench="compiled_noise", what="normals", ns_per_value_ziggurat_numba=round(zig / n_values * 1e9, 2),
         ns_per_value_box_muller_numpy=round(bm / n_np * 1e9, 2),
         ns_per_value_numpy_standard_normal_f32=round(f32 / n_np * 1e9, 2))
    clean = rng.integers(0, 256, (1024, 64, 64, 3)).astype(np.float32) / 255
    for kind, level, kernel in (("gaussian", 25.0, gaussian_kernel), ("poisson", 30.0, poisson_kernel)):
        kernel(clean[:2].copy(), level, 1)  # compile
        t_numba = median_time(lambda k=kernel, lv=level: k(clean.copy(), lv, 3), repeats=3)
        t_numpy = median_time(lambda kd=kind, lv=level: _apply(
            clean.copy(), kd, np.full(len(clean), lv, np.float32), rng, True), repeats=3)
        copy = median_time(lambda: clean.copy(), repeats=3)  # both time a fresh copy: take it off
        emit(bench="compiled_noise", kind=f"{kind}:{level:g}",
             us_per_chunk_numba=round((t_numba - copy) / len(clean) * 1e6, 1),
             us_per_chunk_numpy=round((t_numpy - copy) / len(clean) * 1e6, 1),
             ratio=round((t_numpy - copy) / (t_numba - copy), 2))


if __name__ == "__main__":
    main()

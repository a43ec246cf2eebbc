"""The compiled kernels of `_kernels.c`, the data stream's crop and noise steps: built on
first use, cached, optional.

The first process on a machine that asks for them compiles `_kernels.c` with the C compiler
(`$CC`, else `cc`) for the host CPU (`-march=native`: its vector units are the point) into a
cache folder (`$DISTGAN_CACHE`, else `~/.cache/distgan`; the temp folder if that can't be
written). The file name carries a hash of the source, the flags, the compiler and the CPU's
model and flags, so nodes with different CPUs that share a home folder never load each
other's build, and an edited source is rebuilt.
Builds land by atomic rename, so Ray workers starting together on one node are safe.

Where there is no compiler, the build fails, or `DISTGAN_NATIVE=0`, `kernels()` returns
None after one warning, and `data` and `noisebatch` keep their numpy paths: the same crops,
kinds, levels and statistics, 2-4x slower (bench_noise.py, bench_data.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from .config import NOISE_KINDS
from .noise import _CAMERA_FULL_WELL_ISO100, _CAMERA_READ_ELECTRONS, SpecArrays, impulse_thresholds

log = logging.getLogger("distgan.native")

SOURCE = Path(__file__).with_name("_kernels.c")
# -mprefer-vector-width=512: where the CPU has AVX-512, the kernels run 25-30 % faster with
# it than with gcc's default 256-bit vectors; elsewhere it changes nothing.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-fno-trapping-math",
         "-fPIC", "-shared")
# _kernels.c knows the kinds by these positions
assert NOISE_KINDS == ("gaussian", "poisson", "speckle", "salt", "pepper", "s&p", "camera")


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def _cpu_id() -> str:
    """The CPU's model and feature flags (Linux), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features"))]
        return "\n".join(sorted(set(keep)))
    except OSError:
        return platform.processor() + platform.machine()


def _cache_dir() -> Path:
    root = os.environ.get("DISTGAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "distgan")
    return Path(root)


def library_path(folder: Path | None = None) -> Path:
    """Where the build for this source, compiler and CPU lives (or will), in `folder` (by
    default the cache folder)."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), _compiler().encode(), _cpu_id().encode()):
        key.update(part)
    return (folder or _cache_dir()) / f"kernels-{platform.machine()}-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compile `_kernels.c` to `path`, atomically. Raises RuntimeError with the compiler's words."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    cmd = [_compiler(), *FLAGS, str(SOURCE), "-o", tmp, "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
        os.replace(tmp, path)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"{' '.join(cmd)} failed: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Kernels:
    """The loaded library. Each call draws one 64-bit key from `rng`, so a seeded Generator
    gives the same noise on the same machine."""

    def __init__(self, lib: ctypes.CDLL, path: Path | None = None):
        self.path = path
        p, i64, u64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_float
        lib.dg_normals.argtypes = [p, i64, u64]
        lib.dg_poisson_counts.argtypes = [p, p, i64, u64]
        lib.dg_noise.argtypes = [p, i64, i64, i64, p, p, p, p, f32, f32, u64]
        lib.dg_crops.argtypes = [p, i64, i64, i64, p, p, p, p]
        lib.dg_noisy_crops.argtypes = [p, i64, i64, i64, p, p, p, i64, p, p, p, p, f32, f32, u64, p, p]
        lib.dg_noisy_crops.restype = ctypes.c_int
        self.lib = lib

    @staticmethod
    def _key(rng: np.random.Generator) -> int:
        return int(rng.bit_generator.random_raw())

    @staticmethod
    def _recipes(specs: SpecArrays, n: int) -> tuple:
        """The kernels' view of n crops' specs: kinds, float32 levels, impulse thresholds,
        clip flags, as C-contiguous arrays (kept alive by the caller while the call runs)."""
        if len(specs) != n:
            raise ValueError(f"{n} crops want {n} specs, got {len(specs)}")
        return (np.ascontiguousarray(specs.kinds, np.int32), np.ascontiguousarray(specs.levels, np.float32),
                np.ascontiguousarray(impulse_thresholds(specs.levels)),
                np.ascontiguousarray(specs.clip, np.uint8))

    @staticmethod
    def _float_out(x: np.ndarray, shape: tuple | None = None) -> None:
        if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
            raise ValueError("the native kernels write a writeable C-contiguous float32 array")
        if shape is not None and x.shape != shape:
            raise ValueError(f"crops go to a C-contiguous float32 array of shape {shape}, not {x.shape}")

    @staticmethod
    def _walks(img: np.ndarray, chunk: int, start, di, dj) -> tuple:
        """The crops' walks as int64 arrays, refused if any leaves the image."""
        start, di, dj = (np.ascontiguousarray(a, np.int64) for a in (start, di, dj))
        # the walk is affine, so its extremes are its corners: with them inside, all is
        last, ch = chunk - 1, img.shape[2]
        corners = start[:, None] + np.outer(di, [0, 0, last, last]) + np.outer(dj, [0, last, 0, last])
        if len(start) and (corners.min() < 0 or corners.max() + ch > img.size):
            raise ValueError(f"a crop walks out of the {img.shape} image")
        return start, di, dj

    def crops(self, img: np.ndarray, chunk: int, start: np.ndarray, di: np.ndarray, dj: np.ndarray,
              out: np.ndarray) -> None:
        """Crops of uint8 `img` (h, w, ch) as float32 / 255 into `out` (k, chunk, chunk, ch):
        crop c's pixel (i, j) starts at byte start[c] + i di[c] + j dj[c] of the image."""
        img = np.ascontiguousarray(img, np.uint8)
        self._float_out(out, (len(start), chunk, chunk, img.shape[2]))
        start, di, dj = self._walks(img, chunk, start, di, dj)
        self.lib.dg_crops(img.ctypes.data, img.shape[2], chunk, len(start), start.ctypes.data, di.ctypes.data,
                          dj.ctypes.data, out.ctypes.data)

    def noise(self, x: np.ndarray, specs: SpecArrays, rng: np.random.Generator) -> None:
        """Noise crops x (n, ...) in place, crop i by specs' row i: its parts in order."""
        self._float_out(x)
        kinds, levels, thr, clip = self._recipes(specs, len(x))
        size = x[0].size if len(x) else 0
        self.lib.dg_noise(x.ctypes.data, len(x), size, kinds.shape[1], kinds.ctypes.data, levels.ctypes.data,
                          thr.ctypes.data, clip.ctypes.data, _CAMERA_FULL_WELL_ISO100, _CAMERA_READ_ELECTRONS,
                          self._key(rng))

    def noisy_crops(self, img: np.ndarray, chunk: int, start, di, dj, specs: SpecArrays,
                    rng: np.random.Generator, clean: np.ndarray, noisy: np.ndarray) -> None:
        """`crops` into `clean`, and each crop noised by its row of `specs` into `noisy`, one
        crop at a time from cut to noise (so it stays in cache): the values `crops` then
        `noise` give from the same generator state."""
        img = np.ascontiguousarray(img, np.uint8)
        shape = (len(start), chunk, chunk, img.shape[2])
        self._float_out(clean, shape)
        self._float_out(noisy, shape)
        start, di, dj = self._walks(img, chunk, start, di, dj)
        kinds, levels, thr, clip = self._recipes(specs, len(start))
        if self.lib.dg_noisy_crops(img.ctypes.data, img.shape[2], chunk, len(start), start.ctypes.data,
                                   di.ctypes.data, dj.ctypes.data, kinds.shape[1], kinds.ctypes.data,
                                   levels.ctypes.data, thr.ctypes.data, clip.ctypes.data,
                                   _CAMERA_FULL_WELL_ISO100, _CAMERA_READ_ELECTRONS, self._key(rng),
                                   clean.ctypes.data, noisy.ctypes.data):
            raise MemoryError("no memory for one crop's buffer")

    def normals(self, rng: np.random.Generator, shape) -> np.ndarray:
        out = np.empty(shape, np.float32)
        self.lib.dg_normals(out.ctypes.data, out.size, self._key(rng))
        return out

    def poisson_counts(self, lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lam = np.ascontiguousarray(lam, np.float32)
        out = np.empty(lam.shape, np.float32)
        self.lib.dg_poisson_counts(lam.ctypes.data, out.ctypes.data, lam.size, self._key(rng))
        return out


@cache
def kernels() -> Kernels | None:
    """The compiled kernels, built if need be; None (after one warning) where they can't be."""
    if os.environ.get("DISTGAN_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        # the cache folder; if it can't be written (a read-only home), the temp folder
        for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"distgan-{os.getuid()}"):
            path = library_path(folder)
            try:
                if not path.exists():
                    build(path)
                return Kernels(ctypes.CDLL(str(path)), path)
            except OSError as e:  # the folder (the compiler's failures are RuntimeError)
                problem = f"cannot build in {folder}: {e}"
                log.info(problem)
        raise OSError(problem)
    except (RuntimeError, OSError) as e:
        log.warning("compiled data kernels unavailable, using numpy (2-4x slower): %s", e)
        return None


def main() -> int:
    """`python -m distgan.native`: build the kernels now (a cluster node's setup step, so
    that no Ray worker waits for the compiler) and say where they are, or why not."""
    logging.basicConfig(format="%(message)s")
    k = kernels()
    if k is None:
        print("distgan: no compiled data kernels here; the data stream uses numpy")
        return 1
    print(f"distgan: compiled data kernels at {k.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

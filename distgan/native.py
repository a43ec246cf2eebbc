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

from .noise import _CAMERA_FULL_WELL_ISO100, _CAMERA_READ_ELECTRONS

log = logging.getLogger("distgan.native")

SOURCE = Path(__file__).with_name("_kernels.c")
# -mprefer-vector-width=512: where the CPU has AVX-512, the kernels run 25-30 % faster with
# it than with gcc's default 256-bit vectors; elsewhere it changes nothing.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-fno-trapping-math",
         "-fPIC", "-shared")
_IMPULSE_MODES = {"salt": 0, "pepper": 1, "s&p": 2}


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
        p, i64, u64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_int, ctypes.c_float
        lib.dg_normals.argtypes = [p, i64, u64]
        lib.dg_poisson_counts.argtypes = [p, p, i64, u64]
        for name in ("dg_gaussian", "dg_speckle", "dg_poisson"):
            getattr(lib, name).argtypes = [p, i64, i64, p, u64, i32]
        lib.dg_camera.argtypes = [p, i64, i64, p, f32, f32, u64, i32]
        lib.dg_impulse.argtypes = [p, i64, i64, p, i32, u64]
        lib.dg_crops.argtypes = [p, i64, i64, i64, p, p, p, p]
        self.lib = lib

    @staticmethod
    def _key(rng: np.random.Generator) -> int:
        return int(rng.bit_generator.random_raw())

    @staticmethod
    def _crops(x: np.ndarray, levels, dtype=np.float32) -> tuple[int, int, np.ndarray]:
        if x.dtype != np.float32 or not x.flags.c_contiguous or not x.flags.writeable:
            raise ValueError("the native kernels noise a writeable C-contiguous float32 array in place")
        lv = np.ascontiguousarray(levels, dtype)
        if lv.shape != (len(x),):
            raise ValueError(f"{len(x)} crops want {len(x)} levels, got shape {lv.shape}")
        return len(x), x[0].size if len(x) else 0, lv

    def crops(self, img: np.ndarray, chunk: int, start: np.ndarray, di: np.ndarray, dj: np.ndarray,
              out: np.ndarray) -> None:
        """Crops of uint8 `img` (h, w, ch) as float32 / 255 into `out` (k, chunk, chunk, ch):
        crop c's pixel (i, j) starts at byte start[c] + i di[c] + j dj[c] of the image."""
        img = np.ascontiguousarray(img, np.uint8)
        k, ch = len(start), img.shape[2]
        if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != (k, chunk, chunk, ch):
            raise ValueError(f"crops go to a C-contiguous float32 array of shape {(k, chunk, chunk, ch)}")
        start, di, dj = (np.ascontiguousarray(a, np.int64) for a in (start, di, dj))
        # the walk is affine, so its extremes are its corners: with them inside, all is
        last = chunk - 1
        corners = start[:, None] + np.outer(di, [0, 0, last, last]) + np.outer(dj, [0, last, 0, last])
        if k and (corners.min() < 0 or corners.max() + ch > img.size):
            raise ValueError(f"a crop walks out of the {img.shape} image")
        self.lib.dg_crops(img.ctypes.data, ch, chunk, k, start.ctypes.data, di.ctypes.data, dj.ctypes.data,
                          out.ctypes.data)

    def normals(self, rng: np.random.Generator, shape) -> np.ndarray:
        out = np.empty(shape, np.float32)
        self.lib.dg_normals(out.ctypes.data, out.size, self._key(rng))
        return out

    def poisson_counts(self, lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        lam = np.ascontiguousarray(lam, np.float32)
        out = np.empty(lam.shape, np.float32)
        self.lib.dg_poisson_counts(lam.ctypes.data, out.ctypes.data, lam.size, self._key(rng))
        return out

    def apply(self, x: np.ndarray, kind: str, levels, rng: np.random.Generator, clip: bool) -> None:
        """Noise crops x (n, ...) in place, crop i at levels[i]: noisebatch's kinds. For the
        impulse kinds, levels are `noisebatch.impulse_thresholds` (uint32)."""
        if kind in _IMPULSE_MODES:
            n, size, thr = self._crops(x, levels, np.uint32)
            self.lib.dg_impulse(x.ctypes.data, n, size, thr.ctypes.data, _IMPULSE_MODES[kind], self._key(rng))
            return
        n, size, lv = self._crops(x, levels)
        if kind == "camera":
            self.lib.dg_camera(x.ctypes.data, n, size, lv.ctypes.data, _CAMERA_FULL_WELL_ISO100,
                               _CAMERA_READ_ELECTRONS, self._key(rng), int(clip))
        elif kind in ("gaussian", "speckle", "poisson"):
            getattr(self.lib, f"dg_{kind}")(x.ctypes.data, n, size, lv.ctypes.data, self._key(rng), int(clip))
        else:
            raise ValueError(f"no native kernel for noise kind {kind!r}")


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

"""Building, caching and falling back from the compiled data kernels (native.py).

The kernels' statistics are checked against the reference in test_noisebatch.py; here, the
build itself: with this machine's real compiler, a missing one and a broken one.
"""

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from distgan import native
from distgan.noise import SpecArrays, parse_spec

# A child process that noises 4 crops through the public API and says which path it took.
_CHILD = """
import numpy as np
from distgan import native
from distgan.noise import parse_spec
from distgan.noisebatch import add_noise_batch
x = np.full((4, 16, 16, 3), 0.5, np.float32)
out, _ = add_noise_batch(x, [parse_spec("gaussian:25")] * 4, np.random.default_rng(0))
assert 0.05 < out.std() < 0.15
print("native" if native.kernels() is not None else "numpy")
try:
    add_noise_batch(x, [parse_spec("gaussian:25")] * 4, np.random.default_rng(0), backend="native")
except RuntimeError as e:
    print("refused:", e)
"""


def _child(tmp_path, **env):
    full = {**os.environ, "DISTGAN_CACHE": str(tmp_path / "cache"), **env}
    done = subprocess.run([sys.executable, "-c", _CHILD], env=full, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_first_use_builds_into_the_cache_and_later_processes_load_it(tmp_path):
    out, err = _child(tmp_path)
    assert out.splitlines() == ["native"] and "unavailable" not in err
    built = list((tmp_path / "cache").glob("kernels-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    out, _ = _child(tmp_path)
    assert out.splitlines() == ["native"]
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("kernels-*.so")] == [stamp]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.suffix != ".so" or p not in built]


def test_an_unwritable_cache_folder_falls_back_to_the_temp_folder(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "tmp").mkdir()
    out, err = _child(tmp_path, DISTGAN_CACHE=str(tmp_path / "a-file" / "cache"),
                      TMPDIR=str(tmp_path / "tmp"))
    assert out.splitlines() == ["native"] and "unavailable" not in err
    assert len(list((tmp_path / "tmp").glob(f"distgan-{os.getuid()}/kernels-*.so"))) == 1


def test_the_build_is_keyed_by_compiler_and_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTGAN_CACHE", str(tmp_path))
    a = native.library_path()
    assert a.parent == tmp_path and a.name.startswith("kernels-")
    monkeypatch.setenv("CC", "another-cc")  # only hashed here, never run
    assert native.library_path() != a


def test_a_build_is_loadable_and_draws_standard_normals(tmp_path):
    path = tmp_path / "k.so"
    native.build(path)
    k = native.Kernels(ctypes.CDLL(str(path)))
    z = k.normals(np.random.default_rng(0), (100_000,))
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    # the same Generator state, the same numbers; a different one, different numbers
    assert np.array_equal(z, k.normals(np.random.default_rng(0), (100_000,)))
    assert not np.array_equal(z, k.normals(np.random.default_rng(1), (100_000,)))


def test_without_a_compiler_the_numpy_path_runs_after_one_warning(tmp_path):
    out, err = _child(tmp_path, CC=str(tmp_path / "no-such-cc"))
    lines = out.splitlines()
    assert lines[0] == "numpy"
    assert lines[1].startswith("refused: the compiled data kernels are unavailable")
    assert err.count("compiled data kernels unavailable, using numpy") == 1
    assert "no-such-cc" in err and "Traceback" not in err
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-built left behind


def test_a_failing_compiler_is_reported_with_its_words(tmp_path, monkeypatch):
    cc = tmp_path / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: this compiler is broken' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    with pytest.raises(RuntimeError, match="this compiler is broken"):
        native.build(tmp_path / "cache" / "k.so")
    out, err = _child(tmp_path, CC=str(cc))
    assert out.splitlines()[0] == "numpy" and "this compiler is broken" in err
    assert not list((tmp_path / "cache").iterdir())


def test_distgan_native_0_turns_the_kernels_off_quietly(tmp_path):
    out, err = _child(tmp_path, DISTGAN_NATIVE="0")
    assert out.splitlines()[0] == "numpy" and "unavailable, using numpy" not in err
    assert not (tmp_path / "cache").exists()


def test_kernels_refuse_arrays_they_cannot_write_in_place():
    k = native.kernels()
    x = np.zeros((2, 8, 8, 3), np.float32)
    two = SpecArrays.of([parse_spec("gaussian:5")] * 2)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        k.noise(x[:, ::2], two, np.random.default_rng(0))
    with pytest.raises(ValueError, match="C-contiguous float32"):
        k.noise(x.astype(np.float64), two, np.random.default_rng(0))
    with pytest.raises(ValueError, match="2 crops want 2 specs"):
        k.noise(x, two.take([0]), np.random.default_rng(0))
    img = np.zeros((20, 20, 3), np.uint8)
    walk = (np.array([0, 3]), np.array([60, 60]), np.array([3, 3]))
    with pytest.raises(ValueError, match="shape"):
        k.noisy_crops(img, 8, *walk, two, np.random.default_rng(0), x, x[:1])


def test_the_fused_transform_is_crops_then_noise():
    """`noisy_crops` (cut and noise crop by crop) gives exactly what `crops` then
    `noise` give from the same generator state: every kind, mixes, clipped or not."""
    k = native.kernels()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    specs = SpecArrays.of([parse_spec(s) for s in (
        "gaussian:25", "poisson:30", "speckle:0.03", "salt:0.05", "pepper:0.05", "s&p:0.1", "camera:1600",
        "mix:gaussian:30+pepper:0.1:unclipped", "mix:poisson:20+speckle:0.01+salt:0.02", "gaussian:0")])
    n = len(specs)
    walk = (np.arange(n) * 3 * 7, np.full(n, 150), np.full(n, 3))  # upright 16 px windows
    clean, noisy = (np.empty((n, 16, 16, 3), np.float32) for _ in range(2))
    k.noisy_crops(img, 16, *walk, specs, np.random.default_rng(9), clean, noisy)
    want = np.empty_like(clean)
    k.crops(img, 16, *walk, want)
    assert np.array_equal(clean, want)
    k.noise(want, specs, np.random.default_rng(9))
    assert np.array_equal(noisy, want)
    assert np.array_equal(noisy[-1], clean[-1]) and not np.array_equal(noisy[0], clean[0])


@pytest.mark.parametrize("offset", [0, 1, 3, 5])
def test_the_fused_transform_writes_exactly_its_rows_at_any_alignment(offset):
    """The rows go out with streaming stores from 64-byte boundaries on: into a view that
    starts `offset` floats past one, with 7 px crops (147 floats, not a whole number of
    vectors), the values are those of a call into fresh arrays, and not one float either
    side is touched."""
    k = native.kernels()
    img = np.random.default_rng(1).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    specs = SpecArrays.of([parse_spec(s) for s in ("gaussian:25", "camera:3200", "s&p:0.1")])
    walk = (np.array([0, 31 * 3, 200 * 3]), np.full(3, 90), np.full(3, 3))
    want_clean, want_noisy = (np.empty((3, 7, 7, 3), np.float32) for _ in range(2))
    k.noisy_crops(img, 7, *walk, specs, np.random.default_rng(4), want_clean, want_noisy)
    size = want_clean.size
    for want in (want_clean, want_noisy):
        assert np.isfinite(want).all()
    flat = [np.full(size + 32, -7.0, np.float32) for _ in range(2)]
    base = [(-(f.ctypes.data // 4)) % 16 for f in flat]  # floats to the first 64-byte boundary
    views = [f[b + offset : b + offset + size].reshape(3, 7, 7, 3) for f, b in zip(flat, base)]
    k.noisy_crops(img, 7, *walk, specs, np.random.default_rng(4), *views)
    assert np.array_equal(views[0], want_clean) and np.array_equal(views[1], want_noisy)
    for f, b in zip(flat, base):
        outside = np.concatenate([f[: b + offset], f[b + offset + size :]])
        assert (outside == -7.0).all()


def test_the_setup_command_builds_and_says_where_or_why_not(tmp_path):
    env = {**os.environ, "DISTGAN_CACHE": str(tmp_path / "cache")}
    run = lambda **e: subprocess.run([sys.executable, "-m", "distgan.native"], env={**env, **e},
                                     capture_output=True, text=True, timeout=300)
    done = run()
    built = list((tmp_path / "cache").glob("kernels-*.so"))
    assert done.returncode == 0 and len(built) == 1 and str(built[0]) in done.stdout
    done = run(DISTGAN_CACHE=str(tmp_path / "other"), CC=str(tmp_path / "no-such-cc"))
    assert done.returncode == 1 and "uses numpy" in done.stdout and "no-such-cc" in done.stderr
    assert "Traceback" not in done.stderr

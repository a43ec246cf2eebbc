import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import distgan
from distgan.config import load_config
from distgan.denoise import (
    SYMMETRIES, denoise_array, dihedral, estimate_sigma, load_denoiser, undo_dihedral,
)
from distgan.errors import UserError
from distgan.imagefile import read_native

from .conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory) -> str:
    """A residual generator at initialisation is exactly the identity (zero noise head)."""
    from distgan.models import build_generator

    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    path = tmp_path_factory.mktemp("m") / "identity.keras"
    build_generator(cfg.model, cfg.data.chunk).save(path)
    return str(path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> str:
    from distgan.train import train_local

    run = tmp_path_factory.mktemp("run")
    cfg = load_config(ROOT / "configs" / "smoke.yaml",
                      [f"run.dir={run}", "run.tensorboard=false", "train.pretrain_g_steps=60",
                       "train.lr_g=0.002", "train.eval_every=1000"])
    train_local(cfg)
    return str(run)


SIZES = [(1, 1), (7, 9), (500, 333), (2000, 23)]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_identity_model_gives_the_input_back_exactly(identity_model, hw, dtype, precision):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        x = rng.random((*hw, 3)).astype(np.float32)
    else:
        x = rng.integers(0, np.iinfo(dtype).max + 1, (*hw, 3)).astype(dtype)
    den = load_denoiser(identity_model, precision)
    for tile, overlap in [(None, None), (32, 8), (64, 0)]:
        y = denoise_array(den, x, tile=tile, overlap=overlap)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert np.array_equal(y, x), (hw, tile, overlap)


def test_bfloat16_computes_in_bfloat16_keeps_a_float32_head_and_agrees():
    from distgan.denoise import _all_layers

    f32 = load_denoiser(None, "float32")  # the shipped model
    b16 = load_denoiser(None, "bfloat16")
    policies = {la.name: la.dtype_policy.name for la in _all_layers(b16.generator)}
    assert policies["head"] == policies["dec0_b0_conv1"] == "mixed_bfloat16"
    assert policies["noise_out"] == policies["noise_shuffle"] == policies["denoised"] == "float32"
    assert b16.generator.get_layer("decoder").get_layer("noise_out").variables[0].dtype == "float32"
    yy, xx = np.mgrid[0:96, 0:128] / 96
    clean = np.stack([0.5 + 0.3 * np.sin(5 * xx + c) * np.cos(3 * yy) for c in range(3)], -1)
    noisy = np.clip(clean + np.random.default_rng(5).normal(0, 0.1, clean.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    a = denoise_array(f32, noisy, noise_level=25.5)
    b = denoise_array(b16, noisy, noise_level=25.5)
    assert a.dtype == b.dtype == np.float32
    mse = lambda y: float(np.mean((y - clean) ** 2))
    assert mse(a) < 0.5 * mse(noisy)  # the model does denoise
    assert abs(10 * np.log10(mse(a) / mse(b))) < 0.05  # and bfloat16 costs < 0.05 dB
    with pytest.raises(UserError, match="precision"):
        load_denoiser(None, "fp8")


def test_strength(trained_run):
    den = load_denoiser(trained_run)
    x = (np.random.default_rng(1).random((40, 50, 3)) * 255).astype(np.uint8)
    assert np.array_equal(denoise_array(den, x, strength=0.0), x)
    full = denoise_array(den, x.astype(np.float32) / 255, strength=1.0)
    half = denoise_array(den, x.astype(np.float32) / 255, strength=0.5)
    assert not np.allclose(full, x / 255, atol=1e-3)
    assert np.allclose(half, 0.5 * full + 0.5 * x / 255, atol=1e-5)
    with pytest.raises(UserError, match="strength"):
        denoise_array(den, x, strength=1.5)


def test_the_8_symmetries_are_distinct_and_undone():
    x = np.arange(2 * 4 * 5 * 3).reshape(2, 4, 5, 3)
    views = [dihedral(x, s) for s in SYMMETRIES]
    assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
    assert all(np.array_equal(undo_dihedral(v, s), x) for v, s in zip(views, SYMMETRIES))


def test_self_ensemble_is_the_mean_over_symmetries(trained_run):
    den = load_denoiser(trained_run)
    x = np.random.default_rng(5).random((32, 48, 3)).astype(np.float32)  # whole, no padding
    one = denoise_array(den, x, noise_level=20)
    eight = denoise_array(den, x, noise_level=20, ensemble=8)
    runs = [undo_dihedral(denoise_array(den, np.ascontiguousarray(dihedral(x[None], s)[0]),
                                        noise_level=20)[None], s)[0] for s in SYMMETRIES]
    # The ensemble averages the raw outputs, then clips: compare where no run was clipped.
    inside = np.all((np.array(runs) > 0) & (np.array(runs) < 1), axis=0)
    assert inside.mean() > 0.5
    assert np.allclose(eight[inside], np.mean(runs, axis=0)[inside], atol=1e-5)
    assert np.abs(eight - one).mean() > 1e-4  # the model is not symmetric by itself
    # tiled, in the image's dtype, at a strength
    u8 = (x * 255).astype(np.uint8)
    y = denoise_array(den, u8, 0.5, 20, tile=32, overlap=8, ensemble=2)
    assert y.dtype == np.uint8 and y.shape == u8.shape
    assert not np.array_equal(y, denoise_array(den, u8, 0.5, 20, tile=32, overlap=8))
    with pytest.raises(UserError, match="ensemble must be one of 1, 2, 4, 8"):
        denoise_array(den, x, ensemble=3)


def test_python_api_handles_grey_and_keeps_dtype(trained_run):
    g = (np.random.default_rng(2).random((30, 41)) * 65535).astype(np.uint16)
    y = distgan.denoise(g, model=trained_run, noise_level=10)
    assert y.shape == g.shape and y.dtype == np.uint16
    y8 = distgan.denoise(g, model=trained_run, noise_level=10, ensemble=8)
    assert y8.shape == g.shape and y8.dtype == np.uint16 and not np.array_equal(y8, y)


def test_border_error_is_no_larger_than_inside(trained_run):
    den = load_denoiser(trained_run)
    yy, xx = np.mgrid[0:256, 0:256] / 256
    clean = np.stack([0.5 + 0.3 * np.sin(6 * xx + c) * np.cos(4 * yy) for c in range(3)], -1)
    noisy = np.clip(clean + np.random.default_rng(3).normal(0, 0.1, clean.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    tiled = denoise_array(den, noisy, noise_level=25.5, tile=64, overlap=16)
    whole = denoise_array(den, noisy, noise_level=25.5, tile=256, overlap=0)
    err = np.abs(tiled - clean).mean(axis=2)
    border = np.zeros(err.shape, bool)
    for b in range(48, 256, 48):  # tile starts at the stride 48
        border[:, b - 2 : b + 2] = border[b - 2 : b + 2, :] = True
    assert err[border].mean() <= 1.05 * err[~border].mean()
    # and tiling barely changes the result of the fully convolutional model
    assert np.abs(tiled - whole).mean() < 0.25 * np.abs(whole - clean).mean()


def test_estimated_sigma_is_close():
    x = np.full((256, 256, 3), 0.5, np.float32)
    noisy = x + np.random.default_rng(4).normal(0, 20 / 255, x.shape).astype(np.float32)
    assert abs(estimate_sigma(noisy) - 20) < 2


def test_cli_keeps_bit_depth_alpha_grey_and_skips_bad_files(trained_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(5)
    from distgan.imagefile import write_native

    write_native(src / "deep.png", rng.integers(0, 65535, (40, 30, 3)).astype(np.uint16))
    rgba = rng.integers(0, 255, (33, 35, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(src / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (20, 64), dtype=np.uint8)).save(src / "grey.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(src / "photo.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    r = run_cli("denoise", str(src), "-o", str(tmp_path / "out"), "--model", trained_run)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "broken.png" in r.stderr and r.stderr.count("distgan: failed:") == 1
    assert len([json.loads(x) for x in r.stdout.strip().splitlines()]) == 4
    deep, info = read_native(tmp_path / "out" / "deep.png")
    assert deep.dtype == np.uint16 and info.bits == 16
    _, info = read_native(tmp_path / "out" / "alpha.png")
    assert np.array_equal(info.alpha, rgba[..., 3])
    assert Image.open(tmp_path / "out" / "grey.png").mode == "L"
    assert (tmp_path / "out" / "photo.jpg").exists()


def test_cli_never_overwrites_the_input_unless_asked(trained_run, tmp_path):
    p = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(p)
    before = p.read_bytes()
    r = run_cli("denoise", str(p), "-o", str(p), "--model", trained_run)
    assert r.returncode == 2 and "overwrite" in r.stderr and p.read_bytes() == before
    r = run_cli("denoise", str(p), "-o", str(tmp_path), "--model", trained_run)
    assert r.returncode == 2 and p.read_bytes() == before
    r = run_cli("denoise", str(p), "-o", str(p), "--model", trained_run, "--overwrite")
    assert r.returncode == 0


def test_missing_or_incompatible_model_is_one_line(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    r = run_cli("denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                "--model", str(tmp_path / "nope"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    r = run_cli("denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"),
                "--model", str(tmp_path / "bad.keras"))
    assert r.returncode == 2 and "cannot load" in r.stderr and "Traceback" not in r.stderr


def test_export_keras_and_savedmodel(trained_run, tmp_path):
    r = run_cli("export", trained_run, "-o", str(tmp_path / "g.keras"))
    assert r.returncode == 0, r.stderr[-2000:]
    x = (np.random.default_rng(6).random((45, 70, 3)) * 255).astype(np.uint8)
    a = denoise_array(load_denoiser(trained_run), x, noise_level=10)
    b = denoise_array(load_denoiser(str(tmp_path / "g.keras")), x, noise_level=10)
    assert np.abs(a.astype(int) - b).max() <= 1
    r = run_cli("export", trained_run, "-o", str(tmp_path / "sm"), "--format", "savedmodel")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "sm" / "saved_model.pb").exists()


@pytest.mark.slow
def test_denoise_a_folder_on_ray(trained_run, tmp_path, ray_cluster):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(6)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), np.uint8)).save(src / f"{i}.png")
    (src / "bad.png").write_text("x")
    from distgan.cli import main

    rc = main(["denoise", str(src), "-o", str(tmp_path / "out"), "--model", trained_run, "--ray",
               "--ensemble", "2"])
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "2.png"]
    # the actors ran the self-ensemble the flag asked for
    local = denoise_array(load_denoiser(trained_run), np.asarray(Image.open(src / "1.png")),
                          ensemble=2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "1.png")), local)
    assert not np.array_equal(local, denoise_array(load_denoiser(trained_run),
                                                   np.asarray(Image.open(src / "1.png"))))


def test_export_averages_the_last_checkpoints(trained_run, tmp_path):
    from distgan.checkpoint import checkpoints

    last_two = checkpoints(Path(trained_run) / "checkpoints")[-2:]
    assert len(last_two) == 2
    r = run_cli("export", trained_run, "-o", str(tmp_path / "avg.keras"), "--average", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    got = load_denoiser(str(tmp_path / "avg.keras"), precision="float32").generator.get_weights()
    each = [load_denoiser(str(c), precision="float32").generator.get_weights() for c in last_two]
    assert any(not np.array_equal(a, b) for a, b in zip(*each))  # the two differ
    for g, a, b in zip(got, *each):
        np.testing.assert_allclose(g, (a.astype(np.float64) + b) / 2, rtol=1e-6, atol=1e-7)
    r = run_cli("export", trained_run, "-o", str(tmp_path / "x.keras"), "--average", "99")
    assert r.returncode == 2 and "holds" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("export", str(tmp_path / "avg.keras"), "-o", str(tmp_path / "y.keras"), "--average", "2")
    assert r.returncode == 2 and "not a model file" in r.stderr

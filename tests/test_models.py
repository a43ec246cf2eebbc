import keras
import numpy as np
import pytest

from distgan.config import load_config
from distgan.models import build_decoder, build_discriminator, build_encoder, build_generator
from distgan.noise import N_PARAMS

from .conftest import ROOT

SMALL = load_config(None, ["model.gen_filters=[8, 16, 16]", "model.gen_strides=[1, 2, 2]",
                           "model.disc_filters=[8, 16]", "model.disc_strides=[2, 2]"]).model


@pytest.mark.parametrize("chunk", [32, 48, 64])
@pytest.mark.parametrize("condition", [True, False])
@pytest.mark.parametrize("latent", [0, 64])
def test_shapes(chunk, condition, latent):
    m = SMALL.__class__(**{**SMALL.__dict__, "condition": condition, "latent": latent})
    g, d = build_generator(m, chunk), build_discriminator(m, chunk)
    x = np.random.default_rng(0).random((2, chunk, chunk, 3)).astype(np.float32)
    p = np.zeros((2, N_PARAMS), np.float32)
    y = np.asarray(g([x, p]))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert np.asarray(d(x)).shape == (2, 1)


def test_fully_convolutional_generator_takes_any_tile_size():
    g = build_generator(SMALL, 32)
    y = g([np.zeros((1, 96, 128, 3), np.float32), np.zeros((1, N_PARAMS), np.float32)])
    assert tuple(y.shape) == (1, 96, 128, 3)


def test_conditioning_changes_the_output_only_when_on():
    x = np.random.default_rng(1).random((1, 32, 32, 3)).astype(np.float32)
    p0, p1 = np.zeros((1, N_PARAMS), np.float32), np.full((1, N_PARAMS), 0.5, np.float32)
    plain = SMALL.__class__(**{**SMALL.__dict__, "residual": False})
    on = build_generator(plain, 32)
    assert not np.allclose(on([x, p0]), on([x, p1]))
    off = build_generator(plain.__class__(**{**plain.__dict__, "condition": False}), 32)
    assert np.allclose(off([x, p0]), off([x, p1]))


def test_residual_generator_starts_as_the_identity():
    x = np.random.default_rng(3).random((2, 48, 48, 3)).astype(np.float32)
    y = build_generator(SMALL, 48)([x, np.full((2, N_PARAMS), 0.3, np.float32)])
    assert np.array_equal(np.asarray(y), x)


def _convs(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.Conv2DTranspose)]


def test_paper_config_builds_the_paper_models():
    m = load_config(ROOT / "configs" / "paper.yaml").model
    enc, dec, disc = build_encoder(m, 32), build_decoder(m, 32), build_discriminator(m, 32)
    assert [c.filters for c in _convs(enc)] == [256, 128, 64]
    dense = [layer for layer in enc.layers if isinstance(layer, keras.layers.Dense)]
    assert dense[0].units == 3500
    tconvs = [layer for layer in dec.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    assert [t.filters for t in tconvs] == [128, 256, 256, 3]  # mirrored, then to RGB
    assert tconvs[-1].activation.__name__ == "sigmoid"
    dconvs = _convs(disc)
    assert [c.filters for c in dconvs] == [248] * 4 and all(c.strides == (2, 2) for c in dconvs)
    out = disc.layers[-1]
    assert isinstance(out, keras.layers.Dense) and out.units == 1
    assert out.activation.__name__ == "sigmoid"
    # each block is Conv -> LeakyReLU -> BatchNorm
    kinds = [type(layer).__name__ for layer in disc.layers[1:4]]
    assert kinds == ["Conv2D", "LeakyReLU", "BatchNormalization"]


def test_generator_saves_and_loads_in_safe_mode(tmp_path):
    g = build_generator(SMALL, 32)
    g.save(tmp_path / "g.keras")
    back = keras.models.load_model(tmp_path / "g.keras", safe_mode=True)
    x = np.random.default_rng(2).random((1, 32, 32, 3)).astype(np.float32)
    p = np.zeros((1, N_PARAMS), np.float32)
    assert np.allclose(g([x, p]), back([x, p]), atol=1e-6)

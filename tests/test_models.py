import keras
import numpy as np
import pytest

from distgan.config import load_config
from distgan.models import build_decoder, build_discriminator, build_encoder, build_generator
from distgan.noise import N_PARAMS

from .conftest import ROOT

SMALL = load_config(None, ["model.generator=autoencoder", "model.gen_filters=[8, 16, 16]",
                           "model.gen_strides=[1, 2, 2]", "model.disc_filters=[8, 16]",
                           "model.disc_strides=[2, 2]"]).model
UNET = load_config(None, ["model.gen_filters=[8, 16, 16]", "model.gen_strides=[1, 2, 2]",
                          "model.blocks=2", "model.disc_filters=[8, 16]",
                          "model.disc_strides=[2, 2]"]).model


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


# ------------------------------------------------------------------ unet family


def _trained_like(model, seed=0):
    """Random weights everywhere (the zero-initialised convs too), as after training."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_pixel_unshuffle_and_shuffle_are_inverses():
    from distgan.models import PixelShuffle, PixelUnshuffle

    x = np.random.default_rng(4).random((2, 12, 20, 3)).astype(np.float32)
    down = np.asarray(PixelUnshuffle(2)(x))
    assert down.shape == (2, 6, 10, 12)
    # each 2 x 2 patch becomes the channels of one position
    assert np.array_equal(down[0, 1, 2], x[0, 2:4, 4:6].reshape(-1))
    assert np.array_equal(np.asarray(PixelShuffle(2)(down)), x)


def test_unet_starts_as_the_identity_and_takes_any_multiple_of_16():
    g = build_generator(UNET, 64)
    for h, w in ((64, 64), (48, 112), (16, 208)):
        x = np.random.default_rng(h).random((1, h, w, 3)).astype(np.float32)
        assert np.array_equal(np.asarray(g([x, np.full((1, N_PARAMS), 0.2, np.float32)])), x)


def test_unet_output_is_unclipped_and_depends_on_the_noise_maps():
    g = _trained_like(build_generator(UNET, 32))
    x = np.random.default_rng(5).random((1, 32, 32, 3)).astype(np.float32)
    p0, p1 = np.zeros((1, N_PARAMS), np.float32), np.full((1, N_PARAMS), 0.5, np.float32)
    y0, y1 = np.asarray(g([x, p0])), np.asarray(g([x, p1]))
    assert not np.allclose(y0, y1)
    off = _trained_like(build_generator(UNET.__class__(**{**UNET.__dict__, "condition": False}), 32))
    assert np.allclose(off([x, p0]), off([x, p1]))
    big = _trained_like(build_generator(UNET, 32), seed=1)
    y = np.asarray(big([x * 40, p0]))
    assert y.max() > 1 or y.min() < 0  # no clip inside the network: gradients reach every pixel


def test_unet_encoder_and_decoder_split_the_deepest_blocks():
    m = UNET.__class__(**{**UNET.__dict__, "blocks": 3})
    enc, dec = build_encoder(m, 64), build_decoder(m, 64)
    names = lambda model: {layer.name.split("_")[0] for layer in model.layers}  # noqa: E731
    assert {"enc0", "enc1", "enc2"} <= names(enc) and "dec2" in names(dec)
    deep_enc = {layer.name.rsplit("_", 1)[0] for layer in enc.layers if layer.name.startswith("enc2_b")}
    deep_dec = {layer.name.rsplit("_", 1)[0] for layer in dec.layers if layer.name.startswith("dec2_b")}
    assert len({n.split("_")[1] for n in deep_enc}) == 2 and len({n.split("_")[1] for n in deep_dec}) == 1
    # the encoder hands the decoder the bottleneck and one skip per shallower scale
    assert len(enc.outputs) == 3 and len(dec.inputs) == 4


def test_ffdnet_config_builds_ffdnets_body():
    m = load_config(ROOT / "configs" / "ffdnet.yaml").model
    g = build_generator(m, 64)
    convs = _convs(g)
    assert len(convs) == 8 and all(c.kernel_size == (3, 3) for c in convs)
    assert sorted(c.filters for c in convs) == [12] + [64] * 7  # 12 = 3 colours x 2 x 2, shuffled back
    head = next(c for c in convs if c.name == "head")
    assert head.input.shape[-1] == 12 + N_PARAMS  # the unshuffled image and the noise maps
    # FFDNet's body: BatchNorm after each of the 6 middle convolutions, none on head or tail
    bns = [layer for layer in g._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 6 and not any(b.name.startswith(("head", "tail")) for b in bns)


def test_norm_batch_puts_batchnorm_in_the_blocks():
    m = UNET.__class__(**{**UNET.__dict__, "norm": "batch"})
    bns = [layer for layer in build_generator(m, 32)._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 2 * 2 * 5  # 2 convs a block, 2 blocks a scale, 5 block groups


def test_bias_free_unet_has_no_biases():
    m = UNET.__class__(**{**UNET.__dict__, "bias": False})
    assert not any("bias" in w.path for w in build_generator(m, 32).weights)


def test_unet_saves_and_loads_in_safe_mode(tmp_path):
    g = _trained_like(build_generator(UNET, 32))
    g.save(tmp_path / "g.keras")
    back = keras.models.load_model(tmp_path / "g.keras", safe_mode=True)
    x = np.random.default_rng(2).random((1, 48, 32, 3)).astype(np.float32)
    p = np.full((1, N_PARAMS), 0.1, np.float32)
    assert np.allclose(g([x, p]), back([x, p]), atol=1e-6)


def test_mixed_bfloat16_unet_computes_in_bfloat16_with_a_float32_output():
    g = build_generator(UNET, 32, dtype="mixed_bfloat16")
    convs = _convs(g)
    assert convs[0].compute_dtype == "bfloat16" and convs[0].variable_dtype == "float32"
    head = next(c for c in convs if c.name == "noise_out")
    assert head.compute_dtype == "float32"
    x = np.random.default_rng(3).random((1, 32, 32, 3)).astype(np.float32)
    y = g([x, np.zeros((1, N_PARAMS), np.float32)])
    assert y.dtype == "float32"

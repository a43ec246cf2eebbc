"""Generator and discriminator builders. Building only: no losses, optimisers or I/O.

Generator: the paper's convolutional autoencoder, built as two Keras models so that
`parallel.split` can place them on different devices:

    encoder([noisy, params]) -> [bottleneck, skip_1, ..., skip_k]
    decoder([bottleneck, skip_1, ..., skip_k, noisy]) -> denoised

Encoder blocks are Conv2D -> LeakyReLU -> BatchNorm; the decoder mirrors them with
Conv2DTranspose blocks and ends in a transposed conv to 3 channels with a sigmoid
(or, with `residual`, a linear noise estimate subtracted from the input). An optional
dense latent sits in the bottleneck; without it the generator is fully convolutional
and runs on any tile size. With `condition`, the noise-parameter vector enters as
constant feature maps concatenated to the input (FFDNet-style).

Discriminator: Conv2D -> LeakyReLU -> BatchNorm blocks, then Dense(1, sigmoid).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .config import ModelConfig
from .noise import N_PARAMS


@keras.saving.register_keras_serializable(package="distgan")
class ParamMaps(layers.Layer):
    """Broadcast a (B, P) vector to (B, H, W, P) maps matching an image's height and width."""

    def call(self, image, params):
        shape = ops.shape(image)
        maps = ops.reshape(params, (-1, 1, 1, ops.shape(params)[-1]))
        return ops.broadcast_to(maps, (shape[0], shape[1], shape[2], ops.shape(params)[-1]))


@keras.saving.register_keras_serializable(package="distgan")
class SubtractClip(layers.Layer):
    """Residual output: noisy - predicted noise, clipped to the image range [0, 1]."""

    def call(self, noisy, noise):
        return ops.clip(noisy - noise, 0.0, 1.0)


def _block(x, filters, kernel, stride, slope, name, transpose=False):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=stride, padding="same", name=f"{name}_conv")(x)
    x = layers.LeakyReLU(negative_slope=slope, name=f"{name}_lrelu")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _spatial(chunk: int | None, cfg: ModelConfig) -> int | None:
    """Tile edge the models are built for: fixed with a dense latent, free without."""
    return chunk if cfg.latent else None


def build_encoder(cfg: ModelConfig, chunk: int) -> keras.Model:
    size = _spatial(chunk, cfg)
    noisy = keras.Input((size, size, 3), name="noisy")
    params = keras.Input((N_PARAMS,), name="params")
    x = noisy
    if cfg.condition:
        x = layers.Concatenate(name="with_params")([noisy, ParamMaps(name="param_maps")(noisy, params)])
    skips = []
    for i, (f, s) in enumerate(zip(cfg.gen_filters, cfg.gen_strides)):
        x = _block(x, f, cfg.gen_kernel, s, cfg.leaky_slope, f"enc{i}")
        skips.append(x)
    if cfg.latent:
        h = chunk
        for s in cfg.gen_strides:
            h //= s
        c = cfg.gen_filters[-1]
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(cfg.latent, name="latent")(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="latent_lrelu")(x)
        x = layers.Dense(h * h * c, name="unlatent")(x)
        x = layers.LeakyReLU(negative_slope=cfg.leaky_slope, name="unlatent_lrelu")(x)
        x = layers.Reshape((h, h, c), name="unflatten")(x)
    # The deepest block's output is the bottleneck itself; only shallower ones are skips.
    return keras.Model([noisy, params], [x, *(skips[:-1] if cfg.skips else [])], name="encoder")


def build_decoder(cfg: ModelConfig, chunk: int) -> keras.Model:
    size = _spatial(chunk, cfg)
    n = len(cfg.gen_filters)
    sizes = [size]
    for s in cfg.gen_strides:
        sizes.append(None if size is None else sizes[-1] // s)
    bottleneck = keras.Input((sizes[n], sizes[n], cfg.gen_filters[-1]), name="bottleneck")
    skip_in = [
        keras.Input((sizes[i + 1], sizes[i + 1], cfg.gen_filters[i]), name=f"skip{i}")
        for i in range(n - 1 if cfg.skips else 0)
    ]
    noisy = keras.Input((size, size, 3), name="noisy")
    x = bottleneck
    # Mirror: block i undoes encoder block i (its stride), going back up in resolution.
    for i in reversed(range(n)):
        out_filters = cfg.gen_filters[i - 1] if i > 0 else cfg.gen_filters[0]
        x = _block(x, out_filters, cfg.gen_kernel, cfg.gen_strides[i], cfg.leaky_slope, f"dec{i}", True)
        if cfg.skips and i > 0:
            x = layers.Concatenate(name=f"skip_cat{i - 1}")([x, skip_in[i - 1]])
    if cfg.residual:
        # Zero-initialised: the generator starts as the identity, so training can only
        # improve on the noisy input instead of first having to learn to copy it.
        noise = layers.Conv2DTranspose(
            3, cfg.gen_kernel, padding="same", kernel_initializer="zeros", name="noise_out"
        )(x)
        out = SubtractClip(name="denoised")(noisy, noise)
    else:
        out = layers.Conv2DTranspose(
            3, cfg.gen_kernel, padding="same", activation="sigmoid", name="denoised"
        )(x)
    return keras.Model([bottleneck, *skip_in, noisy], out, name="decoder")


def build_generator(
    cfg: ModelConfig, chunk: int, encoder: keras.Model | None = None, decoder: keras.Model | None = None
) -> keras.Model:
    """The whole generator, sharing weights with `encoder` and `decoder` when given."""
    encoder = encoder or build_encoder(cfg, chunk)
    decoder = decoder or build_decoder(cfg, chunk)
    size = _spatial(chunk, cfg)
    noisy = keras.Input((size, size, 3), name="noisy")
    params = keras.Input((N_PARAMS,), name="params")
    feats = encoder([noisy, params])
    feats = feats if isinstance(feats, list | tuple) else [feats]
    return keras.Model([noisy, params], decoder([*feats, noisy]), name="generator")


def build_discriminator(cfg: ModelConfig, chunk: int) -> keras.Model:
    image = keras.Input((chunk, chunk, 3), name="image")
    x = image
    for i, (f, s) in enumerate(zip(cfg.disc_filters, cfg.disc_strides)):
        x = _block(x, f, cfg.disc_kernel, s, cfg.leaky_slope, f"d{i}")
    x = layers.Flatten(name="flatten")(x)
    out = layers.Dense(1, activation="sigmoid", name="real_prob")(x)
    return keras.Model(image, out, name="discriminator")

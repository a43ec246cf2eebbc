"""Generator and discriminator builders. Building only: no losses, optimisers or I/O.

Every generator is built as two Keras models so that `parallel.split` can place them on
different devices:

    encoder([noisy, params]) -> [bottleneck, skip_1, ..., skip_k]
    decoder([bottleneck, skip_1, ..., skip_k, noisy]) -> denoised

`model.generator` picks the family:

autoencoder (the paper's). Encoder blocks are Conv2D -> LeakyReLU -> BatchNorm; the decoder mirrors them with
Conv2DTranspose blocks and ends in a transposed conv to 3 channels with a sigmoid
(or, with `residual`, a linear noise estimate subtracted from the input). An optional
dense latent sits in the bottleneck; without it the generator is fully convolutional
and runs on any tile size. With `condition`, the noise-parameter vector enters as
constant feature maps concatenated to the input (FFDNet-style).

unet (FFDNet / DRUNet style, built for quality per FLOP). A pixel-unshuffle stem
(`model.stem`, FFDNet's reversible downsampling) folds s x s pixels into channels, and the
noise-parameter maps join at that resolution. A head convolution, then per scale
`model.blocks` blocks (`res`: x + conv(relu(conv(x))), DRUNet's, the second conv
zero-initialised; `conv`: relu(conv(x)),
FFDNet's plain body), a 2 x 2 strided convolution down to the next scale, and back up with
2 x 2 transposed convolutions whose output is added to the skip of its scale. The deepest
scale's blocks are shared out between encoder and decoder, so that split placement gives
each a fair part. The tail predicts the noise (zero-initialised, so the network starts as
the identity) and pixel-shuffles it back; the output is noisy - noise, unclipped, so no
gradient is cut off at the image range. No normalisation by default (`model.norm`).
One scale with `conv` blocks is FFDNet; several with `res` blocks is DRUNet's shape.

Layers take `dtype` (a Keras dtype policy such as "mixed_bfloat16"); the noise output and
the subtraction stay float32.

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


@keras.saving.register_keras_serializable(package="distgan")
class Subtract(layers.Layer):
    """Residual output: noisy - predicted noise, in float32."""

    def call(self, noisy, noise):
        return ops.cast(noisy, "float32") - ops.cast(noise, "float32")


@keras.saving.register_keras_serializable(package="distgan")
class PixelUnshuffle(layers.Layer):
    """(B, H, W, C) -> (B, H/s, W/s, C*s*s): each s x s patch folded into channels."""

    def __init__(self, factor: int, **kw):
        super().__init__(**kw)
        self.factor = factor

    def call(self, x):
        s, shape = self.factor, ops.shape(x)
        h, w, c = shape[1], shape[2], x.shape[-1]
        x = ops.reshape(x, (-1, h // s, s, w // s, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h // s, w // s, s * s * c))

    def compute_output_shape(self, shape):
        s = self.factor
        return (shape[0], None if shape[1] is None else shape[1] // s,
                None if shape[2] is None else shape[2] // s, shape[3] * s * s)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="distgan")
class PixelShuffle(layers.Layer):
    """The inverse of PixelUnshuffle: (B, H, W, C*s*s) -> (B, H*s, W*s, C)."""

    def __init__(self, factor: int, **kw):
        super().__init__(**kw)
        self.factor = factor

    def call(self, x):
        s, shape = self.factor, ops.shape(x)
        h, w, c = shape[1], shape[2], x.shape[-1] // (self.factor**2)
        x = ops.reshape(x, (-1, h, w, s, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, h * s, w * s, c))

    def compute_output_shape(self, shape):
        s = self.factor
        return (shape[0], None if shape[1] is None else shape[1] * s,
                None if shape[2] is None else shape[2] * s, shape[3] // (s * s))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _block(x, filters, kernel, stride, slope, name, transpose=False, dtype=None):
    conv = layers.Conv2DTranspose if transpose else layers.Conv2D
    x = conv(filters, kernel, strides=stride, padding="same", name=f"{name}_conv", dtype=dtype)(x)
    x = layers.LeakyReLU(negative_slope=slope, name=f"{name}_lrelu", dtype=dtype)(x)
    return layers.BatchNormalization(name=f"{name}_bn", dtype=dtype)(x)


def _spatial(chunk: int | None, cfg: ModelConfig) -> int | None:
    """Tile edge the models are built for: fixed with a dense latent, free without."""
    return chunk if cfg.latent else None


def build_encoder(cfg: ModelConfig, chunk: int, dtype: str | None = None) -> keras.Model:
    if cfg.generator == "unet":
        return _unet_encoder(cfg, dtype)
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


def build_decoder(cfg: ModelConfig, chunk: int, dtype: str | None = None) -> keras.Model:
    if cfg.generator == "unet":
        return _unet_decoder(cfg, dtype)
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


# ------------------------------------------------------------------ unet family


def _conv(cfg: ModelConfig, filters: int, name: str, dtype, **kw):
    return layers.Conv2D(filters, kw.pop("kernel", cfg.gen_kernel), padding="same",
                         use_bias=cfg.bias, name=name, dtype=dtype, **kw)


def _unet_block(x, filters: int, cfg: ModelConfig, name: str, dtype):
    """`res`: x + conv(relu(conv(x))); `conv`: relu(conv(x)). BatchNorm after each conv
    with `model.norm: batch`."""

    def conv_norm(y, tag, **kw):
        y = _conv(cfg, filters, f"{name}_{tag}", dtype, **kw)(y)
        if cfg.norm == "batch":
            y = layers.BatchNormalization(name=f"{name}_{tag}_bn", dtype=dtype)(y)
        return y

    if cfg.block == "conv":
        # He initialisation: a plain ReLU stack keeps its activations' variance only with it
        # (Keras' default Glorot halves it at every layer); the res blocks' identity paths
        # don't need it.
        return layers.ReLU(name=f"{name}_relu", dtype=dtype)(
            conv_norm(x, "conv", kernel_initializer="he_normal"))
    y = layers.ReLU(name=f"{name}_relu", dtype=dtype)(conv_norm(x, "conv1"))
    # Zero-initialised like the output head: each block starts as the identity, so a deep
    # stack without normalisation trains stably at Adam's 1e-3 (NAFNet's beta = 0 idea).
    y = conv_norm(y, "conv2", kernel_initializer="zeros")
    return layers.Add(name=f"{name}_add", dtype=dtype)([x, y])


def _deep_split(cfg: ModelConfig) -> tuple[int, int]:
    """The deepest scale's blocks: how many run in the encoder, how many in the decoder."""
    first = -(-cfg.blocks // 2)
    return first, cfg.blocks - first


def unet_scales(cfg: ModelConfig) -> list[int]:
    """The downsampling factor of each scale relative to the input (the stem's included)."""
    out, f = [], cfg.stem
    for s in cfg.gen_strides:
        f *= s
        out.append(f)
    return out


def _unet_encoder(cfg: ModelConfig, dtype) -> keras.Model:
    noisy = keras.Input((None, None, 3), name="noisy")
    params = keras.Input((N_PARAMS,), name="params")
    x = PixelUnshuffle(cfg.stem, name="stem", dtype=dtype)(noisy) if cfg.stem > 1 else noisy
    if cfg.condition:
        x = layers.Concatenate(name="with_params", dtype=dtype)(
            [x, ParamMaps(name="param_maps", dtype=dtype)(x, params)])
    if cfg.block == "conv":
        x = _conv(cfg, cfg.gen_filters[0], "head", dtype, kernel_initializer="he_normal")(x)
        x = layers.ReLU(name="head_relu", dtype=dtype)(x)
    else:
        x = _conv(cfg, cfg.gen_filters[0], "head", dtype)(x)
    n = len(cfg.gen_filters)
    skips = []
    for i, (f, s) in enumerate(zip(cfg.gen_filters, cfg.gen_strides)):
        if i > 0:
            x = _conv(cfg, f, f"down{i}", dtype, kernel=s, strides=s)(x)
        for b in range(cfg.blocks if i < n - 1 else _deep_split(cfg)[0]):
            x = _unet_block(x, f, cfg, f"enc{i}_b{b}", dtype)
        if i < n - 1:
            skips.append(x)
    return keras.Model([noisy, params], [x, *skips], name="encoder")


def _unet_decoder(cfg: ModelConfig, dtype) -> keras.Model:
    f, n = cfg.gen_filters, len(cfg.gen_filters)
    bottleneck = keras.Input((None, None, f[-1]), name="bottleneck")
    skip_in = [keras.Input((None, None, f[i]), name=f"skip{i}") for i in range(n - 1)]
    noisy = keras.Input((None, None, 3), name="noisy")
    x = bottleneck
    for b in range(_deep_split(cfg)[1]):
        x = _unet_block(x, f[-1], cfg, f"dec{n - 1}_b{b}", dtype)
    for i in reversed(range(n - 1)):
        s = cfg.gen_strides[i + 1]
        x = layers.Conv2DTranspose(f[i], s, strides=s, use_bias=cfg.bias, name=f"up{i}",
                                   dtype=dtype)(x)
        x = layers.Add(name=f"skip_add{i}", dtype=dtype)([x, skip_in[i]])
        for b in range(cfg.blocks):
            x = _unet_block(x, f[i], cfg, f"dec{i}_b{b}", dtype)
    # Zero-initialised: the generator starts as the identity. Float32 from here on.
    noise = _conv(cfg, 3 * cfg.stem**2, "noise_out", "float32", kernel_initializer="zeros")(x)
    if cfg.stem > 1:
        noise = PixelShuffle(cfg.stem, name="noise_shuffle", dtype="float32")(noise)
    out = Subtract(name="denoised", dtype="float32")(noisy, noise)
    return keras.Model([bottleneck, *skip_in, noisy], out, name="decoder")


def build_generator(
    cfg: ModelConfig, chunk: int, encoder: keras.Model | None = None,
    decoder: keras.Model | None = None, dtype: str | None = None,
) -> keras.Model:
    """The whole generator, sharing weights with `encoder` and `decoder` when given."""
    encoder = encoder or build_encoder(cfg, chunk, dtype)
    decoder = decoder or build_decoder(cfg, chunk, dtype)
    size = _spatial(chunk, cfg)
    noisy = keras.Input((size, size, 3), name="noisy")
    params = keras.Input((N_PARAMS,), name="params")
    feats = encoder([noisy, params])
    feats = feats if isinstance(feats, list | tuple) else [feats]
    return keras.Model([noisy, params], decoder([*feats, noisy]), name="generator")


def build_discriminator(cfg: ModelConfig, chunk: int, dtype: str | None = None) -> keras.Model:
    image = keras.Input((chunk, chunk, 3), name="image")
    x = image
    for i, (f, s) in enumerate(zip(cfg.disc_filters, cfg.disc_strides)):
        x = _block(x, f, cfg.disc_kernel, s, cfg.leaky_slope, f"d{i}", dtype=dtype)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    out = layers.Dense(1, activation="sigmoid", name="real_prob", dtype="float32")(x)
    return keras.Model(image, out, name="discriminator")

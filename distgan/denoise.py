"""Denoise photos of any size with a trained generator.

The image stays in its own dtype (uint8, uint16 or float) from file to file: rows of
overlapping tiles are cut one at a time (`tiling.iter_rows`), run through the model in
batches, blended with the strength I as y = (1 - I) * x + I * f(x), and written into a
preallocated output by `tiling.RowJoiner`. Memory is the input, the output and one band of
tiles, whatever the size; a 100 MP photo never exists as a float32 copy.

On CPUs with bfloat16 units (AVX512-BF16 / AMX) and on GPUs, the network runs in mixed
bfloat16 by default (`precision="auto"`); its output head and the residual subtraction stay
in float32, so the output keeps its precision.

Models come from a run folder (its latest checkpoint), a checkpoint folder, an exported
`.keras` file (loaded with Keras' safe_mode, so a model file cannot run code), or, with no
model given, the one shipped in `distgan/weights/`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .tiling import (
    RowJoiner, dihedral, iter_rows, make_layout, mirror_pad, round_into, undo_dihedral,
)

Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (noisy tiles, params) -> tiles

SHIPPED = Path(__file__).resolve().parent / "weights" / "denoiser.keras"
PRECISIONS = ("auto", "float32", "bfloat16")
FLOAT32_LAYERS = ("noise_out", "noise_shuffle", "denoised")  # the output head keeps full precision
TILE = 384  # largest tile edge: as fast per pixel as bigger ones on CPU, half the memory of 512
OVERLAP = 16  # blend width: tiled output is within 5e-4 (mean abs) of the untiled one
WHOLE_PIXELS = 300_000  # an image up to this size (padded to /16) goes through in one call
# The symmetries a self-ensemble of n averages, the first n of these (s = rotation + 4 * flip):
# identity, the flips and the half turn (no transposes), then the four that transpose.
SYMMETRIES = (0, 4, 2, 6, 1, 5, 3, 7)
ENSEMBLES = (1, 2, 4, 8)


class ModelError(UserError):
    """A model that is missing or does not fit."""


# ------------------------------------------------------------------ core


def apply_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int = 16,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Run `fn` (tiles -> tiles) over `image` one row of tiles at a time, in batches, and
    blend the results into `out` (default: a new array of the image's dtype)."""
    layout = make_layout(image.shape, tile, overlap)
    joiner = RowJoiner(layout, np.empty_like(image) if out is None else out)
    batch_size = max(1, batch_size)
    for row in iter_rows(image, tile, overlap):
        joiner.add_row(fn(row[i : i + batch_size]) for i in range(0, len(row), batch_size))
    return joiner.result()


def apply_whole(fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray) -> np.ndarray:
    """Run `fn` once on the whole image, mirrored out to a multiple of 16 on each side."""
    h, w = image.shape[:2]
    padded = mirror_pad(image, _round16(h), _round16(w))
    y = fn(padded[None])[0, :h, :w]
    return round_into(y, image.dtype).astype(image.dtype) if np.issubdtype(
        image.dtype, np.integer) else y.astype(image.dtype)


def with_params(infer: Infer, params: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Bind one conditioning vector to an (tiles, params) model function."""
    p = np.asarray(params, np.float32)[None]
    return lambda tiles: np.asarray(infer(tiles, np.repeat(p, len(tiles), 0)))


def check_ensemble(n: int) -> None:
    """A clear error for a self-ensemble size other than 1, 2, 4 or 8."""
    if n not in ENSEMBLES:
        raise UserError(f"--ensemble must be one of {', '.join(map(str, ENSEMBLES))}, got {n}")


def self_ensemble(model: Callable[[np.ndarray], np.ndarray], n: int) -> Callable[[np.ndarray], np.ndarray]:
    """f(x) averaged over n symmetric copies: mean_s undo_s(f(s(x))) for the first n of
    SYMMETRIES. n times the compute for a smoother estimate (the "x8" of published tables)."""
    check_ensemble(n)
    if n == 1:
        return model

    def run(tiles: np.ndarray) -> np.ndarray:
        acc = np.zeros(tiles.shape, np.float32)
        for s in SYMMETRIES[:n]:
            acc += undo_dihedral(model(np.ascontiguousarray(dihedral(tiles, s))), s)
        acc *= np.float32(1 / n)
        return acc

    return run


def blend(image: np.ndarray, denoised: np.ndarray, strength: float) -> np.ndarray:
    """y = (1 - I) * x + I * f(x): I = 0 gives the input back, I = 1 the model output."""
    if strength == 1.0:
        return denoised
    if strength == 0.0:
        return image
    return (1.0 - strength) * image + strength * denoised


# ------------------------------------------------------------------ models


@dataclass
class Denoiser:
    generator: object  # keras.Model: (noisy, params) -> denoised
    conditioned: bool
    chunk: int  # the tile size it was trained on
    fully_convolutional: bool
    source: str
    precision: str = "float32"

    def __post_init__(self):
        import tensorflow as tf

        gen = self.generator

        @tf.function(input_signature=[  # one trace for every tile size and batch
            tf.TensorSpec([None, None, None, 3], tf.float32),
            tf.TensorSpec([None, gen.inputs[1].shape[-1]], tf.float32)])
        def infer(x, p):
            return gen([x, p], training=False)

        self._infer = infer

    def infer(self, tiles: np.ndarray, params: np.ndarray) -> np.ndarray:
        return self._infer(tiles, params).numpy()

    def tiling(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(tile, overlap, batch) for an image of `shape`.

        A fully convolutional model gets tiles of up to TILE px, one per call: on CPU that
        is as fast per pixel as bigger batches or tiles and bounds memory. The tile then
        shrinks, in steps of 16 so every stride divides it, to the smallest that covers the
        image with the same number of tiles. A model with a dense latent takes its chunk.
        """
        if not self.fully_convolutional:
            return self.chunk, max(8, self.chunk // 8), _batch(self.chunk)
        h, w = shape[:2]
        tile = max(16, min(TILE, _round16(max(h, w))))
        overlap = min(OVERLAP, tile // 4)
        lay = make_layout(shape, tile, overlap)
        need = max(-(-(h - overlap) // lay.rows), -(-(w - overlap) // lay.cols)) + overlap
        tile = max(_round16(need), 16, overlap + 1)
        return tile, overlap, _batch(tile)

    def fits_whole(self, shape: tuple[int, ...]) -> bool:
        """Small images skip tiling: one call on the image mirrored out to a multiple of 16."""
        return self.fully_convolutional and _round16(shape[0]) * _round16(shape[1]) <= WHOLE_PIXELS


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _batch(tile: int) -> int:
    """Tiles per model call: as many as make up one TILE x TILE tile's pixels."""
    return max(1, TILE**2 // tile**2)


def resolve_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        from .parallel import bfloat16_supported

        return "bfloat16" if bfloat16_supported() else "float32"
    return precision


def _with_policy(config, policy: dict):
    """A copy of a Keras model config with every layer's dtype policy set to `policy`,
    except the float32 output head and the inputs."""
    if isinstance(config, list):
        return [_with_policy(c, policy) for c in config]
    if not isinstance(config, dict):
        return config
    out = {k: _with_policy(v, policy) for k, v in config.items()}
    cfg = out.get("config")
    if (isinstance(cfg, dict) and "dtype" in cfg and out.get("class_name") != "InputLayer"
            and cfg.get("name") not in FLOAT32_LAYERS):
        cfg["dtype"] = policy
    return out


def _mixed_bfloat16(gen):
    """The same network, computing in bfloat16 with float32 weights, output head in float32."""
    import keras

    from . import models  # noqa: F401  (registers distgan's layers)

    policy = keras.saving.serialize_keras_object(keras.DTypePolicy("mixed_bfloat16"))
    twin = keras.Model.from_config(_with_policy(gen.get_config(), policy))
    twin.set_weights(gen.get_weights())
    return twin


def _describe(gen, source: str, precision: str = "float32") -> Denoiser:
    from .models import ParamMaps

    conditioned = any(isinstance(layer, ParamMaps) for layer in _all_layers(gen))
    h = gen.inputs[0].shape[1]
    if precision == "bfloat16":
        gen = _mixed_bfloat16(gen)
    return Denoiser(gen, conditioned, int(h or 64), h is None, source, precision)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def load_denoiser(path: str | None = None, precision: str = "auto") -> Denoiser:
    """A run folder, checkpoint folder or `.keras` file; None = the shipped model.

    `precision`: "auto" (bfloat16 where the hardware has it, else float32), "float32" or
    "bfloat16".
    """
    return _load(path, resolve_precision(precision))


@functools.lru_cache(maxsize=4)
def _load(path: str | None, precision: str) -> Denoiser:
    import keras

    from . import models  # noqa: F401  (registers distgan's layers for safe loading)

    if path is None:
        if not SHIPPED.exists():
            raise ModelError("this install has no shipped model; pass --model RUN_DIR, a "
                             "checkpoint folder or a .keras file")
        path = str(SHIPPED)
    p = Path(path)
    if p.is_file():
        if p.suffix != ".keras":
            raise ModelError(f"{p}: not a model (expected a .keras file, a run folder or a "
                             f"checkpoint folder)")
        try:
            gen = keras.models.load_model(p, safe_mode=True, compile=False)
        except Exception as e:
            raise ModelError(f"{p}: cannot load this model ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]})") from None
        return _describe(gen, str(p), precision)
    if not p.exists():
        raise ModelError(f"{p}: no such model")
    from .checkpoint import generator_weights, read_config, resolve
    from .models import build_generator

    ckpt = resolve(p)
    cfg = read_config(ckpt)
    gen = build_generator(cfg.model, cfg.data.chunk)
    try:
        gen.load_weights(generator_weights(ckpt))
    except Exception as e:
        raise ModelError(f"{ckpt}: weights do not fit its config.yaml ({type(e).__name__})") from None
    return _describe(gen, str(ckpt), precision)


def averaged_generator(model: str, k: int):
    """The generator whose every weight (BatchNorm statistics too) is the mean over the last
    `k` checkpoints of a run, up to and including the one `model` names. Checkpoint
    averaging: late in training, single checkpoints swing with the last batches they saw."""
    from .checkpoint import checkpoints, damage, generator_weights, read_config, read_state, resolve
    from .models import build_generator

    if Path(model).is_file():
        raise UserError(f"{model}: --average needs a run or checkpoint folder, not a model file")
    last = resolve(model)
    step = read_state(last)["step"]
    pick = [c for c in checkpoints(last.parent)
            if read_state(c)["step"] <= step and damage(c) is None][-k:]
    if len(pick) < k:
        raise UserError(f"--average {k}: {last.parent} holds {len(pick)} checkpoint(s) up to "
                        f"step {step}")
    cfg = read_config(last)
    gen = build_generator(cfg.model, cfg.data.chunk)  # one model, each checkpoint loaded into it
    sums = None
    for c in pick:
        other = read_config(c)
        if other.model != cfg.model or other.data.chunk != cfg.data.chunk:
            raise UserError(f"--average: {c.name} has another model config than {last.name}")
        gen.load_weights(generator_weights(c))
        w = [np.asarray(v, np.float64) for v in gen.get_weights()]
        sums = w if sums is None else [a + b for a, b in zip(sums, w)]
    gen.set_weights([(a / k).astype(v.dtype) for a, v in zip(sums, gen.get_weights())])
    return gen


def export(model: str, output: str, fmt: str = "keras", average: int = 1) -> Path:
    """Write the generator of `model` as a .keras file or a TensorFlow SavedModel folder;
    `average` > 1 writes the mean of the run's last `average` checkpoints."""
    if average < 1:
        raise UserError(f"--average must be >= 1, got {average}")
    gen = (averaged_generator(model, average) if average > 1
           else load_denoiser(model, precision="float32").generator)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        if out.suffix != ".keras":
            raise UserError(f"{out}: a Keras model file must end in .keras")
        gen.save(out)
    elif fmt == "savedmodel":
        gen.export(str(out), format="tf_saved_model")
    else:
        raise UserError(f"unknown export format {fmt!r}; use keras or savedmodel")
    return out


# ------------------------------------------------------------------ noise level


def estimate_sigma(image: np.ndarray, max_side: int = 1024) -> float:
    """Gaussian σ on the 0-255 scale, by scikit-image's wavelet estimator on a central crop
    (a crop keeps the cost flat for huge photos)."""
    from skimage.restoration import estimate_sigma as _est

    h, w = image.shape[:2]
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    crop = image[y0 : y0 + max_side, x0 : x0 + max_side]
    scale = 255.0 if crop.dtype == np.uint8 else 65535.0 if crop.dtype == np.uint16 else 1.0
    crop = crop.astype(np.float32) / np.float32(scale)
    if min(crop.shape[:2]) < 8:
        return 0.0
    sigma = float(_est(crop, channel_axis=-1, average_sigmas=True)) * 255.0
    return sigma if math.isfinite(sigma) else 0.0  # a flat image has no measurable noise


def noise_params(noise_level: str | float, image: np.ndarray) -> np.ndarray:
    """The conditioning vector: 'auto' (estimated gaussian σ), a σ on 0-255, or a spec."""
    from .noise import parse_spec, params_of

    if isinstance(noise_level, int | float):
        return params_of(parse_spec(f"gaussian:{float(noise_level)}"))
    text = str(noise_level).strip()
    if text == "auto":
        return params_of(parse_spec(f"gaussian:{estimate_sigma(image):.4f}"))
    try:
        return params_of(parse_spec(f"gaussian:{float(text)}"))
    except ValueError:
        return params_of(parse_spec(text))


# ------------------------------------------------------------------ arrays


def denoise_array(
    den: Denoiser,
    image: np.ndarray,
    strength: float = 1.0,
    noise_level: str | float = "auto",
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    ensemble: int = 1,
) -> np.ndarray:
    """Denoise H x W x 3 (uint8, uint16, or float in [0, 1]); same shape and dtype out.
    `ensemble` (1, 2, 4 or 8) averages the model over that many symmetries of each tile."""
    if not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise UserError(f"--strength must be in [0, 1], got {strength}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise UserError(f"expected an H x W x 3 image, got shape {image.shape}")
    check_ensemble(ensemble)
    if strength == 0.0:
        return image.copy()
    model = self_ensemble(with_params(den.infer, noise_params(noise_level, image)), ensemble)
    scale = np.float32(1.0 if np.issubdtype(image.dtype, np.floating) else (
        255.0 if image.dtype == np.uint8 else 65535.0))

    def run(tiles: np.ndarray) -> np.ndarray:
        x = tiles.astype(np.float32) / scale
        # The unet's output is unclipped (so training sees every error); pixels are not.
        # The blend mixes the input with the denoised image as it would be saved.
        return blend(x, np.clip(model(x), 0.0, 1.0), strength) * scale

    if tile is None and overlap is None and den.fits_whole(image.shape):
        return apply_whole(run, image)
    t0, o0, b0 = den.tiling(image.shape)
    if tile:
        o0, b0 = min(o0, tile // 4), _batch(tile)
    tile, overlap, batch_size = tile or t0, o0 if overlap is None else overlap, batch_size or b0
    if not den.fully_convolutional and tile != den.chunk:
        raise UserError(f"this model has a dense latent: --tile must be {den.chunk}")
    if not 0 <= overlap < tile:
        raise UserError(f"--overlap must be in [0, tile), got {overlap} for tile {tile}")
    return apply_tiled(run, image, tile, overlap, batch_size)


def denoise(image: np.ndarray, model: str | None = None, strength: float = 1.0,
            noise_level: str | float = "auto", ensemble: int = 1) -> np.ndarray:
    """Denoise an image array (H x W x 3 or H x W; uint8, uint16 or float in [0, 1]).

    `model=None` uses the shipped model; otherwise a run folder, checkpoint or .keras file.
    `ensemble` (1, 2, 4 or 8): average the model over that many symmetries of each tile.
    """
    image = np.asarray(image)
    grey = image.ndim == 2
    rgb = np.repeat(image[..., None], 3, axis=2) if grey else image
    out = denoise_array(load_denoiser(model), rgb, strength, noise_level, ensemble=ensemble)
    return out.mean(axis=2).astype(image.dtype) if grey else out

"""One typed, frozen config for everything distgan does.

Defaults live here and nowhere else. `load_config` reads a YAML file, applies
`--set section.key=value` overrides and validates every value, naming the file
and key of anything wrong and suggesting the nearest valid key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

NOISE_KINDS = ("gaussian", "poisson", "speckle", "salt", "pepper", "s&p", "camera")


class ConfigError(UserError, ValueError):
    """A config file or override the user must fix; the message says where and how."""


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict:
    return {"range": (lo, hi), **kw}


def _choices(*values: Any) -> dict:
    return {"choices": values}


@dataclass(frozen=True)
class DataConfig:
    # `samples` | `folder:PATH` | `coco:PATH` | `cifar100`
    source: str = "samples"
    # Chunk (tile) edge in pixels; the models are built for this size.
    chunk: int = field(default=64, metadata=_choices(32, 48, 64))
    # Random crops drawn from each decoded image per pass.
    crops_per_image: int = field(default=16, metadata=_range(1, 10_000))
    batch_size: int = field(default=32, metadata=_range(1, 65_536))
    shuffle_buffer: int = field(default=2048, metadata=_range(0, 10_000_000))
    # What to do with an image smaller than a chunk.
    small_images: str = field(default="pad", metadata=_choices("pad", "skip"))
    # Images above this size are skipped with a warning (decompression-bomb guard).
    max_megapixels: float = field(default=200.0, metadata=_range(0.0, None))
    # The last N images of the source (in sorted order) are held out for evaluation.
    eval_images: int = field(default=2, metadata=_range(0, 1000))
    # Largest edge of a held-out image used for whole-image evaluation (0 = full size).
    eval_max_edge: int = field(default=256, metadata=_range(0, 100_000))
    # Noise specs of the held-out evaluation: every held-out image is scored under each one,
    # with noise seeded by the run's seed and the image (`psnr` is the mean over all).
    eval_noise: tuple[str, ...] = ("gaussian:25:unclipped", "mix:gaussian:15+s&p:0.02")
    # CPUs each Ray Data task reserves; trainers never take these.
    cpus_per_task: float = field(default=1.0, metadata=_range(0.0, 1024))
    # Parallel Ray Data tasks for decode + noise + chunk.
    data_workers: int = field(default=1, metadata=_range(1, 4096))


@dataclass(frozen=True)
class NoiseConfig:
    # Kinds that `random` draws from.
    kinds: tuple[str, ...] = NOISE_KINDS
    # Probability that a random spec is a mix of 2-3 kinds instead of one.
    mix_prob: float = field(default=0.3, metadata=_range(0.0, 1.0))
    # Intensity ranges sampled uniformly by `random`.
    gaussian_sigma: tuple[float, float] = (1.0, 50.0)  # std on the 0-255 scale
    poisson_peak: tuple[float, float] = (5.0, 500.0)  # photons at full white
    speckle_var: tuple[float, float] = (0.001, 0.05)
    amount: tuple[float, float] = (0.001, 0.1)  # salt, pepper, s&p coverage
    camera_iso: tuple[float, float] = (100.0, 6400.0)
    # Clip noisy images to [0, 1]. Published tables use unclipped gaussian noise.
    clip: bool = True
    # How often `random` picks each of `kinds` (one positive weight per kind, in the same
    # order); empty = all equally often. Mixes draw their 2-3 kinds by the same weights.
    kind_weights: tuple[float, ...] = ()


@dataclass(frozen=True)
class ModelConfig:
    # Generator family (models.py): `unet` (pixel-unshuffle stem, blocks per scale, additive
    # skips; FFDNet / DRUNet style) or `autoencoder` (the paper's: one conv + BatchNorm per
    # scale, mirrored by transposed convs).
    generator: str = field(default="unet", metadata=_choices("unet", "autoencoder"))
    # Filters per scale; the decoder mirrors them.
    gen_filters: tuple[int, ...] = (32, 64, 128, 256)
    # Downsampling into each scale (the first is 1).
    gen_strides: tuple[int, ...] = (1, 2, 2, 2)
    gen_kernel: int = field(default=3, metadata=_range(1, 15))
    # unet: pixel-unshuffle factor of the stem (FFDNet's reversible downsampling; 1 = none).
    stem: int = field(default=2, metadata=_choices(1, 2, 4))
    # unet: blocks per scale (the deepest scale's are shared between encoder and decoder).
    blocks: int = field(default=2, metadata=_range(0, 64))
    # unet: `res` (x + conv(relu(conv(x))), DRUNet's) or `conv` (relu(conv(x)), FFDNet's).
    block: str = field(default="res", metadata=_choices("res", "conv"))
    # unet: normalisation after each convolution of a block.
    norm: str = field(default="none", metadata=_choices("none", "batch"))
    # unet: convolutions with a bias (DRUNet has none).
    bias: bool = True
    # autoencoder: width of the dense bottleneck (0 = none). The paper's is over-complete: 3500.
    latent: int = field(default=0, metadata=_range(0, 1_000_000))
    # autoencoder: U-Net skip connections from each encoder block to its mirror.
    skips: bool = True
    # autoencoder: predict the noise and subtract it, instead of the clean image (unet always does).
    residual: bool = True
    # Feed the noise-parameter vector as constant feature maps (FFDNet-style).
    condition: bool = True
    disc_filters: tuple[int, ...] = (64, 128, 128, 256)
    disc_strides: tuple[int, ...] = (2, 2, 2, 2)
    disc_kernel: int = field(default=3, metadata=_range(1, 15))
    leaky_slope: float = field(default=0.2, metadata=_range(0.0, 1.0))


@dataclass(frozen=True)
class TrainConfig:
    # GAN steps after pretraining; the run's length.
    steps: int = field(default=2000, metadata=_range(0, None))
    pretrain_g_steps: int = field(default=500, metadata=_range(0, None))
    pretrain_d_steps: int = field(default=100, metadata=_range(0, None))
    # Per batch: n discriminator steps, then m generator steps.
    d_steps: int = field(default=1, metadata=_range(1, 100))
    g_steps: int = field(default=1, metadata=_range(1, 100))
    # The generator's optimizer (the discriminator's is Adam with beta_1 = 0.5).
    optimizer: str = field(default="adam", metadata=_choices("adam", "adamw", "rmsprop"))
    # Peak learning rates. G's follows `schedule` over all its updates (pretraining + GAN).
    lr_g: float = field(default=1e-3, metadata=_range(0.0, 1.0))
    lr_d: float = field(default=1e-4, metadata=_range(0.0, 1.0))
    # `cosine`: linear warm-up for `warmup_steps`, then cosine decay to `lr_min`.
    schedule: str = field(default="cosine", metadata=_choices("cosine", "constant"))
    warmup_steps: int = field(default=200, metadata=_range(0, None))
    lr_min: float = field(default=1e-5, metadata=_range(0.0, 1.0))
    # Decoupled weight decay, for `adamw`.
    weight_decay: float = field(default=1e-4, metadata=_range(0.0, 1.0))
    # Rescale G's gradients to at most this global norm (0 = off).
    clip_norm: float = field(default=0.0, metadata=_range(0.0, None))
    # Decay of the exponential moving average of G's weights (0 = off). Evaluation,
    # checkpoints' exported generator and `distgan export` use the average.
    ema: float = field(default=0.999, metadata=_range(0.0, 0.999999))
    # Generator loss = loss(denoised, clean) + adv_weight * BCE + l1_weight * L1.
    loss: str = field(default="mse", metadata=_choices("mse", "l1", "charbonnier"))
    adv_weight: float = field(default=1e-3, metadata=_range(0.0, None))
    l1_weight: float = field(default=0.0, metadata=_range(0.0, None))
    # Arithmetic of G and D: `bfloat16` is mixed (float32 weights), `auto` picks it where
    # the GPU or CPU (AVX512-BF16 / AMX) has bfloat16 units.
    precision: str = field(default="float32", metadata=_choices("float32", "bfloat16", "auto"))
    # Labels are smoothed and flipped by up to this much (uniform noise on the targets).
    label_noise: float = field(default=0.1, metadata=_range(0.0, 0.5))
    xla: bool = False
    log_every: int = field(default=10, metadata=_range(1, None))
    eval_every: int = field(default=200, metadata=_range(1, None))
    checkpoint_every: int = field(default=200, metadata=_range(1, None))
    keep_checkpoints: int = field(default=3, metadata=_range(1, 1000))
    # Also keep the checkpoint with the best held-out PSNR (checkpoints/best.json names it).
    keep_best: bool = True
    # Stop when a held-out evaluation's PSNR falls this many dB below the run's best (0 =
    # never): a divergence whose loss stays finite. Armed once the best beats the noisy input.
    divergence_db: float = field(default=5.0, metadata=_range(0.0, None))
    # Start from trained weights instead of random ones (fine-tuning): `shipped`, a run
    # folder, a checkpoint folder or a `.keras` file from `distgan export`. G and its average
    # start from the model's (averaged) weights, D from the checkpoint's where it has one of
    # this model.disc_* shape; the step, the optimizers and the schedule start afresh. On a
    # cluster a path must be one every worker can read; `shipped` always is.
    init_from: str = ""


@dataclass(frozen=True)
class ParallelConfig:
    # Device placement inside one worker.
    mode: str = field(default="single", metadata=_choices("single", "mirrored", "split"))
    # For `split`: where the encoder, decoder and discriminator run.
    encoder_device: str = "GPU:0"
    decoder_device: str = "GPU:1"
    discriminator_device: str = "GPU:2"


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = field(default=1, metadata=_range(1, 10_000))
    use_gpu: bool = False
    cpus_per_worker: float = field(default=1.0, metadata=_range(0.0, 1024))
    gpus_per_worker: float = field(default=0.0, metadata=_range(0.0, 64))
    # CPUs kept free of trainers so that Ray Data can always run.
    reserved_data_cpus: float = field(default=1.0, metadata=_range(0.0, 100_000))
    max_failures: int = field(default=0, metadata=_range(-1, 1000))
    # Where Ray Train keeps checkpoints: a local folder (default: run.dir/ray), s3:// or NFS.
    storage_path: str = ""


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    # Where the run writes config.yaml, checkpoints/, samples/, metrics.jsonl, tb/.
    dir: str = "runs/default"
    seed: int = field(default=0, metadata=_range(0, 2**32 - 1))
    tensorboard: bool = True
    progress: bool = True


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    noise: NoiseConfig = NoiseConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    parallel: ParallelConfig = ParallelConfig()
    scaling: ScalingConfig = ScalingConfig()
    run: RunConfig = RunConfig()

    def replace(self, **sections: Any) -> Config:
        """Return a copy with `section={key: value}` updates, validated."""
        return from_dict(deep_update(to_dict(self), sections), source="<replace>")


# ---------------------------------------------------------------- conversion


def to_dict(cfg: Any) -> dict:
    """Plain nested dict of builtins (tuples become lists), ready for YAML or JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def deep_update(base: dict, updates: dict) -> dict:
    out = dict(base)
    for k, v in updates.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        t = _hints(cls)[f.name]
        keys += _all_keys(t, name + ".") if dataclasses.is_dataclass(t) else [name]
    return keys


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str) -> str:
    near = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5)
    if not near:
        leaf = key.rsplit(".", 1)[-1]
        near = [k for k in _all_keys() if k.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean '{near[0]}'?" if near else ""


def _coerce(value: Any, typ: Any, key: str, where: str) -> Any:
    """Check `value` against the annotation `typ`, converting where YAML is loose."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: '{key}' must be {expected}, got {value!r}")

    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if typ is float:
        if isinstance(value, bool):
            raise bad("a number")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # PyYAML reads 1e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if typ is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if origin is tuple:
        args = typing.get_args(typ)
        if isinstance(value, str):  # `--set model.gen_strides=1,2` without brackets
            value = [yaml.safe_load(v) for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise bad("a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key, where) for v in value)
        if len(value) != len(args):
            raise bad(f"a list of {len(args)} values")
        return tuple(_coerce(v, a, key, where) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        raise bad(str(typ))  # no union-typed fields today
    raise bad(str(typ))


def _check_meta(value: Any, f: dataclasses.Field, key: str, where: str) -> None:
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        opts = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{where}: '{key}' must be one of {opts}, got {value!r}")
    if "range" in meta:
        lo, hi = meta["range"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            span = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ConfigError(f"{where}: '{key}' = {value!r} is out of range {span}")


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: '{prefix.rstrip('.') or 'config'}' must be a mapping")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = prefix + str(k)
        if k not in names:
            # A misspelt section: suggest from its first key, e.g. modle.latent -> model.latent
            probe = f"{key}.{next(iter(v))}" if isinstance(v, dict) and v else key
            shown = key if probe == key else f"{key}' (in '{probe}"
            raise ConfigError(f"{where}: unknown key '{shown}'{_suggest(probe)}")
        t = hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v, key + ".", where)
        else:
            kwargs[k] = _coerce(v, t, key, where)
            _check_meta(kwargs[k], names[k], key, where)
    return cls(**kwargs)


def _validate(cfg: Config, where: str) -> None:
    m, n = cfg.model, cfg.noise
    if len(m.gen_strides) != len(m.gen_filters):
        raise ConfigError(f"{where}: 'model.gen_strides' needs one stride per 'model.gen_filters'")
    if len(m.disc_strides) != len(m.disc_filters):
        raise ConfigError(
            f"{where}: 'model.disc_strides' needs one stride per 'model.disc_filters'"
        )
    down = m.stem if m.generator == "unet" else 1
    for s in m.gen_strides:
        down *= s
    if cfg.data.chunk % down:
        raise ConfigError(
            f"{where}: 'data.chunk' = {cfg.data.chunk} is not divisible by the generator's "
            f"total stride {down} (product of 'model.gen_strides'"
            f"{' and model.stem' if m.generator == 'unet' else ''})"
        )
    if m.generator == "unet":
        if m.gen_strides[0] != 1:
            raise ConfigError(f"{where}: 'model.gen_strides' must start with 1 for the unet "
                              f"generator (model.stem downsamples the input)")
        if 16 % down:
            raise ConfigError(f"{where}: the unet's total downsampling (model.stem x "
                              f"model.gen_strides) is {down}; it must divide 16")
        if m.latent:
            raise ConfigError(f"{where}: 'model.latent' is for the autoencoder generator; "
                              f"the unet has none (set model.latent=0)")
    t = cfg.train
    if t.precision == "bfloat16" and m.generator != "unet":
        raise ConfigError(f"{where}: 'train.precision' = 'bfloat16' needs model.generator=unet "
                          f"(the paper's autoencoder trains in float32)")
    if t.schedule == "cosine" and t.lr_min > t.lr_g:
        raise ConfigError(f"{where}: 'train.lr_min' ({t.lr_min:g}) is above 'train.lr_g' "
                          f"({t.lr_g:g}); cosine decay goes down to lr_min")
    for kind in n.kinds:
        if kind not in NOISE_KINDS:
            raise ConfigError(
                f"{where}: 'noise.kinds' has unknown kind {kind!r}; known: {', '.join(NOISE_KINDS)}"
            )
    if not n.kinds:
        raise ConfigError(f"{where}: 'noise.kinds' must name at least one kind")
    if n.kind_weights and (len(n.kind_weights) != len(n.kinds)
                           or not all(w > 0 for w in n.kind_weights)):
        raise ConfigError(f"{where}: 'noise.kind_weights' needs one weight > 0 per kind of "
                          f"'noise.kinds' ({len(n.kinds)}: {', '.join(n.kinds)}), or none")
    for name in ("gaussian_sigma", "poisson_peak", "speckle_var", "amount", "camera_iso"):
        lo, hi = getattr(n, name)
        if not 0 <= lo <= hi:
            raise ConfigError(f"{where}: 'noise.{name}' must be [low, high] with 0 <= low <= high")
    if n.poisson_peak[0] <= 0 or n.camera_iso[0] <= 0:
        raise ConfigError(f"{where}: 'noise.poisson_peak' and 'noise.camera_iso' must be > 0")
    if n.amount[1] > 1:
        raise ConfigError(f"{where}: 'noise.amount' is a fraction of pixels, at most 1")


def from_dict(data: dict, source: str = "<dict>") -> Config:
    cfg = _build(Config, data or {}, "", source)
    _validate(cfg, source)
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.steps=100` -> (['train', 'steps'], 100), values typed by YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None:
        value = raw
    return key.split("."), value


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read `path` (YAML; None means all defaults) and apply `--set` style overrides."""
    where = str(path) if path else "<defaults>"
    data: dict = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: '{k}' is not a section")
        node[keys[-1]] = value
        where = f"{where} (with --set)" if "--set" not in where else where
    return from_dict(data, where)


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """The resolved config as YAML; written to `path` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def add_config_args(p: argparse.ArgumentParser, help_text: str = "YAML config (configs/*.yaml)") -> None:
    """--config and --set, as every command that reads a config takes them."""
    p.add_argument("--config", "-c", default=None, help=help_text)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value; repeatable (e.g. --set train.steps=100)",
    )

"""Procedural noise synthesis: pure numpy and scikit-image, explicit `np.random.Generator`.

Spec strings (levels are numbers):

    gaussian:S        additive gaussian, std S on the 0-255 scale, clipped to [0, 1]
    gaussian:S:unclipped   the same without clipping, as the FFDNet/DPIR/SwinIR tables use
    poisson:P         shot noise with P photons at full white (lower P = noisier)
    speckle:V         multiplicative gaussian, x + x*n with var(n) = V
    salt:A, pepper:A, s&p:A   fraction A of the pixels set to 1, 0, or either
    camera:ISO        Poisson-Gaussian sensor noise in linear light: inverse sRGB
                      gamma -> shot + read noise -> sRGB gamma; higher ISO = noisier
    mix:K:L+K:L[+K:L] 2-3 of the above, applied in the order given
    random            drawn from a `NoiseConfig`'s kinds and ranges (see `sample_spec`)

`add_noise` returns the noisy image and a parameter vector of `len(NOISE_KINDS)` float32
slots, one per kind in `NOISE_KINDS` order, each holding that kind's intensity normalised
to [0, 1] (0 = kind absent). The normalisations are in `normalised_level`:

    gaussian  S / 100                   (S on 0-255)
    poisson   1 / sqrt(P)               (relative shot-noise std at full white)
    speckle   sqrt(V)
    salt, pepper, s&p   A
    camera    log2(ISO / 50) / 10       (ISO 100 -> 0.1, ISO 51200 -> 1)

each clipped to [0, 1]. A model conditioned on this vector can be told the noise at
inference time, or given an estimate.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np
from skimage.util import random_noise

from .config import NOISE_KINDS, NoiseConfig
from .errors import UserError

N_PARAMS = len(NOISE_KINDS)
MAX_PARTS = 3  # a mix has 2 or 3

# Sensor model for `camera`: photons at full white at ISO 100 and read noise in electrons.
_CAMERA_FULL_WELL_ISO100 = 4_000.0
_CAMERA_READ_ELECTRONS = 2.0


class NoiseSpecError(UserError, ValueError):
    """A noise spec string that cannot be parsed; the message lists the accepted forms."""


@dataclass(frozen=True)
class NoiseSpec:
    """A concrete noise recipe: (kind, level) parts applied in order.

    `parts == ()` means `random`: the parts are drawn per image by `sample_spec`.
    """

    parts: tuple[tuple[str, float], ...] = ()
    clip: bool = True

    @property
    def is_random(self) -> bool:
        return not self.parts

    def __str__(self) -> str:
        if self.is_random:
            return "random"
        body = "+".join(f"{k}:{_fmt(v)}" for k, v in self.parts)
        body = body if len(self.parts) == 1 else "mix:" + body
        return body + ("" if self.clip else ":unclipped")


def _fmt(v: float) -> str:
    return f"{v:.6g}"


_FORMS = (
    "gaussian:25, gaussian:25:unclipped, poisson:30, speckle:0.02, salt:0.02, pepper:0.02, "
    "s&p:0.05, camera:1600, mix:gaussian:15+s&p:0.02, random"
)


def parse_spec(text: str) -> NoiseSpec:
    """Parse a spec string such as ``gaussian:25`` or ``mix:gaussian:15+s&p:0.02``."""
    raw = text
    text = text.strip().lower()
    if text == "random":
        return NoiseSpec()
    clip = True
    if text.endswith(":unclipped"):
        clip, text = False, text[: -len(":unclipped")]
    mixed = text.startswith("mix:")
    body = text[4:] if mixed else text
    pieces = body.split("+")
    if mixed and not 2 <= len(pieces) <= MAX_PARTS:
        raise NoiseSpecError(f"noise spec {raw!r}: a mix has 2 or 3 parts; accepted: {_FORMS}")
    if not mixed and len(pieces) != 1:
        raise NoiseSpecError(f"noise spec {raw!r}: write several kinds as mix:A+B; accepted: {_FORMS}")
    parts = []
    for piece in pieces:
        m = re.fullmatch(r"\s*([a-z&]+)\s*:\s*([0-9.eE+-]+)\s*", piece)
        if not m or m.group(1) not in NOISE_KINDS:
            raise NoiseSpecError(f"noise spec {raw!r}: cannot read {piece!r}; accepted: {_FORMS}")
        kind = m.group(1)
        try:
            level = float(m.group(2))
        except ValueError:
            raise NoiseSpecError(f"noise spec {raw!r}: {m.group(2)!r} is not a number") from None
        _check_level(kind, level, raw)
        parts.append((kind, level))
    return NoiseSpec(tuple(parts), clip)


def _check_level(kind: str, level: float, raw: str) -> None:
    ok = math.isfinite(level) and {
        "gaussian": level >= 0,
        "poisson": level > 0,
        "speckle": level >= 0,
        "camera": level > 0,
    }.get(kind, 0 <= level <= 1)
    if not ok:
        want = {"poisson": "> 0", "camera": "> 0", "gaussian": ">= 0", "speckle": ">= 0"}
        raise NoiseSpecError(
            f"noise spec {raw!r}: level for {kind} must be {want.get(kind, 'in [0, 1]')}"
        )


# kind -> its level's normalisation (see module docstring), before the clip to [0, 1]; the
# kinds not named keep their level. Each works on a float or an array of them.
_NORMALISE = {
    "gaussian": lambda s: s / 100.0,
    "poisson": lambda p: 1.0 / np.sqrt(p),
    "speckle": np.sqrt,
    "camera": lambda iso: np.log2(np.maximum(iso, 1e-9) / 50.0) / 10.0,
}


def normalised_level(kind: str, level: float) -> float:
    """Map a kind's native level to [0, 1] for conditioning (see module docstring)."""
    f = _NORMALISE.get(kind)
    return float(min(max(f(float(level)) if f else float(level), 0.0), 1.0))


def normalised_levels(kinds: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """`normalised_level` elementwise, float64; kinds are positions in NOISE_KINDS."""
    kinds, v = np.asarray(kinds), np.array(levels, np.float64)
    for kind, f in _NORMALISE.items():
        these = kinds == NOISE_KINDS.index(kind)
        if these.any():
            v[these] = f(v[these])
    return np.clip(v, 0.0, 1.0)


def params_of(spec: NoiseSpec) -> np.ndarray:
    """The conditioning vector of a concrete spec: per kind, the largest of its parts'
    normalised levels."""
    params = np.zeros(N_PARAMS, np.float32)
    for kind, level in spec.parts:
        i = NOISE_KINDS.index(kind)
        params[i] = max(params[i], normalised_level(kind, level))
    return params


def impulse_thresholds(amount) -> np.ndarray:
    """Impulse probabilities as thresholds on a uint32 draw: amount * 2^32."""
    return np.minimum(np.asarray(amount, np.float64) * 2.0**32, 2.0**32 - 1).astype(np.uint32)


@dataclass(frozen=True)
class SpecArrays:
    """n concrete specs as arrays, for code that noises many crops at once.

    kinds: (n, MAX_PARTS) int32, each spec's parts as positions in NOISE_KINDS in the
    order they are applied, -1 past its last part; levels: (n, MAX_PARTS) float64, 0 past
    the last part; clip: (n,) bool.
    """

    kinds: np.ndarray
    levels: np.ndarray
    clip: np.ndarray

    @classmethod
    def of(cls, specs) -> SpecArrays:
        n = len(specs)
        kinds, levels = np.full((n, MAX_PARTS), -1, np.int32), np.zeros((n, MAX_PARTS))
        for i, s in enumerate(specs):
            if s.is_random:
                raise ValueError("concrete specs wanted (draw `random` with sample_spec)")
            for j, (kind, level) in enumerate(s.parts):
                kinds[i, j], levels[i, j] = NOISE_KINDS.index(kind), level
        return cls(kinds, levels, np.array([s.clip for s in specs], bool))

    def __len__(self) -> int:
        return len(self.kinds)

    def specs(self) -> list[NoiseSpec]:
        kinds, levels, clip = self.kinds.tolist(), self.levels.tolist(), self.clip.tolist()
        return [NoiseSpec(tuple((NOISE_KINDS[k], lv) for k, lv in zip(ks, ls) if k >= 0), c)
                for ks, ls, c in zip(kinds, levels, clip)]

    def take(self, idx) -> SpecArrays:
        return SpecArrays(self.kinds[idx], self.levels[idx], self.clip[idx])

    def params(self) -> np.ndarray:
        """Each spec's conditioning vector, (n, N_PARAMS) float32: per kind, the largest of
        its parts' normalised levels."""
        rows, parts = np.nonzero(self.kinds >= 0)
        kinds = self.kinds[rows, parts]
        params = np.zeros((len(self), N_PARAMS))
        np.maximum.at(params, (rows, kinds), normalised_levels(kinds, self.levels[rows, parts]))
        return params.astype(np.float32)

    def labels(self) -> np.ndarray:
        """What the stats count: the kind's name for one part, 'mix' for more."""
        names = np.array(NOISE_KINDS)[np.maximum(self.kinds[:, 0], 0)]
        return np.where(self.kinds[:, 1] >= 0, "mix", names)


def _ranges(cfg: NoiseConfig) -> dict[str, tuple[float, float, bool]]:
    """kind -> (low, high, log-uniform): poisson photon counts and camera ISO span orders of
    magnitude and are drawn log-uniformly; the other levels uniformly."""
    return {
        "gaussian": (*cfg.gaussian_sigma, False),
        "poisson": (*cfg.poisson_peak, True),
        "speckle": (*cfg.speckle_var, False),
        "salt": (*cfg.amount, False),
        "pepper": (*cfg.amount, False),
        "s&p": (*cfg.amount, False),
        "camera": (*cfg.camera_iso, True),
    }


def sample_spec(cfg: NoiseConfig, rng: np.random.Generator) -> NoiseSpec:
    """Draw a concrete spec: one kind, or with probability `mix_prob` a mix of 2-3 kinds,
    each at a level drawn from its range (see `_ranges`)."""
    kinds = list(cfg.kinds)
    n = 1
    if len(kinds) > 1 and rng.random() < cfg.mix_prob:
        n = int(rng.integers(2, min(3, len(kinds)) + 1))
    p = np.asarray(cfg.kind_weights, float) if cfg.kind_weights else None
    chosen = [kinds[i] for i in rng.choice(len(kinds), size=n, replace=False,
                                           p=None if p is None else p / p.sum())]
    ranges = _ranges(cfg)
    parts = []
    for k in chosen:
        lo, hi, log = ranges[k]
        level = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
        parts.append((k, float(level)))
    return NoiseSpec(tuple(parts), cfg.clip)


@functools.lru_cache(maxsize=16)
def _draw_tables(cfg: NoiseConfig) -> tuple[np.ndarray, ...]:
    """For each of cfg.kinds, read-only: the ends of its level range (their logs where it is
    drawn log-uniformly), whether it is, and its position in NOISE_KINDS."""
    ranges = _ranges(cfg)
    lo, hi, log = (np.array([ranges[k][i] for k in cfg.kinds], np.float64) for i in range(3))
    log = log.astype(bool)
    np.log(lo, out=lo, where=log)  # only where drawn log-uniformly: a 0 lower bound is fine
    np.log(hi, out=hi, where=log)
    positions = np.array([NOISE_KINDS.index(k) for k in cfg.kinds], np.int32)
    for a in (lo, hi, log, positions):
        a.setflags(write=False)
    return lo, hi, log, positions


def draw_specs(cfg: NoiseConfig, rng: np.random.Generator, n: int) -> SpecArrays:
    """n specs distributed as `sample_spec`'s, drawn with a few array calls (the data
    pipeline draws one per crop; one at a time costs ~13 us each)."""
    try:
        lo, hi, log, positions = _draw_tables(cfg)
    except TypeError:  # a config built in code with a list in it: not hashable, not cached
        lo, hi, log, positions = _draw_tables.__wrapped__(cfg)
    m = len(positions)
    counts = np.ones(n, np.int64)
    if m > 1:
        mixed = rng.random(n) < cfg.mix_prob
        counts[mixed] = rng.integers(2, min(3, m) + 1, size=int(mixed.sum()))
    if cfg.kind_weights:  # a weighted random order: keys u^(1/w), largest first
        keys = np.log(rng.random((n, m))) / np.asarray(cfg.kind_weights, float)
        picks = np.argsort(-keys, axis=1)[:, :MAX_PARTS]
    else:
        picks = np.argsort(rng.random((n, m)), axis=1)[:, :MAX_PARTS]  # a random order
    lo, hi, log = lo[picks], hi[picks], log[picks]
    levels = lo + rng.random(picks.shape) * (hi - lo)
    np.exp(levels, out=levels, where=log)
    used = np.arange(MAX_PARTS) < counts[:, None]
    out_kinds = np.full((n, MAX_PARTS), -1, np.int32)
    out_levels = np.zeros((n, MAX_PARTS))
    cols = picks.shape[1]
    positions = positions[picks]
    out_kinds[:, :cols] = np.where(used[:, :cols], positions, -1)
    out_levels[:, :cols] = np.where(used[:, :cols], levels, 0.0)
    return SpecArrays(out_kinds, out_levels, np.full(n, cfg.clip, bool))


def sample_specs(cfg: NoiseConfig, rng: np.random.Generator, n: int) -> list[NoiseSpec]:
    """`draw_specs` as a list of specs."""
    return draw_specs(cfg, rng, n).specs()


# sRGB transfer functions (IEC 61966-2-1)
def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.maximum(x, 0.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _apply(x: np.ndarray, kind: str, level: float, rng: np.random.Generator, clip: bool):
    if kind == "gaussian":
        if level == 0:
            return x
        return random_noise(x, mode="gaussian", rng=rng, var=(level / 255.0) ** 2, clip=clip)
    if kind == "speckle":
        if level == 0:
            return x
        return random_noise(x, mode="speckle", rng=rng, var=level, clip=clip)
    if kind in ("salt", "pepper", "s&p"):
        if level == 0:
            return x
        return random_noise(x, mode=kind, rng=rng, amount=level)
    if kind == "poisson":
        # skimage's poisson mode infers the photon count from the number of unique values;
        # here the count is the spec's level, so the intensity is explicit and testable.
        out = rng.poisson(np.clip(x, 0, None) * level) / level
        return np.clip(out, 0, 1) if clip else out
    if kind == "camera":
        peak = _CAMERA_FULL_WELL_ISO100 * 100.0 / level
        lin = srgb_to_linear(np.clip(x, 0, 1)) * peak  # electrons
        lin = rng.poisson(lin) + rng.normal(0.0, _CAMERA_READ_ELECTRONS, x.shape)
        out = linear_to_srgb(lin / peak)
        return np.clip(out, 0, 1) if clip else out
    raise NoiseSpecError(f"unknown noise kind {kind!r}")


def add_noise(
    image: np.ndarray,
    spec: NoiseSpec | str,
    rng: np.random.Generator,
    cfg: NoiseConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add noise to `image` (float in [0, 1], H x W x C).

    Args:
        image: float array in [0, 1]; H x W or H x W x C.
        spec: a `NoiseSpec` or spec string; `random` draws one from `cfg` (default ranges).
        rng: the only source of randomness: the same generator state gives the same output.
        cfg: ranges for `random`.

    Returns:
        (noisy, params): noisy float32 of the same shape, in [0, 1] unless the spec is
        unclipped; params float32 of length `N_PARAMS` (see module docstring).
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if spec.is_random:
        spec = sample_spec(cfg or NoiseConfig(), rng)
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"add_noise wants a float image in [0, 1], got dtype {image.dtype}")
    out = image
    for kind, level in spec.parts:
        out = _apply(out, kind, level, rng, spec.clip)
    return np.asarray(out, np.float32), params_of(spec)

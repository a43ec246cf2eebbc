"""Checkpoints: one folder per save, written atomically, the last K kept (and the best).

    ckpt-00001200/
        generator.weights.h5       G (encoder + decoder) weights, as trained
        generator_ema.weights.h5   their moving average (with train.ema > 0): what
                                   evaluation, export and denoise use
        discriminator.weights.h5   D weights
        optimizers.npz             both optimizers' variables (iterations, slots)
        config.yaml                the resolved config the run used
        state.json                 step, phase, seed, wall time, CPU time, and each file's
                                   size and SHA-256

The folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint where `latest` would find it. A copy cut short or changed
later (a full disk, a killed `cp`, a bad sector) no longer matches the sizes and checksums
in its state.json: `latest_valid` skips it with one warning and moves it into
`checkpoints/damaged/`, where the rotation no longer counts it and nothing deletes it.
`best.json` names the checkpoint with the best held-out PSNR, which the rotation keeps.
The same folder is what Ray Train reports (`ray.train.Checkpoint.from_directory`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .config import Config, dump_config, load_config, to_dict
from .errors import UserError

log = logging.getLogger("distgan.checkpoint")

_NAME = re.compile(r"^ckpt-(\d+)$")
DAMAGED = "damaged"
BEST = "best.json"
EMA_WEIGHTS = "generator_ema.weights.h5"


class CheckpointError(UserError):
    """A checkpoint that is missing, damaged, or does not fit the model."""


def checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder` (a state.json in place), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest(folder: str | Path) -> Path | None:
    """The newest complete checkpoint, unchecked (see `latest_valid`)."""
    found = checkpoints(folder)
    return found[-1] if found else None


# ------------------------------------------------------------------ validity


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest(folder: Path) -> dict[str, dict]:
    return {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != "state.json"}


def damage(ckpt: str | Path) -> str | None:
    """Why `ckpt` cannot be used, in a few words, or None when it is whole: every file its
    state.json lists is there with the recorded size and checksum."""
    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except FileNotFoundError:
        return "state.json is missing"
    except (OSError, ValueError):
        return "state.json is unreadable"
    files = state.get("files")
    if not isinstance(files, dict):  # written before manifests: the files must be there
        files = {n: None for n in ("generator.weights.h5", "discriminator.weights.h5",
                                   "optimizers.npz", "config.yaml")}
    for name, meta in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if meta is None:
            continue
        size = path.stat().st_size
        if size < meta["bytes"]:
            return f"{name} is truncated ({size:,} of {meta['bytes']:,} bytes)"
        if size != meta["bytes"]:
            return f"{name} has {size:,} bytes where {meta['bytes']:,} were written"
        if _sha256(path) != meta["sha256"]:
            return f"{name} is corrupt (its checksum differs from the one saved)"
    return None


def set_aside(ckpt: Path) -> Path | None:
    """Move a damaged checkpoint into checkpoints/damaged/ (never deleted); None where the
    folder is read-only."""
    target = ckpt.parent / DAMAGED / ckpt.name
    try:
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            target = target.with_name(f"{ckpt.name}-{int(time.time())}")
        os.replace(ckpt, target)
    except OSError:
        return None
    return target


def latest_valid(folder: str | Path, purpose: str = "using") -> Path | None:
    """The newest checkpoint that is whole. Each damaged one newer than it gets one warning
    line that names it, says why and what is used instead, and is set aside."""
    found = checkpoints(folder)
    bad: list[tuple[Path, str]] = []
    good = None
    for ckpt in reversed(found):
        why = damage(ckpt)
        if why is None:
            good = ckpt
            break
        bad.append((ckpt, why))
    for ckpt, why in bad:
        moved = set_aside(ckpt)
        where = f"moved to {DAMAGED}/" if moved else "left in place (read-only)"
        instead = f"{purpose} {good.name}" if good else "no valid checkpoint is left"
        log.warning("%s is damaged: %s; %s; %s", ckpt.name, why, where, instead)
    return good


def resolve(path: str | Path, purpose: str = "using") -> Path:
    """A run folder, its checkpoints/ folder, or one checkpoint -> one valid checkpoint."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such folder")
    if (p / "state.json").exists():
        why = damage(p)
        if why:
            raise CheckpointError(f"{p} is damaged: {why}; pass its run folder to use the "
                                  f"newest valid checkpoint instead")
        return p
    for cand in (p / "checkpoints", p):
        if checkpoints(cand):
            found = latest_valid(cand, purpose)
            if found is None:
                raise CheckpointError(f"{cand}: no valid checkpoint left (the damaged ones "
                                      f"are in {cand / DAMAGED})")
            return found
    raise CheckpointError(f"{p}: no checkpoint found (expected a run folder or a ckpt-N folder)")


def best(folder: str | Path) -> dict | None:
    """{step, psnr, name} of the checkpoint with the best held-out PSNR, if recorded."""
    path = Path(folder) / BEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def mark_best(folder: str | Path, ckpt: Path, psnr: float) -> None:
    """Record `ckpt` as the best so far; the rotation keeps it."""
    data = {"name": ckpt.name, "step": read_state(ckpt)["step"], "psnr": psnr}
    tmp = Path(folder) / f".{BEST}.tmp"
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, Path(folder) / BEST)


def prune(folder: Path, keep: int) -> None:
    """Delete all but the last `keep` checkpoints and the best one."""
    b = best(folder)
    for old in checkpoints(folder)[:-keep]:
        if b is None or old.name != b.get("name"):
            shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ save / restore


def _opt_arrays(opt, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(opt.variables)}


def save(trainer, folder: str | Path, keep: int, extra: dict | None = None) -> Path:
    """Write trainer state as ckpt-<step> in `folder`, atomically; prune to the last `keep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    step = int(trainer.step.numpy())
    final = folder / f"ckpt-{step:08d}"
    tmp = folder / f".tmp-ckpt-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainer.generator.save_weights(tmp / "generator.weights.h5")
    if trainer.ema_generator is not trainer.generator:
        trainer.ema_generator.save_weights(tmp / EMA_WEIGHTS)
    trainer.discriminator.save_weights(tmp / "discriminator.weights.h5")
    np.savez(tmp / "optimizers.npz", **_opt_arrays(trainer.g_opt, "g"), **_opt_arrays(trainer.d_opt, "d"))
    dump_config(trainer.cfg, tmp / "config.yaml")
    state = {"step": step, "seed": trainer.cfg.run.seed, "time": time.time(), **(extra or {}),
             "files": _manifest(tmp)}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    prune(folder, keep)
    return final


def read_state(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / "state.json").read_text())


def read_config(ckpt: str | Path) -> Config:
    path = Path(ckpt) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{ckpt}: incomplete checkpoint (no config.yaml)")
    return load_config(path)


def generator_weights(ckpt: str | Path) -> Path:
    """The weights to denoise with: the moving average where the run kept one."""
    ckpt = Path(ckpt)
    ema = ckpt / EMA_WEIGHTS
    return ema if ema.exists() else ckpt / "generator.weights.h5"


def config_differences(a: Config, b: Config, sections: tuple[str, ...] = ("model", "data")) -> list[str]:
    """'section.key: x != y' for every differing key of the given sections."""
    da, db = to_dict(a), to_dict(b)
    out = []
    for sec in sections:
        for k in da[sec]:
            if da[sec][k] != db[sec].get(k):
                out.append(f"{sec}.{k}: {db[sec].get(k)!r} in the checkpoint, {da[sec][k]!r} here")
    return out


def restore(trainer, ckpt: str | Path) -> int:
    """Load G (and its average), D, both optimizers (all but their learning rates) and the
    step from `ckpt`; return the step. A checkpoint of another model config is refused with
    the differing keys named; a damaged one with the file named."""
    ckpt = Path(ckpt)
    why = damage(ckpt)
    if why:
        raise CheckpointError(f"{ckpt} is damaged: {why}")
    try:
        saved = read_config(ckpt)
    except UserError as e:
        raise CheckpointError(f"{ckpt}: its config.yaml is unreadable ({e})") from None
    diff = [d for d in config_differences(trainer.cfg, saved) if d.startswith("model.")
            or d.startswith("data.chunk")]
    if diff:
        raise CheckpointError(f"{ckpt} is from another model config: " + "; ".join(diff))
    try:
        trainer.generator.load_weights(ckpt / "generator.weights.h5")
        if trainer.ema_generator is not trainer.generator:
            trainer.ema_generator.load_weights(generator_weights(ckpt))
        trainer.discriminator.load_weights(ckpt / "discriminator.weights.h5")
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{ckpt}: cannot read its weights ({str(e).splitlines()[0][:200]})") from None
    with np.load(ckpt / "optimizers.npz") as arrays:
        for prefix, opt in (("g", trainer.g_opt), ("d", trainer.d_opt)):
            names = sorted(k for k in arrays.files if k.startswith(prefix))
            if len(names) != len(opt.variables):
                raise CheckpointError(f"{ckpt}: its optimizer state does not fit this run's "
                                      f"train.optimizer ({len(names)} variables saved, "
                                      f"{len(opt.variables)} here)")
            for name, var in zip(names, opt.variables):
                # The learning rate is the config's, not the checkpoint's: lowering
                # train.lr_g/lr_d on --resume is how a run is fine-tuned.
                if not var.path.endswith("/learning_rate"):
                    var.assign(arrays[name])
    state = read_state(ckpt)
    trainer.step.assign(state["step"])
    # Time already spent, so that a resumed run's learning curve goes on from it.
    trainer.spent = {k: float(state.get(k, 0.0)) for k in ("cpu_s", "wall_s")}
    return state["step"]

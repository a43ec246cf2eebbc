"""Checkpoints: one folder per save, written atomically, the last K kept.

    ckpt-00001200/
        generator.weights.h5       G (encoder + decoder) weights
        discriminator.weights.h5   D weights
        optimizers.npz             both optimizers' variables (iterations, slots)
        state.json                 step, phase, seed, wall time
        config.yaml                the resolved config the run used

The folder is written under a temporary name and renamed into place, so a crash never
leaves a half-written checkpoint where `latest` would find it. The same folder is what
Ray Train reports (`ray.train.Checkpoint.from_directory`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from .config import Config, dump_config, load_config
from .errors import UserError

_NAME = re.compile(r"^ckpt-(\d+)$")


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete, or does not fit the model."""


def checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest(folder: str | Path) -> Path | None:
    found = checkpoints(folder)
    return found[-1] if found else None


def resolve(path: str | Path) -> Path:
    """A run folder, its checkpoints/ folder, or one checkpoint -> one checkpoint folder."""
    p = Path(path)
    if (p / "state.json").exists():
        return p
    for cand in (p / "checkpoints", p):
        found = latest(cand)
        if found:
            return found
    raise CheckpointError(f"{p}: no checkpoint found (expected a run folder or a ckpt-N folder)")


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
    trainer.discriminator.save_weights(tmp / "discriminator.weights.h5")
    np.savez(tmp / "optimizers.npz", **_opt_arrays(trainer.g_opt, "g"), **_opt_arrays(trainer.d_opt, "d"))
    dump_config(trainer.cfg, tmp / "config.yaml")
    state = {"step": step, "seed": trainer.cfg.run.seed, "time": time.time(), **(extra or {})}
    (tmp / "state.json").write_text(json.dumps(state, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / "state.json").read_text())


def read_config(ckpt: str | Path) -> Config:
    path = Path(ckpt) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{ckpt}: incomplete checkpoint (no config.yaml)")
    return load_config(path)


def restore(trainer, ckpt: str | Path) -> int:
    """Load G, D, both optimizers (all but their learning rates) and the step from `ckpt`;
    return the step."""
    ckpt = Path(ckpt)
    try:
        trainer.generator.load_weights(ckpt / "generator.weights.h5")
        trainer.discriminator.load_weights(ckpt / "discriminator.weights.h5")
    except (ValueError, OSError, FileNotFoundError) as e:
        raise CheckpointError(f"{ckpt}: does not fit this model ({e})") from None
    with np.load(ckpt / "optimizers.npz") as arrays:
        for prefix, opt in (("g", trainer.g_opt), ("d", trainer.d_opt)):
            names = sorted(k for k in arrays.files if k.startswith(prefix))
            if len(names) != len(opt.variables):
                raise CheckpointError(f"{ckpt}: optimizer state does not fit this model")
            for name, var in zip(names, opt.variables):
                # The learning rate is the config's, not the checkpoint's: lowering
                # train.lr_g/lr_d on --resume is how a run is fine-tuned.
                if not var.path.endswith("/learning_rate"):
                    var.assign(arrays[name])
    step = read_state(ckpt)["step"]
    trainer.step.assign(step)
    return step

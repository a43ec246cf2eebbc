"""samples/s of the smoke-sized default model in one run: local mode, Ray Train with 1
worker and with 2 workers (0.5 CPU each; 1 CPU always left to Ray Data), and the overhead
ratios against local. Each mode trains the same number of steps; the first checkpoint's
step count and time are subtracted so start-up (Ray, worker processes, tracing) is not
counted as throughput. `--quick` for a short run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit, quick

from distgan.config import load_config


def cfg_for(run: Path, steps: int, *sets):
    return load_config(ROOT / "configs" / "smoke.yaml", [
        f"run.dir={run}", "run.tensorboard=false", "data.chunk=64", "data.batch_size=32",
        "model.gen_filters=[32, 64]", "model.disc_filters=[32, 64]",
        "train.pretrain_g_steps=0", "train.pretrain_d_steps=0", f"train.steps={steps}",
        f"train.checkpoint_every={steps // 4}", f"train.eval_every={10 * steps}", *sets])


def rate(run: Path, batch_global: int) -> float:
    """samples/s between the first and the last checkpoint (their write times)."""
    states = sorted((json.loads((p / "state.json").read_text())
                     for p in (run / "checkpoints").glob("ckpt-*")), key=lambda s: s["step"])
    first, last = states[0], states[-1]
    return (last["step"] - first["step"]) * batch_global / (last["time"] - first["time"])


def main() -> None:
    from distgan.train import train_local, train_ray

    steps = 40 if quick() else 160
    tmp = Path(tempfile.mkdtemp(prefix="bench-dist-"))
    cfg = cfg_for(tmp / "local", steps, "train.keep_checkpoints=10")
    t0 = time.perf_counter()
    train_local(cfg)
    local = rate(tmp / "local", 32)
    emit(bench="distributed", mode="local", samples_per_s=round(local, 1),
         wall_s=round(time.perf_counter() - t0, 1))
    for workers, cpus in ((1, 1.0), (2, 0.5)):
        run = tmp / f"ray{workers}"
        cfg = cfg_for(run, steps, f"scaling.num_workers={workers}",
                      f"scaling.cpus_per_worker={cpus}", "train.keep_checkpoints=10")
        t0 = time.perf_counter()
        train_ray(cfg)
        r = rate(run, 32 * workers)
        emit(bench="distributed", mode=f"ray_train_{workers}w", samples_per_s=round(r, 1),
             ratio_vs_local=round(r / local, 3), wall_s=round(time.perf_counter() - t0, 1),
             cpus_per_worker=cpus)


if __name__ == "__main__":
    main()

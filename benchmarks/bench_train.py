"""Training throughput, one run: samples/s of the G-only (pretraining) step and of the full
GAN step, XLA off and on, for the default model and the paper's model, each with the
fraction of the step spent waiting for data (in-process batches, as --local trains); and
the shipped config's G step (batch 32) in mixed bfloat16 against float32
(`train.precision`), each twice, interleaved. Medians over the timed steps. `--quick` for a
short run; `--bf16` for the bfloat16 lines only, `--bf16 --model NAME` for another config's
(configs/NAME.yaml).
"""

from __future__ import annotations

import statistics
import sys
import time

from _common import ROOT, emit, quick

from distgan.config import load_config
from distgan.data import LocalBatches, open_source
from distgan.train import build_trainer


def measure(cfg_name: str, phase: str, xla: bool, steps: int, precision: str = "float32") -> dict:
    cfg = load_config(ROOT / "configs" / f"{cfg_name}.yaml",
                      [f"train.xla={str(xla).lower()}", "data.source=samples",
                       f"train.precision={precision}"])
    if quick():
        cfg = cfg.replace(data={"batch_size": 8})
    trainer = build_trainer(cfg)
    batches = LocalBatches(cfg, open_source("samples").split(cfg.data.eval_images)[0])
    step_t, wait_t = [], []
    for s in range(steps + 2):  # 2 warm-up steps (tracing, XLA compilation)
        t0 = time.perf_counter()
        b = batches.batch(s)
        t1 = time.perf_counter()
        trainer.train_on(phase, b)
        t2 = time.perf_counter()
        if s >= 2:
            wait_t.append(t1 - t0)
            step_t.append(t2 - t0)
    med = statistics.median(step_t)
    return {"bench": "train", "model": cfg_name, "phase": phase, "xla": xla, "precision": precision,
            "batch": cfg.data.batch_size, "chunk": cfg.data.chunk,
            "samples_per_s": round(cfg.data.batch_size / med, 1),
            "step_s_median": round(med, 4),
            "data_wait_fraction": round(statistics.median(wait_t) / med, 3)}


def bf16_lines(steps: int, model: str = "shipped") -> None:
    runs = {"float32": [], "bfloat16": []}
    for _ in range(2):
        for precision in runs:
            runs[precision].append(measure(model, "pretrain_g", False, steps, precision))
            emit(**runs[precision][-1])
    mid = {p: statistics.median(r["samples_per_s"] for r in rs) for p, rs in runs.items()}
    emit(bench="train", model=model, phase="pretrain_g", bfloat16_speedup=round(
        mid["bfloat16"] / mid["float32"], 3))


def main() -> None:
    steps = 3 if quick() else 10
    if "--bf16" in sys.argv:
        model = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "shipped"
        bf16_lines(steps, model)
        return
    rows = []
    for model in ("default", "paper"):
        for phase in ("pretrain_g", "gan"):
            for xla in (False, True):
                rows.append(measure(model, phase, xla, steps))
                emit(**rows[-1])
    for model in ("default", "paper"):
        for phase in ("pretrain_g", "gan"):
            off, on = (next(r for r in rows if (r["model"], r["phase"], r["xla"]) == (model, phase, x))
                       for x in (False, True))
            emit(bench="train", model=model, phase=phase, xla_speedup=round(
                on["samples_per_s"] / off["samples_per_s"], 2))
    bf16_lines(steps)


if __name__ == "__main__":
    main()

"""Generators and recipes at an equal budget: which one to train, and what more compute buys.

Each candidate (a config in configs/) is trained from scratch for the same number of
training CPU-minutes on the same data (sun80 where ../shared has it, else scikit-image's
sample photos), one after another, each in a fresh process, in local mode. Its steps are
set from a calibration of its own step cost (a few timed steps of each phase it runs), so
that pretraining, D pretraining and the GAN phase keep the proportions of its config and
add up to the budget. Evaluation is left out of the budget (it is timed apart).

All candidates are selected on the same held-out sun80 photos (`data.eval_images`, under
`data.eval_noise`: gaussian sigma 25 and a gaussian + salt-and-pepper mix); the best
checkpoint of each is then reported on Kodak24 at the same two noises. Kodak24 is never
used to choose.

Lines (JSON): one per candidate with its FLOPs per sample (as bench_flops.py counts
them), samples seen, CPU-minutes, held-out and Kodak24 PSNR / SSIM; then the winner by
held-out PSNR with each other candidate's gap to it. The learning curves (held-out PSNR
against samples seen and against CPU-minutes) go to docs/learning-curves.png.

    python benchmarks/bench_budget.py                       # all, 45 CPU-minutes each
    python benchmarks/bench_budget.py --cpu-minutes 10 --candidates unet,unet:bf16
    python benchmarks/bench_budget.py --plot-only           # redraw from the run folders
    python benchmarks/bench_budget.py --reuse               # keep candidates already trained

A candidate NAME:bf16 is the same config trained in mixed bfloat16. Run on an otherwise
idle machine, never beside the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import KODAK, ROOT, SUN80, emit, quick

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CANDIDATES = ("autoencoder", "ffdnet", "unet", "unet-lite")
KODAK_NOISES = ("gaussian:25:unclipped", "mix:gaussian:15+s&p:0.02")


def overrides(name: str, out: Path) -> list[str]:
    """What every candidate shares: data, held-out set, seed and run folder."""
    source = f"folder:{SUN80}" if SUN80.is_dir() else "samples"
    ov = [f"data.source={source}", f"run.dir={out / name.replace(':', '-')}",
          "run.progress=false", "run.seed=1"]
    if source == "samples":
        ov += ["data.eval_images=2", "data.eval_max_edge=256"]
    # A plain name trains in float32 whatever its config says, so that :bf16 is the only change.
    ov.append("train.precision=" + ("bfloat16" if name.endswith(":bf16") else "float32"))
    return ov


def config_path(name: str) -> Path:
    return ROOT / "configs" / f"{name.split(':')[0]}.yaml"


def calibrate(cfg, steps: int) -> dict[str, float]:
    """CPU-seconds per step of each phase the config runs (median over timed steps)."""
    import statistics

    import keras

    from distgan.data import LocalBatches, open_source
    from distgan.train import build_trainer

    trainer = build_trainer(cfg)
    batches = LocalBatches(cfg, open_source(cfg.data.source).split(cfg.data.eval_images)[0])
    t = cfg.train
    phases = [p for p, n in (("pretrain_g", t.pretrain_g_steps), ("pretrain_d", t.pretrain_d_steps),
                             ("gan", t.steps)) if n]
    cost = {}
    for phase in phases:
        times = []
        for s in range(steps + 2):  # 2 untimed: tracing
            b = batches.batch(s)
            c0 = time.process_time()
            trainer.train_on(phase, b)
            if s >= 2:
                times.append(time.process_time() - c0)
        cost[phase] = statistics.median(times)
    del trainer
    keras.backend.clear_session()
    return cost


def scaled(cfg, cost: dict[str, float], cpu_minutes: float) -> list[str]:
    """Step counts that keep the config's phase proportions and fill the budget."""
    t = cfg.train
    base = (t.pretrain_g_steps * cost.get("pretrain_g", 0) + t.pretrain_d_steps * cost.get("pretrain_d", 0)
            + t.steps * cost.get("gan", 0))
    k = cpu_minutes * 60 / base
    pg, pd, gan = (round(n * k) for n in (t.pretrain_g_steps, t.pretrain_d_steps, t.steps))
    total = pg + pd + gan
    every = max(1, total // 12)
    return [f"train.pretrain_g_steps={pg}", f"train.pretrain_d_steps={pd}", f"train.steps={gan}",
            f"train.warmup_steps={min(t.warmup_steps, max(pg // 20, 1))}",
            f"train.eval_every={every}", f"train.checkpoint_every={every}", "train.keep_checkpoints=2"]


def flops_per_sample(cfg) -> float:
    """Forward FLOPs of G for one training chunk, as bench_flops.py counts them."""
    import numpy as np
    from bench_flops import graph_flops

    from distgan.models import build_generator

    c = cfg.data.chunk
    f = graph_flops(build_generator(cfg.model, c),
                    [np.zeros((1, c, c, 3), np.float32), np.zeros((1, 7), np.float32)])
    return f["Conv2D"] + f["Conv2DBackpropInput"] + f["MatMul"]


def run_one(name: str, cpu_minutes: float, out: Path) -> dict:
    """Calibrate, train for the budget and report one candidate (in this process)."""
    from distgan import checkpoint
    from distgan.config import load_config
    from distgan.train import train_local

    ov = overrides(name, out)
    cfg = load_config(config_path(name), ov)
    cost = calibrate(cfg, 3 if quick() else 8)
    cfg = load_config(config_path(name), ov + scaled(cfg, cost, cpu_minutes))
    run_dir = Path(cfg.run.dir)
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    flops = flops_per_sample(cfg)
    summary = train_local(cfg)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    best = checkpoint.best(run_dir / "checkpoints")
    best_row = next(r for r in rows if r["step"] == best["step"])
    gan_from = cfg.train.pretrain_g_steps + cfg.train.pretrain_d_steps
    before_gan = [r for r in rows if r["step"] <= gan_from]
    kodak = kodak_scores(run_dir / "checkpoints" / best["name"])
    return {"bench": "budget", "candidate": name, "config": str(config_path(name).relative_to(ROOT)),
            "train_data": "sun80" if SUN80.is_dir() else "samples",
            "cpu_minutes_budget": cpu_minutes, "cpu_minutes": round(summary["cpu_s"] / 60, 2),
            "wall_minutes": round(summary["wall_s"] / 60, 2),
            "gflop_per_sample_forward": round(flops / 1e9, 4),
            "kmac_per_pixel": round(flops / 2 / cfg.data.chunk**2 / 1e3, 1),
            "steps": summary["step"], "samples": summary["step"] * cfg.data.batch_size,
            "step_cpu_s": {k: round(v, 4) for k, v in cost.items()},
            "heldout_best_step": best["step"], "heldout_psnr": round(best_row["psnr"], 3),
            "heldout_ssim": round(best_row["ssim"], 4),
            "heldout_psnr_noisy": round(best_row["psnr_noisy"], 3),
            "heldout_ssim_noisy": round(best_row["ssim_noisy"], 4),
            "heldout_psnr_final": round(rows[-1]["psnr"], 3),
            "heldout_ssim_final": round(rows[-1]["ssim"], 4),
            **({"heldout_psnr_before_gan": round(before_gan[-1]["psnr"], 3),
                "heldout_ssim_before_gan": round(before_gan[-1]["ssim"], 4)}
               if cfg.train.steps and before_gan else {}),
            **kodak}


def kodak_scores(model: Path) -> dict:
    """Kodak24 (reported, never used to choose): PSNR / SSIM at each of KODAK_NOISES."""
    from distgan.evaluation import run_eval
    from distgan.noise import parse_spec

    if not KODAK.is_dir():
        return {}
    files = sorted(KODAK.glob("*.png"))[: 4 if quick() else None]
    rep = run_eval(files, [parse_spec(n) for n in KODAK_NOISES], ["distgan"], str(model))
    out = {"kodak_images": len(files)}
    for r in rep["results"]:
        noise = r["noise"]
        key = noise.split(":")[0] if noise.startswith("mix") else noise.replace(":unclipped", "")
        out[f"kodak_psnr {key}"] = round(r["psnr"], 3)
        out[f"kodak_ssim {key}"] = round(r["ssim"], 4)
    return out


def plot(out: Path, names: list[str], target: Path, extra: dict[str, Path] | None = None) -> None:
    """Held-out PSNR against samples seen and against CPU-minutes, one line per candidate,
    and one per `extra` run folder (a longer run of the same held-out set, for instance)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    runs = {n: out / n.replace(":", "-") for n in names} | (extra or {})
    for name, folder in runs.items():
        path = folder / "metrics.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        psnr = [r["psnr"] for r in rows]
        axes[0].plot([r["samples"] / 1e3 for r in rows], psnr, marker="o", ms=3, label=name)
        axes[1].plot([r["cpu_s"] / 60 for r in rows], psnr, marker="o", ms=3, label=name)
        noisy = rows[0]["psnr_noisy"]
    axes[0].set_xlabel("training samples seen (thousands of 64 px chunks)")
    axes[1].set_xlabel("training CPU-minutes (this machine: 2 cores)")
    axes[0].set_ylabel("held-out sun80 PSNR (dB)")
    from matplotlib.ticker import FuncFormatter

    for ax in axes:
        ax.axhline(noisy, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3, which="both")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    axes[1].legend(loc="lower right")
    fig.suptitle("Held-out PSNR (gaussian sigma 25 and a gaussian + s&p mix); dotted: the noisy input")
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-minutes", type=float, default=1.0 if quick() else 45.0)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--out", default=str(ROOT / "runs" / "budget"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "learning-curves.png"))
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--extra", action="append", default=[], metavar="LABEL=RUN_DIR",
                    help="also draw this run's curve (same held-out set), e.g. a longer run")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a candidate whose run folder holds a result for this budget")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child process: train one candidate
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.one:
        row = run_one(args.one, args.cpu_minutes, out)
        (out / args.one.replace(":", "-") / "result.json").write_text(json.dumps(row) + "\n")
        emit(**row)
        return
    names = [n for n in args.candidates.split(",") if n]
    for n in names:
        if not config_path(n).exists():
            sys.exit(f"bench_budget: no config {config_path(n)}")
    rows = []
    for n in names if not args.plot_only else ():
        done = out / n.replace(":", "-") / "result.json"
        prev = json.loads(done.read_text()) if args.reuse and done.exists() else None
        if prev and prev["cpu_minutes_budget"] == args.cpu_minutes:
            rows.append(prev)
            print(json.dumps(prev), flush=True)
            continue
        cmd = [sys.executable, __file__, "--one", n, "--cpu-minutes", str(args.cpu_minutes),
               "--out", str(out)] + (["--quick"] if quick() else [])
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in reversed(res.stdout.splitlines()) if x.startswith("{")), None)
        if res.returncode or line is None:
            emit(bench="budget", candidate=n, error=(res.stderr.strip().splitlines() or ["?"])[-1])
            continue
        print(line, flush=True)
        rows.append(json.loads(line))
    if rows:
        win = max(rows, key=lambda r: r["heldout_psnr"])
        emit(bench="budget", winner=win["candidate"], heldout_psnr=win["heldout_psnr"],
             gap_db={r["candidate"]: round(r["heldout_psnr"] - win["heldout_psnr"], 3) for r in rows})
    extra = dict((e.split("=", 1)[0], Path(e.split("=", 1)[1])) for e in args.extra)
    plot(out, names, Path(args.plot), extra)


if __name__ == "__main__":
    main()

"""The training job: `python -m distgan.train` (= `distgan train`).

    --local     one process, no Ray Train: the single-GPU/CPU mode
    (default)   Ray Train: TensorflowTrainer + MultiWorkerMirroredStrategy, batches from
                the Ray Data pipeline

Both run the same loop (`fit`) over the same steps (`gan.GANTrainer`). A run folder
(`run.dir`) holds config.yaml, checkpoints/, samples/, metrics.jsonl and tb/.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import console
from .config import Config, add_config_args, dump_config, load_config, to_dict
from .errors import UserError

log = logging.getLogger("distgan.train")


class TrainingDiverged(UserError):
    """A NaN or infinite loss: the run stops and the last good checkpoint stays."""


def add_train_args(p: argparse.ArgumentParser) -> None:
    add_config_args(p, "YAML config (default: configs/default.yaml)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's latest checkpoint, with its config")
    p.add_argument("--local", action="store_true", help="train in this process, without Ray Train")
    p.add_argument("--until", type=int, default=None, metavar="STEP",
                   help="stop after STEP (with a checkpoint), keeping the full run's schedule")
    p.add_argument("--smoke-test", action="store_true",
                   help="a seconds-long run of configs/smoke.yaml (plus any --set)")


def _default_config_path() -> Path | None:
    here = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    return here if here.exists() else None


def resolve_config(args: argparse.Namespace) -> Config:
    path = args.config
    if args.smoke_test and not path:
        path = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
    cfg = load_config(path or _default_config_path(), args.set)
    if args.resume:
        saved = Path(cfg.run.dir) / "config.yaml"
        if not saved.exists():
            raise UserError(f"--resume: {saved} not found; nothing to resume in {cfg.run.dir}")
        resumed = load_config(saved, args.set)
        if (resumed.model, resumed.data.chunk) != (cfg.model, cfg.data.chunk) and args.config:
            log.warning("--resume: using the model of %s, not of %s", saved, args.config)
        cfg = resumed
    return cfg


# ------------------------------------------------------------------ run folder


@dataclass
class RunLog:
    """Where a run writes: config.yaml, metrics.jsonl, samples/, tb/ (rank 0 only).

    metrics.jsonl holds one row per evaluated step. A resumed run first drops the rows
    after the step it resumes from (they belong to steps it is about to train again) into
    metrics.dropped.jsonl, so the log never doubles back. TensorBoard writes one folder per
    attempt, tb/from-<step>, for the same reason."""

    cfg: Config
    enabled: bool = True
    _tb: object = field(default=None, repr=False)

    @property
    def dir(self) -> Path:
        return Path(self.cfg.run.dir)

    def start(self, step: int = 0) -> None:
        if not self.enabled:
            return
        for sub in ("checkpoints", "samples"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        dump_config(self.cfg, self.dir / "config.yaml")
        self._truncate_metrics(step)
        if self.cfg.run.tensorboard:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(str(self.dir / "tb" / f"from-{step:08d}"))

    def _truncate_metrics(self, step: int) -> None:
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        keep, drop = [], []
        for line in path.read_text().splitlines():
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                drop.append(line)  # a line cut short by a kill
                continue
            (keep if row_step <= step else drop).append(line)
        if not drop:
            return
        with open(self.dir / "metrics.dropped.jsonl", "a") as f:
            f.write("".join(x + "\n" for x in drop))
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(x + "\n" for x in keep))
        os.replace(tmp, path)
        log.info("metrics.jsonl: %d row(s) after step %d moved to metrics.dropped.jsonl",
                 len(drop), step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._tb is None:
            return
        import tensorflow as tf

        with self._tb.as_default(step=step):
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    tf.summary.scalar(k, v)

    def metrics(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        self.scalars(step, {f"eval/{k}": v for k, v in values.items()})

    def grid(self, step: int, grid: np.ndarray) -> Path | None:
        if not self.enabled:
            return None
        from PIL import Image

        path = self.dir / "samples" / f"step_{step:08d}.png"
        Image.fromarray(grid).save(path)
        Image.fromarray(grid).save(self.dir / "samples" / "latest.png")
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=step):
                tf.summary.image("samples", grid[None])
        return path

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()


# ------------------------------------------------------------------ the loop


def eval_tile(cfg: Config) -> tuple[int | None, int]:
    """Tile and overlap for whole-image evaluation: a fully convolutional generator sees
    each image whole, as `distgan denoise` runs it (tile None); one with a dense latent
    sees chunks, a quarter overlapping."""
    if not cfg.model.latent or cfg.model.generator == "unet":
        return None, 0
    return cfg.data.chunk, cfg.data.chunk // 4


def fit(
    trainer,
    batches: Iterable[tuple[int, dict]],
    cfg: Config,
    runlog: RunLog,
    evals: list,
    on_checkpoint: Callable[[int, Path, dict], None] | None = None,
    is_chief: bool = True,
    until: int | None = None,
    ckpt_dir: Path | None = None,
    world: int = 1,
) -> dict:
    """Train over (step, batch) pairs; evaluate, log and checkpoint on schedule.

    Every evaluation row also carries the samples seen and the training CPU time (this
    process, every thread, evaluation left out) and wall time, summed over resumed attempts:
    the axes of a learning curve. With `train.keep_best`, every evaluation step is also a
    checkpoint step, on every rank alike, and the best one by held-out PSNR is recorded."""
    from . import checkpoint
    from .gan import phase_of, total_steps
    from .metrics import evaluate, sample_grid

    t = cfg.train
    total = total_steps(cfg)
    ckpt_dir = ckpt_dir or runlog.dir / "checkpoints"
    infer = trainer.denoise_fn()
    tile, overlap = eval_tile(cfg)
    last: dict = {}
    summary: dict = {}
    bar = None
    if is_chief and cfg.run.progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=int(trainer.step.numpy()), unit="step", dynamic_ncols=True)
    seen, t0, wait = 0, time.perf_counter(), 0.0
    cpu0, eval_cpu = time.process_time(), 0.0
    spent = dict(trainer.spent)
    found = checkpoint.best(ckpt_dir) if is_chief else None
    best_psnr = found["psnr"] if found else -math.inf  # the run's best held-out PSNR so far

    def clock() -> dict:
        return {"cpu_s": spent["cpu_s"] + time.process_time() - cpu0 - eval_cpu,
                "wall_s": spent["wall_s"] + time.perf_counter() - t0}

    def save(reason: str, best: float | None = None) -> Path:
        step = int(trainer.step.numpy())
        path = checkpoint.save(trainer, ckpt_dir, t.keep_checkpoints,
                               {"phase": phase_of(max(step - 1, 0), cfg), "reason": reason,
                                "total_steps": total, "losses": last, **clock()})
        if best is not None:
            checkpoint.mark_best(ckpt_dir, path, best)
        if on_checkpoint:
            on_checkpoint(step, path, {"step": step, **last, **summary})
        return path

    def run_eval(step: int) -> dict:
        nonlocal eval_cpu
        c0 = time.process_time()
        scores, outs = evaluate(infer, evals, tile, overlap)
        eval_cpu += time.process_time() - c0
        lr = trainer.g_opt.learning_rate
        runlog.metrics(step, {**last, **scores, "samples": step * cfg.data.batch_size * world,
                              **clock(), "lr_g": float(lr.numpy() if hasattr(lr, "numpy") else lr)})
        runlog.grid(step, sample_grid(evals, outs))
        return scores

    try:
        it: Iterator = iter(batches)
        while True:
            tw = time.perf_counter()
            try:
                step, batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            if step >= total or (until is not None and step >= until):
                break
            losses = trainer.train_on(phase_of(step, cfg), batch)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                good = checkpoint.latest_valid(ckpt_dir)
                raise TrainingDiverged(
                    f"step {step}: loss became {bad}; stopped. The last good checkpoint stays "
                    f"at {good or '(none yet)'}; lower train.lr_g/lr_d or train.adv_weight"
                )
            last = losses
            seen += len(batch["clean"])
            done = step + 1
            if done % t.log_every == 0 or done == total:
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                runlog.scalars(done, {**{f"train/{k}": v for k, v in losses.items()},
                                      "train/samples_per_s": rate})
                if bar is not None:
                    bar.set_postfix({**{k: f"{v:.4g}" for k, v in losses.items()},
                                     "samples/s": f"{rate:.0f}"}, refresh=False)
            if bar is not None:
                bar.update(1)
            evaluated = done % t.eval_every == 0 or done == total
            improved = None
            if evaluated and is_chief:
                summary = run_eval(done)
                check_divergence(done, summary, best_psnr, t.divergence_db, ckpt_dir)
                psnr = summary.get("psnr", -math.inf)
                if t.keep_best and psnr > best_psnr:
                    improved = psnr
                best_psnr = max(best_psnr, psnr)
            if done % t.checkpoint_every == 0 or done in (total, until) or (evaluated and t.keep_best):
                save("final" if done == total else ("until" if done == until else "schedule"),
                     improved)
            if _STOP.is_set():
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        path = save("interrupted")
        print(f"\ndistgan: interrupted; checkpoint saved at {path}; continue with --resume",
              file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
        runlog.close()
    if not summary and is_chief:  # nothing evaluated in this call (e.g. resumed a finished run)
        summary, _ = evaluate(infer, evals, tile, overlap)
    elapsed = time.perf_counter() - t0
    return {"step": int(trainer.step.numpy()), "total_steps": total, **summary, **clock(),
            "samples_per_s": seen / max(elapsed, 1e-9),
            "data_wait_fraction": wait / max(elapsed, 1e-9), "losses": last}


def check_divergence(step: int, scores: dict, best: float, limit: float, ckpt_dir: Path) -> None:
    """Stop a run whose held-out PSNR collapsed while its loss stayed finite (a blow-up the
    loss guard cannot see). Armed once the best evaluation beat the noisy input."""
    from . import checkpoint

    psnr, noisy = scores.get("psnr"), scores.get("psnr_noisy", -math.inf)
    if not limit or psnr is None or not math.isfinite(best) or best <= noisy:
        return
    if psnr < best - limit or not math.isfinite(psnr):
        found = checkpoint.best(ckpt_dir)
        where = Path(ckpt_dir) / found["name"] if found else checkpoint.latest_valid(ckpt_dir)
        raise TrainingDiverged(
            f"step {step}: held-out PSNR fell to {psnr:.2f} dB, {best - psnr:.1f} dB below the "
            f"run's best {best:.2f} dB (train.divergence_db {limit:g}); stopped. The best "
            f"checkpoint stays at {where or '(none)'}; lower train.lr_g or set train.clip_norm")


# ------------------------------------------------------------------ local mode


def build_trainer(cfg: Config, strategy=None, init: bool = True):
    """G, D and their optimizers; `init` False skips train.init_from (a resumed run's
    checkpoint replaces those weights anyway)."""
    import keras

    from .gan import GANTrainer
    from .parallel import Placement

    keras.utils.set_random_seed(cfg.run.seed)  # same seed, same initial weights

    placement = Placement.from_config(cfg.parallel)
    trainer = GANTrainer(cfg, placement, strategy or placement.strategy())
    if init and cfg.train.init_from:
        init_weights(trainer, cfg.train.init_from)
    return trainer


def _shape_differences(there: list, here: list) -> str:
    """Where two generators' weight shapes part, for a model without a saved config."""
    i = next((i for i, (a, b) in enumerate(zip(there, here)) if a != b), min(len(there), len(here)))
    return (f"{len(there)} weight arrays there, {len(here)} here; the first to differ is #{i}: "
            f"{there[i] if i < len(there) else None} there, {here[i] if i < len(here) else None} here")


def init_weights(trainer, source: str) -> None:
    """Fine-tuning (`train.init_from`): G and its average from a trained model's (averaged)
    weights, D from the checkpoint's where it has one that fits; the step, optimizers and
    schedule stay at their start. A model of another shape is one clear error naming the
    differing model.* keys (from the checkpoint's config, or the .config.yaml beside a
    .keras file)."""
    from . import checkpoint
    from .denoise import SHIPPED, load_denoiser

    path = SHIPPED if source == "shipped" else Path(source)
    try:
        ckpt = checkpoint.resolve(path) if path.is_dir() else None
        gen = load_denoiser(None if source == "shipped" else str(ckpt or path), "float32").generator
    except UserError as e:
        raise UserError(f"train.init_from: {e}") from None
    beside = path.with_suffix(".config.yaml")
    saved = checkpoint.read_config(ckpt) if ckpt else load_config(beside) if beside.exists() else None
    diff = checkpoint.config_differences(trainer.cfg, saved, ("model",)) if saved else []
    g_diff = [d for d in diff if not d.startswith("model.disc")]
    src, dst = gen.get_weights(), trainer.generator.get_weights()
    shapes = [w.shape for w in src], [w.shape for w in dst]
    if shapes[0] != shapes[1]:
        why = "; ".join(g_diff).replace("in the checkpoint", "there") if g_diff \
            else _shape_differences(*shapes)
        raise UserError(f"train.init_from: {source} is another generator than this run's "
                        f"model config ({why})")
    for model in {id(m): m for m in (trainer.generator, trainer.ema_generator)}.values():
        model.set_weights(src)
    if ckpt is None:
        return
    if len(g_diff) < len(diff):
        log.info("train.init_from: G from %s; D starts afresh (another model.disc_*)", ckpt)
    else:
        trainer.discriminator.load_weights(ckpt / "discriminator.weights.h5")
        log.info("train.init_from: G and D from %s", ckpt)


_STOP = threading.Event()


def _save_on_sigterm() -> None:
    """SIGTERM (schedulers, preemption, `kill`) and Ctrl-C ask `fit` to stop after the step
    in progress, checkpoint and exit; a second signal stops at once. Raising from the
    handler instead can land inside TensorFlow's tracing, which then fails with a
    SystemError that no `except KeyboardInterrupt` catches, and nothing is saved."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    _STOP.clear()

    def handler(signum, frame):
        if _STOP.is_set():
            raise KeyboardInterrupt
        _STOP.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def train_local(cfg: Config, resume: bool = False, until: int | None = None) -> dict:
    """Train in this process: the single-GPU/CPU mode, no Ray."""
    from . import checkpoint
    from .data import LocalBatches, eval_images, open_source
    from .gan import total_steps

    train_src, eval_src = open_source(cfg.data.source).split(cfg.data.eval_images)
    batches = LocalBatches(cfg, train_src)
    evals = eval_images(cfg, eval_src)
    trainer = build_trainer(cfg, init=not resume)
    ckpt_dir = Path(cfg.run.dir) / "checkpoints"
    start = 0
    if resume:
        if not checkpoint.checkpoints(ckpt_dir):
            raise UserError(f"--resume: no checkpoint in {ckpt_dir}")
        found = checkpoint.latest_valid(ckpt_dir, "resuming from")
        if found is None:
            raise UserError(f"--resume: no valid checkpoint left in {ckpt_dir} (the damaged "
                            f"ones are in {ckpt_dir / checkpoint.DAMAGED})")
        start = checkpoint.restore(trainer, found)
        log.info("resumed from %s at step %d", found, start)
    elif checkpoint.latest(ckpt_dir) is not None:
        raise UserError(
            f"{cfg.run.dir} already holds checkpoints; pass --resume to continue, or set "
            f"run.dir to a new folder"
        )
    runlog = RunLog(cfg)
    runlog.start(start)
    _save_on_sigterm()
    stream = ((s, batches.batch(s)) for s in range(start, total_steps(cfg)))
    summary = fit(trainer, stream, cfg, runlog, evals, until=until)
    summary["skipped_images"] = len(batches.bad)
    return summary


# ------------------------------------------------------------------ Ray Train


def worker_loop(config: dict) -> None:
    """One Ray Train worker: MultiWorkerMirroredStrategy over all workers, batches from
    this worker's shard of the Ray Data stream, checkpoints reported by rank 0."""
    import tempfile

    import keras
    import ray.train
    import tensorflow as tf

    from .config import from_dict
    from .data import eval_images, open_source, tf_batches
    from .gan import total_steps

    # Ray sets TF_USE_LEGACY_KERAS=1 in workers; distgan imports Keras 3 by name, so the
    # models are the same objects as in local mode. Fail loudly if that ever changes.
    assert keras.__version__.startswith("3."), f"expected Keras 3, got {keras.__version__}"
    cfg = from_dict(config["cfg"], "<ray worker>")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    restored = ray.train.get_checkpoint()
    trainer = build_trainer(cfg, strategy, init=restored is None)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    start = restore_from_ray(trainer, restored) if restored is not None else 0
    chief = rank == 0
    local_dir = None if chief else Path(tempfile.mkdtemp(prefix=f"distgan-rank{rank}-"))
    runlog = RunLog(cfg, enabled=chief)
    if chief:
        runlog.start(start)
    evals = eval_images(cfg, open_source(cfg.data.source).split(cfg.data.eval_images)[1]) \
        if chief else []
    shard = ray.train.get_dataset_shard("train")
    stream = zip(range(start, total_steps(cfg)),
                 tf_batches(shard, cfg.data.batch_size, cfg.data.shuffle_buffer))

    def on_checkpoint(step: int, path: Path, metrics: dict) -> None:
        metrics = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        metrics["world_size"] = world
        if chief:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(path)))
        else:
            ray.train.report(metrics)  # every rank reports: report is a barrier

    fit(trainer, stream, cfg, runlog, evals, on_checkpoint, is_chief=chief,
        until=config.get("until"), ckpt_dir=local_dir / "checkpoints" if local_dir else None,
        world=world)


def restore_from_ray(trainer, restored) -> int:
    """Restore a (re)started worker from the checkpoint Ray hands it or, where that one is
    damaged, from the newest valid one Ray kept beside it in the run's storage (local, NFS
    or s3://, through the checkpoint's own filesystem). Every rank lists the same folder and
    so picks the same checkpoint. A damaged one is skipped with a warning, never deleted:
    Ray's own bookkeeping still names it."""
    import pyarrow.fs as pafs
    import ray.train

    from . import checkpoint

    fs, path = restored.filesystem, restored.path.rstrip("/")
    parent = path.rsplit("/", 1)[0]
    siblings = sorted((i.path for i in fs.get_file_info(pafs.FileSelector(parent))
                       if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_")
                       and i.path.rstrip("/") != path), reverse=True)
    skipped = []
    for cand in [restored, *(ray.train.Checkpoint(p, filesystem=fs) for p in siblings)]:
        with cand.as_directory() as d:
            why = checkpoint.damage(d)
            if why is None:
                if skipped:
                    log.warning("%s; resuming from %s", "; ".join(skipped), Path(cand.path).name)
                return checkpoint.restore(trainer, d)
        skipped.append(f"{Path(cand.path).name} is damaged: {why}")
    raise checkpoint.CheckpointError(f"no valid checkpoint among those Ray kept in {parent}: "
                                     + "; ".join(skipped))


def worker_user_error(err: Exception) -> UserError | None:
    """The first UserError a Ray Train worker raised (a diverged run, a bad checkpoint), so
    that it reaches the user as the one line it would be in local mode, not inside Ray's
    traceback. Ray Train V2 raises a WorkerGroupError whose `worker_failures` maps each
    failed rank to its exception."""
    failures = getattr(err, "worker_failures", None) or {}
    return next((e for _, e in sorted(failures.items()) if isinstance(e, UserError)), None)


def check_cpu_budget(cfg: Config) -> None:
    """Trainers must leave `scaling.reserved_data_cpus` for Ray Data, or the data stage
    waits for ever. On a fixed cluster that is an error; on one that may autoscale, a warning."""
    import os

    import ray

    s = cfg.scaling
    total = ray.cluster_resources().get("CPU", 0.0)
    trainers = s.num_workers * s.cpus_per_worker
    if trainers + s.reserved_data_cpus <= total + 1e-9:
        return
    msg = (f"scaling: {s.num_workers} worker(s) x {s.cpus_per_worker:g} CPU leave "
           f"{max(total - trainers, 0):g} of the cluster's {total:g} CPUs for Ray Data, which "
           f"needs scaling.reserved_data_cpus={s.reserved_data_cpus:g}; lower "
           f"scaling.cpus_per_worker or scaling.num_workers")
    if os.environ.get("RAY_ADDRESS"):
        log.warning("%s (continuing: the cluster may autoscale)", msg)
    else:
        raise UserError(msg)


def train_ray(cfg: Config, resume: bool = False, until: int | None = None) -> dict:
    """Data-parallel training on Ray Train: TensorflowTrainer + MultiWorkerMirroredStrategy."""
    import ray.train
    from ray.train.tensorflow import TensorflowTrainer

    from . import raysession
    from .data import build_dataset, data_resource_limits, open_source
    from .gan import total_steps

    # Workers may run elsewhere (a job's working dir, another node): make paths absolute.
    run_dir = Path(cfg.run.dir).resolve()
    storage = cfg.scaling.storage_path or str(run_dir / "ray")
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    cfg = cfg.replace(run={"dir": str(run_dir)}, scaling={"storage_path": storage})
    if not resume and (run_dir / "checkpoints").exists() and any((run_dir / "checkpoints").iterdir()):
        raise UserError(f"{run_dir} already holds checkpoints; pass --resume to continue, or set "
                        f"run.dir to a new folder")
    train_src, _ = open_source(cfg.data.source).split(cfg.data.eval_images)
    raysession.connect()
    s = cfg.scaling
    check_cpu_budget(cfg)
    data_resource_limits(cfg)
    per_pass = len(train_src) * cfg.data.crops_per_image
    needed = total_steps(cfg) * cfg.data.batch_size * s.num_workers
    epochs = max(1, math.ceil(needed / max(per_pass, 1)) + 1)
    dataset = build_dataset(cfg, train_src, epochs=epochs)
    resources = {"CPU": s.cpus_per_worker}
    if s.use_gpu:
        resources["GPU"] = s.gpus_per_worker or 1
    run_config = ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=storage,
        failure_config=ray.train.FailureConfig(max_failures=s.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
    )
    trainer = TensorflowTrainer(
        worker_loop,
        train_loop_config={"cfg": to_dict(cfg), "until": until},
        scaling_config=ray.train.ScalingConfig(
            num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=run_config,
        datasets={"train": dataset},
    )
    if resume:
        log.info("resuming from the latest checkpoint in %s", Path(storage) / cfg.run.name)
    elif (Path(storage) / cfg.run.name).exists() and "://" not in storage:
        # Ray Train resumes a run of the same name by itself; a fresh run must not.
        import shutil

        shutil.rmtree(Path(storage) / cfg.run.name)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        mine = worker_user_error(e)
        if mine is None:
            raise
        raise mine from None
    summary = dict(result.metrics or {})
    summary["checkpoint"] = result.checkpoint.path if result.checkpoint else None
    return summary


# ------------------------------------------------------------------ entry


def run_from_args(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    if args.local:
        summary = train_local(cfg, resume=args.resume, until=args.until)
    else:
        summary = train_ray(cfg, resume=args.resume, until=args.until)
    report(cfg, summary)
    return 0


def report(cfg: Config, summary: dict) -> None:
    run = Path(cfg.run.dir)
    print(f"run folder:   {run}")
    print(f"checkpoint:   {_latest_str(run / 'checkpoints')}")
    print(f"sample grid:  {run / 'samples' / 'latest.png'}")
    print(f"metrics:      {run / 'metrics.jsonl'}")
    if "psnr" in summary:
        print(
            f"held-out PSNR: denoised {summary['psnr']:.2f} dB vs noisy {summary['psnr_noisy']:.2f} dB"
            f" (SSIM {summary['ssim']:.3f} vs {summary['ssim_noisy']:.3f})"
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, default=float))


def _latest_str(folder: Path) -> str:
    from .checkpoint import latest

    found = latest(folder)
    return str(found) if found else "(none)"


def main(argv: list[str] | None = None) -> int:
    """`python -m distgan.train ...`: the same arguments as `distgan train ...`."""
    p = argparse.ArgumentParser(prog="python -m distgan.train", allow_abbrev=False,
                                description=__doc__.splitlines()[0])
    p.add_argument("--verbose", "-v", action="store_true",
                   help=f"also show TensorFlow's, absl's and Ray's own log lines (or {console.ENV}=1)")
    add_train_args(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    console.setup(args.verbose)
    # Run from the module imported by its name, not from `__main__`: Ray pickles the worker
    # loop by reference to it.
    from distgan import train as module

    return console.run(lambda: module.run_from_args(args), tensorflow=True)


if __name__ == "__main__":
    sys.exit(main())

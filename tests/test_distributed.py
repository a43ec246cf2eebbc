"""Ray Train on a real local cluster (127.0.0.1, 2 CPUs): data parallel training, the
CPU budget between trainers and Ray Data, and recovery from a killed worker."""

import json
import os
import signal
import threading
import time

import pytest

from distgan.config import load_config
from distgan.errors import UserError
from distgan.train import TrainingDiverged, train_ray

from .conftest import COLLAPSE_SETS, ROOT, SHIPPED_CONFIG

pytestmark = pytest.mark.slow


def _cfg(tmp_path, *sets):
    return load_config(ROOT / "configs" / "smoke.yaml",
                       [f"run.dir={tmp_path / 'run'}", "run.tensorboard=false", *sets])


def _steps(run):
    return sorted(json.loads((p / "state.json").read_text())["step"]
                  for p in (run / "checkpoints").glob("ckpt-*"))


def test_two_workers_data_parallel(ray_cluster, tmp_path):
    cfg = _cfg(tmp_path, "scaling.num_workers=2", "scaling.cpus_per_worker=0.5")
    summary = train_ray(cfg)
    assert summary["world_size"] == 2 and summary["step"] == 8
    assert _steps(tmp_path / "run")[-1] == 8


def test_trainers_taking_every_cpu_is_a_clear_error(ray_cluster, tmp_path):
    cfg = _cfg(tmp_path, "scaling.num_workers=2", "scaling.cpus_per_worker=1")
    with pytest.raises(UserError, match="reserved_data_cpus"):
        train_ray(cfg)


def test_a_killed_worker_is_restored_from_its_checkpoint(ray_cluster, tmp_path):
    from ray.util.state import list_actors

    run = tmp_path / "run"
    cfg = _cfg(tmp_path, "train.steps=40", "train.checkpoint_every=4", "train.eval_every=100",
               "scaling.max_failures=2")
    out: dict = {}
    th = threading.Thread(target=lambda: out.update(train_ray(cfg)), daemon=True)
    th.start()
    deadline = time.time() + 300
    while time.time() < deadline and not _steps(run):
        time.sleep(0.5)
    assert _steps(run), "no checkpoint was reported"
    time.sleep(1.0)  # let Ray Train register the reported checkpoint
    workers = [a for a in list_actors(filters=[("state", "=", "ALIVE")])
               if a.class_name == "RayTrainWorker"]
    assert workers
    killed_at = _steps(run)[-1]
    os.kill(workers[0].pid, signal.SIGKILL)
    th.join(timeout=600)
    assert not th.is_alive()
    total = 2 + 2 + 40
    assert out["step"] == total and _steps(run)[-1] == total
    assert killed_at < total


def test_one_worker_shares_two_cpus_and_a_damaged_checkpoint_is_skipped_on_restore(
        ray_cluster, tmp_path):
    # The trainer takes 1 CPU, Ray Data keeps the other: nothing waits for ever.
    run = tmp_path / "run"
    cfg = _cfg(tmp_path, "train.checkpoint_every=2", "train.eval_every=2", "train.keep_checkpoints=3")
    summary = train_ray(cfg, until=6)
    assert summary["step"] == 6 and summary["world_size"] == 1
    assert summary["checkpoint"] and os.path.isdir(summary["checkpoint"])
    assert _steps(run)[-1] == 6 and (run / "samples" / "latest.png").exists()
    # Then the newest checkpoint Ray holds is cut short, as a full disk leaves it: the
    # restarted run restores the one before and still reaches the configured step.
    stored = sorted(p for p in (run / "ray" / cfg.run.name).glob("checkpoint_*") if p.is_dir())
    assert len(stored) >= 2
    newest = max(stored, key=lambda p: json.loads((p / "state.json").read_text())["step"])
    assert json.loads((newest / "state.json").read_text())["step"] == 6
    weights = newest / "generator.weights.h5"
    weights.write_bytes(weights.read_bytes()[:5000])
    summary = train_ray(cfg, resume=True)
    assert summary["step"] == 8 and _steps(run)[-1] == 8
    rows = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows == sorted(set(rows)) and rows[-1] == 8


def test_a_collapse_on_a_worker_reaches_the_driver_as_the_guards_own_error(ray_cluster, tmp_path):
    """The divergence guard runs on rank 0. Ray Train reports the failure as a
    WorkerGroupError; train_ray raises the guard's one-line error from inside it."""
    sets = [*COLLAPSE_SETS, f"run.dir={tmp_path / 'run'}", "run.tensorboard=false"]
    # a rate too small to move the trained weights: the evaluation beats the noisy input
    assert train_ray(load_config(SHIPPED_CONFIG, [*sets, "train.lr_g=1e-9"]), until=2)["step"] == 2
    with pytest.raises(TrainingDiverged, match=r"^step 4: held-out PSNR fell .*ckpt-00000002"):
        train_ray(load_config(SHIPPED_CONFIG, [*sets, "train.lr_g=0.05"]), resume=True)

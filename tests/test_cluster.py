"""The AWS cluster launcher config, validated offline, and a real `ray job submit`."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from distgan.config import load_config

from .conftest import ROOT

GPU_YAML = ROOT / "cluster" / "gpu.yaml"


def test_gpu_yaml_validates_with_rays_own_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(GPU_YAML.read_text())
    with pytest.raises(RuntimeError, match="cluster_synced_files"):
        validate_config(copy.deepcopy(raw))  # why prepare_config must come first
    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert types["gpu_worker"]["node_config"]["InstanceType"] == "g5.12xlarge"  # 4 GPUs
    assert 1 <= types["gpu_worker"]["min_workers"] <= types["gpu_worker"]["max_workers"]
    assert "InstanceType" in types["cpu_worker"]["node_config"]
    assert cfg["head_node_type"] == "head"


def test_gpu_yaml_keeps_the_dashboard_private_and_installs_the_project():
    raw = yaml.safe_load(GPU_YAML.read_text())
    perms = raw["provider"]["security_group"]["IpPermissions"]
    assert all(p["FromPort"] == p["ToPort"] == 22 for p in perms)
    assert all(r["CidrIp"] != "0.0.0.0/0" for p in perms for r in p["IpRanges"])
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert any("pip install" in c and "/home/ubuntu/distgan" in c for c in raw["setup_commands"])
    assert raw["file_mounts"]["/home/ubuntu/distgan"] == "."


def test_cluster_training_config_checkpoints_to_s3():
    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    assert cfg.scaling.storage_path.startswith("s3://") and cfg.scaling.use_gpu
    assert cfg.scaling.num_workers == 4 and cfg.scaling.max_failures > 0


def _ray(*args, env, timeout=300):
    exe = str(Path(sys.executable).parent / "ray")
    return subprocess.run([exe, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_job(tmp_path):
    # The job's `python` comes from the head node's PATH: put this venv first. Token auth
    # stays on; the job client sends the token (~/.ray/auth_token) only in explicit token
    # mode, so say so for both the cluster and the client.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    if not (Path.home() / ".ray" / "auth_token").exists():  # a fresh machine
        assert _ray("get-auth-token", "--generate", env=env).returncode == 0
    r = _ray("start", "--head", "--dashboard-host", "127.0.0.1", "--node-ip-address",
             "127.0.0.1", "--num-cpus", "2", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        run = tmp_path / "run"
        r = _ray("job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
                 "--", "python", "-m", "distgan.train", "--config", "configs/smoke.yaml",
                 "--set", f"run.dir={run}", "--set", "run.tensorboard=false",
                 env=env, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert "succeeded" in (r.stdout + r.stderr)
        ckpts = sorted((run / "checkpoints").glob("ckpt-*"))
        assert ckpts and json.loads((ckpts[-1] / "state.json").read_text())["step"] == 8
        assert any((run / "ray").rglob("generator.weights.h5"))  # persisted by Ray Train
    finally:
        _ray("stop", "--force", env=env)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)

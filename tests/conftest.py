import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent


# A short run from the shipped model that evaluates and checkpoints every 2 steps: with
# train.lr_g=1e-9 its evaluation beats the noisy input, with 0.05 it collapses (the
# divergence guard's tests, local and on Ray Train).
SHIPPED_CONFIG = ROOT / "distgan" / "weights" / "denoiser.config.yaml"
COLLAPSE_SETS = ["train.init_from=shipped", "data.source=samples", "data.chunk=32",
                 "data.batch_size=4", "data.eval_images=1", "data.eval_max_edge=96",
                 'data.eval_noise=["gaussian:25:unclipped"]', "train.pretrain_g_steps=6",
                 "train.pretrain_d_steps=0", "train.steps=0", "train.schedule=constant",
                 "train.eval_every=2", "train.checkpoint_every=2"]


def run_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600):
    """Run `python -m distgan ...` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "distgan", *args],
        cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    """A folder of small, smooth synthetic colour photos (PNG and JPEG)."""
    from PIL import Image

    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128] / 96.0
    for i in range(4):
        phase = rng.random(3) * 6
        img = 0.5 + 0.4 * np.sin(np.stack([xx * (3 + i) + phase[c] + yy * c for c in range(3)], -1))
        arr = np.clip(img * 255, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(d / (f"img{i}.png" if i % 2 else f"img{i}.jpg"))
    return d


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster on 127.0.0.1 with this machine's 2 CPUs, for one test module."""
    import ray

    from distgan import raysession

    raysession.connect(num_cpus=2)
    yield ray
    ray.shutdown()

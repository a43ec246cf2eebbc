import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from .conftest import ROOT, run_cli

SMOKE = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--local"]


def _weights(path):
    out = []
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.append(o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


def _train(*args, **kw):
    return run_cli("train", *SMOKE, *args, **kw)


def test_smoke_run_writes_a_complete_run_folder(tmp_path):
    run = tmp_path / "run"
    r = _train("--set", f"run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out PSNR" in r.stdout
    assert (run / "config.yaml").exists() and list((run / "tb").iterdir())
    assert (run / "samples" / "latest.png").exists()
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    assert {p.name for p in ckpt.iterdir()} == {
        "generator.weights.h5", "discriminator.weights.h5", "optimizers.npz", "state.json",
        "config.yaml"}
    assert json.loads((ckpt / "state.json").read_text())["step"] == 8
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 8 and {"psnr", "ssim", "test_mse", "g_loss", "d_loss"} <= set(rows[-1])


@pytest.mark.slow
def test_resume_is_exact(tmp_path):
    common = ["--set", "train.steps=2", "--set", "train.eval_every=100"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert _train(*common, "--set", f"run.dir={a}").returncode == 0
    assert _train(*common, "--set", f"run.dir={b}", "--until", "3").returncode == 0
    state = json.loads((b / "checkpoints" / "ckpt-00000003" / "state.json").read_text())
    assert state["step"] == 3 and state["reason"] == "until"
    r = _train(*common, "--set", f"run.dir={b}", "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    for m in ("generator", "discriminator"):
        wa = _weights(a / "checkpoints" / "ckpt-00000006" / f"{m}.weights.h5")
        wb = _weights(b / "checkpoints" / "ckpt-00000006" / f"{m}.weights.h5")
        assert len(wa) == len(wb) > 0
        assert all(np.allclose(x, y, rtol=1e-6, atol=1e-7) for x, y in zip(wa, wb))


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    run = tmp_path / "r"
    assert _train("--set", f"run.dir={run}", "--until", "1").returncode == 0
    r = _train("--set", f"run.dir={run}")
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "r"
    # adv_weight overflows float32 once the GAN phase starts (after step 4)
    r = _train("--set", f"run.dir={run}", "--set", "train.adv_weight=1e39",
               "--set", "train.checkpoint_every=2")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "loss became" in r.stderr and "last good checkpoint" in r.stderr
    steps = sorted(json.loads((p / "state.json").read_text())["step"]
                   for p in (run / "checkpoints").iterdir())
    assert steps and max(steps) == 4


def test_bad_config_key_exits_2(tmp_path):
    r = run_cli("train", "--local", "--set", "train.stepz=3")
    assert r.returncode == 2 and "did you mean 'train.steps'" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "distgan.train", "--local", "--set", "model.latnt=1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "did you mean 'model.latent'" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, sig):
    run = tmp_path / "r"
    p = subprocess.Popen(
        [sys.executable, "-m", "distgan", "train", *SMOKE, "--set", f"run.dir={run}",
         "--set", "train.steps=100000", "--set", "train.checkpoint_every=3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("ckpt-*")):
        time.sleep(0.5)
    p.send_signal(sig)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err
    reasons = [json.loads((c / "state.json").read_text())["reason"]
               for c in (run / "checkpoints").glob("ckpt-*")]
    assert "interrupted" in reasons

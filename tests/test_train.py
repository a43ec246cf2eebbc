import json
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from .conftest import COLLAPSE_SETS, ROOT, SHIPPED_CONFIG, run_cli

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
    assert (run / "config.yaml").exists() and list((run / "tb" / "from-00000000").iterdir())
    assert (run / "samples" / "latest.png").exists()
    ckpt = sorted((run / "checkpoints").glob("ckpt-*"))[-1]
    assert {p.name for p in ckpt.iterdir()} == {
        "generator.weights.h5", "generator_ema.weights.h5", "discriminator.weights.h5",
        "optimizers.npz", "state.json", "config.yaml"}
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 8 and state["cpu_s"] > 0
    assert set(state["files"]) == {p.name for p in ckpt.iterdir()} - {"state.json"}
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 8 and {"psnr", "ssim", "test_mse", "g_loss", "d_loss", "samples",
                                      "cpu_s", "lr_g"} <= set(rows[-1])
    assert rows[-1]["samples"] == 8 * 8 and rows[0]["cpu_s"] < rows[-1]["cpu_s"]
    # every held-out image under each of data.eval_noise, and the mean of both
    assert {"psnr gaussian:25:unclipped", "psnr mix:gaussian:15+s&p:0.02"} <= set(rows[-1])
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["psnr"] == max(r["psnr"] for r in rows)
    assert (run / "checkpoints" / best["name"]).is_dir()


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
    for m in ("generator", "generator_ema", "discriminator"):
        wa = _weights(a / "checkpoints" / "ckpt-00000006" / f"{m}.weights.h5")
        wb = _weights(b / "checkpoints" / "ckpt-00000006" / f"{m}.weights.h5")
        assert len(wa) == len(wb) > 0
        assert all(np.allclose(x, y, rtol=1e-6, atol=1e-7) for x, y in zip(wa, wb))


def test_training_output_is_quiet_unless_verbose(tmp_path):
    import os
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "DISTGAN_VERBOSE")}
    tf_line = re.compile(r"^([IWEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl)|oneDNN|cuda")
    cmd = [sys.executable, "-m", "distgan.train", *SMOKE, "--set", "train.pretrain_g_steps=1",
           "--set", "train.steps=1"]
    quiet = subprocess.run([*cmd, "--set", f"run.dir={tmp_path / 'q'}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    noise = [ln for ln in (quiet.stdout + quiet.stderr).splitlines() if tf_line.search(ln)]
    assert not noise, noise
    assert "held-out PSNR" in quiet.stdout
    loud = subprocess.run([*cmd, "--set", f"run.dir={tmp_path / 'v'}", "--verbose"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0 and any(tf_line.search(ln) for ln in loud.stderr.splitlines())


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
                   for p in (run / "checkpoints").glob("ckpt-*"))
    assert steps and max(steps) == 4


def test_a_collapse_of_held_out_psnr_stops_the_run(tmp_path):
    """A blow-up whose loss stays finite: the held-out PSNR falls far below the run's best."""
    run = tmp_path / "r"
    base = ["--config", str(SHIPPED_CONFIG), "--local",
            *(a for kv in [*COLLAPSE_SETS, f"run.dir={run}"] for a in ("--set", kv))]
    # a rate too small to move the trained weights: the evaluation beats the noisy input
    ok = run_cli("train", *base, "--set", "train.lr_g=1e-9", "--until", "2")
    assert ok.returncode == 0, ok.stderr[-2000:]
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["step"] == 2
    # the same run resumed at a rate far too large: stopped at its next evaluation
    r = run_cli("train", *base, "--set", "train.lr_g=0.05", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    line = [ln for ln in r.stderr.splitlines() if "held-out PSNR fell" in ln]
    assert len(line) == 1 and "step 4:" in line[0] and "ckpt-00000002" in line[0], r.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and rows[-1]["psnr"] < best["psnr"] - 5
    assert json.loads((run / "checkpoints" / "best.json").read_text()) == best
    # the same collapse goes on with the guard off
    off = run_cli("train", *base, "--set", "train.lr_g=0.05", "--set", "train.divergence_db=0",
                  "--resume")
    assert off.returncode == 0, off.stderr[-2000:]


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


# ------------------------------------------------------------------ damaged checkpoints


def _rows(run):
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def _attempts(tmp_path_factory):
    """Smoke runs stopped at a step, trained once per module and copied by each test."""
    from distgan.train import train_local

    done: dict[int, object] = {}

    def get(until):
        if until not in done:
            run = tmp_path_factory.mktemp(f"until{until}") / "r"
            train_local(_smoke_cfg(run), until=until)
            done[until] = run
        return done[until]

    return get


@pytest.fixture
def first_attempt(_attempts, tmp_path):
    """`first_attempt(until)`: a fresh copy of a smoke run stopped at `until`, evaluated and
    checkpointed every 2 steps, with the config that continues it in its new folder."""
    import shutil

    def make(until=6):
        run = tmp_path / "r"
        shutil.copytree(_attempts(until), run)
        return run, _smoke_cfg(run)

    return make


def _smoke_cfg(run, *sets):
    from distgan.config import load_config

    return load_config(ROOT / "configs" / "smoke.yaml",
                       [f"run.dir={run}", "train.eval_every=2", "train.checkpoint_every=2",
                        "train.keep_checkpoints=3", *sets])


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip one byte in the middle: same size, different content
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])


@pytest.mark.parametrize("name", ["generator.weights.h5", "generator_ema.weights.h5",
                                  "discriminator.weights.h5", "optimizers.npz", "config.yaml",
                                  "state.json"])
@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_resume_skips_a_damaged_checkpoint(first_attempt, caplog, name, how):
    from distgan.train import train_local

    run, cfg = first_attempt()
    newest = run / "checkpoints" / "ckpt-00000006"
    _damage(newest / name, how)
    with caplog.at_level("WARNING", logger="distgan"):
        summary = train_local(cfg, resume=True)
    assert summary["step"] == 8
    warned = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("ckpt-00000006 is damaged:")
    assert "resuming from ckpt-00000004" in warned[0]
    if name != "state.json":
        assert name in warned[0]
    # set aside, never deleted, and not counted by the rotation
    assert (run / "checkpoints" / "damaged" / "ckpt-00000006").is_dir()
    assert (run / "checkpoints" / "ckpt-00000008").is_dir()
    steps = _rows(run)
    assert steps == sorted(set(steps)) and steps[-1] == 8


def test_metric_log_keeps_one_row_per_step_after_a_kill(first_attempt):
    from distgan.train import train_local

    run, cfg = first_attempt()
    # a kill at step 6, before its checkpoint was written: the log already has row 6
    import shutil

    shutil.rmtree(run / "checkpoints" / "ckpt-00000006")
    assert _rows(run) == [2, 4, 6]
    train_local(cfg, resume=True)
    assert _rows(run) == [2, 4, 6, 8]
    dropped = [json.loads(x)["step"] for x in (run / "metrics.dropped.jsonl").read_text().splitlines()]
    assert dropped == [6]
    # TensorBoard: one folder per attempt, so no curve doubles back
    assert sorted(p.name for p in (run / "tb").iterdir()) == ["from-00000000", "from-00000004"]


def test_no_valid_checkpoint_left_is_one_clear_error(first_attempt):
    run, _ = first_attempt(until=2)
    _damage(run / "checkpoints" / "ckpt-00000002" / "generator.weights.h5", "truncate")
    r = _train("--set", f"run.dir={run}", "--resume")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "ckpt-00000002 is damaged: generator.weights.h5 is truncated" in r.stderr
    assert "no valid checkpoint left" in r.stderr


def test_a_checkpoint_of_another_model_names_the_differing_keys(first_attempt):
    from distgan import checkpoint
    from distgan.train import build_trainer

    run, _ = first_attempt(until=2)
    other = build_trainer(_smoke_cfg(run, "model.gen_filters=[8, 8]", "model.blocks=1"))
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.restore(other, run / "checkpoints" / "ckpt-00000002")
    msg = str(e.value)
    assert "from another model config" in msg and "model.gen_filters" in msg and "model.blocks" in msg
    assert "model.stem" not in msg


def test_export_and_denoise_use_the_newest_valid_checkpoint(first_attempt, tmp_path):
    run, _ = first_attempt()
    _damage(run / "checkpoints" / "ckpt-00000006" / "generator_ema.weights.h5", "corrupt")
    r = run_cli("export", str(run), "-o", str(tmp_path / "g.keras"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ckpt-00000006 is damaged" in r.stderr and "using ckpt-00000004" in r.stderr
    r = run_cli("export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "h.keras"))
    assert r.returncode == 2 and "no such" in r.stderr and "Traceback" not in r.stderr


def test_init_from_fine_tunes_a_trained_model(first_attempt, tmp_path):
    """train.init_from starts G, its average and D from a run's weights (not the step or
    the schedule); a model of another shape, or no model, is one clear line."""
    from distgan.train import build_trainer

    run, _ = first_attempt(until=2)
    ckpt = run / "checkpoints" / "ckpt-00000002"
    tuned = build_trainer(_smoke_cfg(tmp_path / "ft", f"train.init_from={run}"))
    fresh = build_trainer(_smoke_cfg(tmp_path / "ft2"))
    saved = _weights(ckpt / "generator_ema.weights.h5")
    for model in (tuned.generator, tuned.ema_generator):
        got = sorted(float(np.abs(w).sum()) for w in model.get_weights())
        assert np.allclose(got, sorted(float(np.abs(w).sum()) for w in saved), rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in
               zip(tuned.generator.get_weights(), fresh.generator.get_weights()))
    d_saved = sorted(float(np.abs(w).sum()) for w in _weights(ckpt / "discriminator.weights.h5"))
    d_got = sorted(float(np.abs(w).sum()) for w in tuned.discriminator.get_weights())
    assert np.allclose(d_got, d_saved, rtol=1e-6)
    assert int(tuned.step.numpy()) == 0 and int(tuned.g_opt.iterations.numpy()) == 0
    # another discriminator: G still comes from the run, D starts afresh
    other_d = build_trainer(_smoke_cfg(tmp_path / "ft4", f"train.init_from={run}",
                                       "model.disc_filters=[8, 8]"))
    got = sorted(float(np.abs(w).sum()) for w in other_d.generator.get_weights())
    assert np.allclose(got, sorted(float(np.abs(w).sum()) for w in saved), rtol=1e-6)
    # an exported .keras file works the same; a run then trains from it to its end
    exported = tmp_path / "g.keras"
    assert run_cli("export", str(run), "-o", str(exported)).returncode == 0
    r = _train("--set", f"run.dir={tmp_path / 'ft3'}", "--set", f"train.init_from={exported}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["step"] == 8
    # another generator shape names the differing keys; a missing model is one line
    r = _train("--set", f"run.dir={tmp_path / 'bad'}", "--set", f"train.init_from={run}",
               "--set", "model.gen_filters=[8, 8]")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "model.gen_filters: [8, 16] there, [8, 8] here" in r.stderr
    r = _train("--set", f"run.dir={tmp_path / 'bad2'}", "--set", f"train.init_from={tmp_path / 'none'}")
    assert r.returncode == 2 and "train.init_from:" in r.stderr and "no such model" in r.stderr
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("ckpt-*"))

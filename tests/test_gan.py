import numpy as np
import pytest

from distgan.config import load_config
from distgan.data import LocalBatches, open_source
from distgan.train import build_trainer

from .conftest import ROOT


def _cfg(*sets):
    return load_config(ROOT / "configs" / "smoke.yaml", ["run.tensorboard=false", *sets])


def _snapshot(model):
    return [np.array(v.numpy()) for v in model.weights]  # trainable and BN statistics


def _batch(cfg, step=0):
    src, _ = open_source(cfg.data.source).split(cfg.data.eval_images)
    return LocalBatches(cfg, src).batch(step)


def test_step_ratio_is_honoured():
    cfg = _cfg("train.d_steps=2", "train.g_steps=3")
    t = build_trainer(cfg)
    b = _batch(cfg)
    for _ in range(2):
        t.train_on("gan", b)
    assert int(t.d_opt.iterations.numpy()) == 4
    assert int(t.g_opt.iterations.numpy()) == 6


@pytest.mark.parametrize("phase", ["pretrain_d", "gan_d"])
def test_d_step_leaves_g_untouched(phase):
    cfg = _cfg("train.d_steps=1", "train.g_steps=1")
    t = build_trainer(cfg)
    b = t.distribute(_batch(cfg))
    g0, d0 = _snapshot(t.generator), _snapshot(t.discriminator)
    if phase == "pretrain_d":
        t.pretrain_d_step(b)
    else:
        fake = t.generate(b["noisy"], b["params"], training=False)
        t._d_update(b["clean"], fake, salt=0)
    assert all(np.array_equal(a, c) for a, c in zip(g0, _snapshot(t.generator)))
    assert not all(np.array_equal(a, c) for a, c in zip(d0, _snapshot(t.discriminator)))


def test_g_step_leaves_d_untouched():
    cfg = _cfg()
    t = build_trainer(cfg)
    b = t.distribute(_batch(cfg))
    g0, d0 = _snapshot(t.generator), _snapshot(t.discriminator)
    t._g_update(b["clean"], b["noisy"], b["params"], adversarial=True)
    assert all(np.array_equal(a, c) for a, c in zip(d0, _snapshot(t.discriminator)))
    assert not all(np.array_equal(a, c) for a, c in zip(g0, _snapshot(t.generator)))


def test_tiny_dataset_overfits():
    cfg = _cfg("train.lr_g=0.003", "data.batch_size=8")
    t = build_trainer(cfg)
    b = _batch(cfg)
    first = t.train_on("pretrain_g", b)["mse"]
    for _ in range(150):
        last = t.train_on("pretrain_g", b)["mse"]
    noisy_mse = float(np.mean((b["noisy"] - b["clean"]) ** 2))
    assert last < 0.3 * first and last < noisy_mse


def test_losses_are_finite_and_d_accuracy_is_a_fraction():
    cfg = _cfg()
    t = build_trainer(cfg)
    out = t.train_on("gan", _batch(cfg))
    assert {"d_loss", "d_acc", "g_loss", "g_adv", "mse"} <= set(out)
    assert all(np.isfinite(v) for v in out.values()) and 0 <= out["d_acc"] <= 1


def test_resume_takes_the_learning_rates_from_the_config(tmp_path):
    from distgan import checkpoint

    cfg = _cfg("train.lr_g=0.001", "train.lr_d=0.002")
    trainer = build_trainer(cfg)
    trainer.train_on("pretrain_g", _batch(cfg))
    saved = checkpoint.save(trainer, tmp_path, keep=1)
    fine = _cfg("train.lr_g=0.0001", "train.lr_d=0.0002")
    again = build_trainer(fine)
    checkpoint.restore(again, saved)
    assert np.isclose(float(again.g_opt.learning_rate.numpy()), 1e-4)
    assert np.isclose(float(again.d_opt.learning_rate.numpy()), 2e-4)
    # everything else comes from the checkpoint
    assert int(again.g_opt.iterations.numpy()) == int(trainer.g_opt.iterations.numpy()) == 1
    assert all(np.array_equal(a, b) for a, b in zip(_snapshot(again.generator), _snapshot(trainer.generator)))

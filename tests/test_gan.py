import numpy as np
import pytest

from distgan.config import load_config
from distgan.data import LocalBatches, open_source
from distgan.gan import g_learning_rate, pixel_loss
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
    cfg = _cfg("train.lr_g=0.003", "train.schedule=constant", "data.batch_size=8")
    t = build_trainer(cfg)
    b = _batch(cfg)
    first = t.train_on("pretrain_g", b)["mse"]
    for _ in range(150):
        last = t.train_on("pretrain_g", b)["mse"]
    noisy_mse = float(np.mean((b["noisy"] - b["clean"]) ** 2))
    assert last < 0.5 * first and last < noisy_mse


def test_losses_are_finite_and_d_accuracy_is_a_fraction():
    cfg = _cfg()
    t = build_trainer(cfg)
    out = t.train_on("gan", _batch(cfg))
    assert {"d_loss", "d_acc", "g_loss", "g_adv", "mse"} <= set(out)
    assert all(np.isfinite(v) for v in out.values()) and 0 <= out["d_acc"] <= 1


def test_resume_takes_the_learning_rates_from_the_config(tmp_path):
    from distgan import checkpoint

    cfg = _cfg("train.lr_g=0.001", "train.lr_d=0.002", "train.schedule=constant")
    trainer = build_trainer(cfg)
    trainer.train_on("pretrain_g", _batch(cfg))
    saved = checkpoint.save(trainer, tmp_path, keep=1)
    fine = _cfg("train.lr_g=0.0001", "train.lr_d=0.0002", "train.schedule=constant")
    again = build_trainer(fine)
    checkpoint.restore(again, saved)
    assert np.isclose(float(again.g_opt.learning_rate.numpy()), 1e-4)
    assert np.isclose(float(again.d_opt.learning_rate.numpy()), 2e-4)
    # everything else comes from the checkpoint
    assert int(again.g_opt.iterations.numpy()) == int(trainer.g_opt.iterations.numpy()) == 1
    assert all(np.array_equal(a, b) for a, b in zip(_snapshot(again.generator), _snapshot(trainer.generator)))


def test_ema_takes_one_warmed_up_step_per_batch_and_is_what_evaluation_uses():
    cfg = _cfg("train.ema=0.5")
    t = build_trainer(cfg)
    assert t.ema_generator is not t.generator
    w0 = _snapshot(t.generator)
    assert all(np.array_equal(a, b) for a, b in zip(w0, _snapshot(t.ema_generator)))
    b = _batch(cfg)
    t.train_on("pretrain_g", b)
    w1 = _snapshot(t.generator)
    decay = min(0.5, 2 / 11)  # (1 + n) / (10 + n) after n = 1 update
    want = [decay * a + (1 - decay) * c for a, c in zip(w0, w1)]
    assert all(np.allclose(e, w, atol=1e-6) for e, w in zip(_snapshot(t.ema_generator), want))
    assert any(not np.allclose(e, c) for e, c in zip(_snapshot(t.ema_generator), w1))
    t.train_on("pretrain_d", b)  # D's phase leaves G and its average alone
    assert all(np.allclose(e, w, atol=1e-6) for e, w in zip(_snapshot(t.ema_generator), want))
    out = np.asarray(t.denoise_fn()(b["noisy"], b["params"]))
    assert np.allclose(out, t.ema_generator([b["noisy"], b["params"]], training=False), atol=1e-6)
    assert not np.allclose(out, t.generator([b["noisy"], b["params"]], training=False), atol=1e-6)


def test_without_ema_evaluation_uses_the_trained_weights():
    t = build_trainer(_cfg("train.ema=0"))
    assert t.ema_generator is t.generator


def test_cosine_schedule_warms_up_then_decays_to_lr_min():
    cfg = _cfg("train.lr_g=0.001", "train.lr_min=0.00001", "train.warmup_steps=10",
               "train.pretrain_g_steps=100", "train.steps=10", "train.g_steps=1")
    lr = g_learning_rate(cfg)
    values = [float(lr(s)) for s in (0, 5, 10, 60, 110)]
    assert np.isclose(values[0], 1e-4) and np.isclose(values[1], 5.5e-4) and np.isclose(values[2], 1e-3)
    assert 1e-5 < values[3] < 1e-3 and np.isclose(values[4], 1e-5)
    assert g_learning_rate(_cfg("train.schedule=constant", "train.lr_g=0.003")) == 0.003


def test_pixel_losses():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.random((2, 4, 4, 3)).astype(np.float32) for _ in range(2))
    d = (a - b).reshape(2, -1)
    for kind, want in (("mse", np.mean(d**2, 1)), ("l1", np.mean(np.abs(d), 1)),
                       ("charbonnier", np.mean(np.sqrt(d**2 + 1e-6), 1))):
        assert np.allclose(pixel_loss(kind, tf.constant(a), tf.constant(b)).numpy(), want, rtol=1e-5)


@pytest.mark.parametrize("loss", ["l1", "charbonnier"])
def test_other_losses_train(loss):
    cfg = _cfg(f"train.loss={loss}", "train.schedule=constant", "train.lr_g=0.001", "data.batch_size=8",
               "noise.kinds=[gaussian]", "noise.mix_prob=0")
    t = build_trainer(cfg)
    b = _batch(cfg)
    first = t.train_on("pretrain_g", b)
    for _ in range(60):
        last = t.train_on("pretrain_g", b)
    assert last["g_loss"] < 0.95 * first["g_loss"] and last["mse"] < first["mse"]


def test_clip_norm_bounds_the_gradient():
    b = None
    moved = {}
    for clip in (0.0, 1e-12):
        cfg = _cfg(f"train.clip_norm={clip}", "train.schedule=constant", "train.optimizer=rmsprop")
        t = build_trainer(cfg)
        b = b or _batch(cfg)
        w0 = _snapshot(t.generator)
        t.train_on("pretrain_g", b)
        moved[clip] = max(float(np.abs(x - y).max()) for x, y in zip(w0, _snapshot(t.generator)))
    assert moved[1e-12] < 1e-3 * moved[0.0]


def test_adamw_decays_weights():
    cfg = _cfg("train.optimizer=adamw", "train.weight_decay=0.5", "train.schedule=constant")
    t = build_trainer(cfg)
    assert type(t.g_opt).__name__ == "AdamW" and np.isclose(t.g_opt.weight_decay, 0.5)

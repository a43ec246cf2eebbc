"""The training steps: G pretraining, D pretraining, and the adversarial step.

Every step is written for one replica and run through `strategy.run`, so the same code
serves local mode (the default strategy), MirroredStrategy and Ray Train's
MultiWorkerMirroredStrategy. Losses are per-example and averaged over the *global*
batch with `tf.nn.compute_average_loss`, so summing replicas gives the global mean.

Per batch, the GAN step runs `train.d_steps` discriminator steps then `train.g_steps`
generator steps:
  D: clean chunks are real, denoised chunks fake; smoothed noisy labels; BCE; Adam.
  G: MSE to clean + adv_weight * BCE(D(denoised), real) [+ l1_weight * L1]; RMSprop.
A D step touches only D's variables, a G step only G's (G runs in inference mode while
D learns, and D in inference mode while G learns, so not even BatchNorm statistics move).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .config import Config
from .models import build_decoder, build_discriminator, build_encoder, build_generator
from .parallel import Placement

def phase_of(step: int, cfg: Config) -> str:
    t = cfg.train
    if step < t.pretrain_g_steps:
        return "pretrain_g"
    if step < t.pretrain_g_steps + t.pretrain_d_steps:
        return "pretrain_d"
    return "gan"


def total_steps(cfg: Config) -> int:
    t = cfg.train
    return t.pretrain_g_steps + t.pretrain_d_steps + t.steps


def _per_example_mean(x: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(tf.reshape(x, (tf.shape(x)[0], -1)), axis=1)


def _bce(y_true: tf.Tensor, y_prob: tf.Tensor) -> tf.Tensor:
    return keras.losses.binary_crossentropy(y_true, y_prob)  # (B,)


class GANTrainer:
    """Owns G (as encoder + decoder), D, both optimizers and the compiled steps."""

    def __init__(self, cfg: Config, placement: Placement, strategy: tf.distribute.Strategy):
        self.cfg = cfg
        self.place = placement
        self.strategy = strategy
        m, chunk = cfg.model, cfg.data.chunk
        with strategy.scope():
            with placement.encoder():
                self.encoder = build_encoder(m, chunk)
            with placement.decoder():
                self.decoder = build_decoder(m, chunk)
            self.generator = build_generator(m, chunk, self.encoder, self.decoder)
            with placement.discriminator():
                self.discriminator = build_discriminator(m, chunk)
            self.g_opt = keras.optimizers.RMSprop(cfg.train.lr_g)
            self.d_opt = keras.optimizers.Adam(cfg.train.lr_d, beta_1=0.5)
            # Build optimizer slots now, inside the scope: created lazily inside a traced
            # step under MirroredStrategy they fail ("must feed a value for placeholder").
            self.g_opt.build(self.generator.trainable_variables)
            self.d_opt.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        xla = cfg.train.xla and placement.mode != "split"  # XLA cannot span devices
        self._compiled = {
            phase: tf.function(self._distributed(fn), jit_compile=False, reduce_retracing=True)
            for phase, fn in (
                ("pretrain_g", self._wrap_xla(self.pretrain_g_step, xla)),
                ("pretrain_d", self._wrap_xla(self.pretrain_d_step, xla)),
                ("gan", self._wrap_xla(self.gan_step, xla)),
            )
        }

    # ---------------------------------------------------------------- forward

    def generate(self, noisy, params, training: bool):
        with self.place.encoder():
            feats = self.encoder([noisy, params], training=training)
        feats = feats if isinstance(feats, list | tuple) else [feats]
        with self.place.decoder():
            return self.decoder([*feats, noisy], training=training)

    def judge(self, images, training: bool):
        with self.place.discriminator():
            return self.discriminator(images, training=training)

    def _uniform(self, n, salt: int):
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        seed = tf.stack(
            [tf.cast(self.cfg.run.seed, tf.int64) * 1009 + salt,
             self.step * 64 + tf.cast(replica, tf.int64)]
        )
        # Philox pinned: "auto_select" may pick another algorithm under XLA.
        return tf.random.stateless_uniform((n, 1), seed=seed, alg="philox")

    # ---------------------------------------------------------------- steps

    def _apply(self, opt, loss, tape, variables):
        grads = tape.gradient(loss, variables)
        opt.apply_gradients(zip(grads, variables))

    def _d_update(self, real, fake, salt: int) -> dict:
        eps = self.cfg.train.label_noise
        n = tf.shape(real)[0]
        # Smoothed noisy labels: real in [1 - eps, 1], fake in [0, eps].
        y_real = 1.0 - eps * self._uniform(n, salt)
        y_fake = eps * self._uniform(n, salt + 1)
        with tf.GradientTape() as tape:  # D learns to tell clean from fake
            p = self.judge(tf.concat([real, fake], 0), training=True)
            p_real, p_fake = p[:n], p[n:]
            per_ex = _bce(y_real, p_real) + _bce(y_fake, p_fake)
            loss = tf.nn.compute_average_loss(per_ex)
        self._apply(self.d_opt, loss, tape, self.discriminator.trainable_variables)
        correct = 0.5 * (tf.cast(p_real[:, 0] > 0.5, tf.float32) + tf.cast(p_fake[:, 0] <= 0.5, tf.float32))
        return {"d_loss": loss, "d_acc": tf.nn.compute_average_loss(correct)}

    def _g_update(self, clean, noisy, params, adversarial: bool) -> dict:
        t = self.cfg.train
        with tf.GradientTape() as tape:  # G learns to denoise (and, in the GAN, to fool D)
            fake = self.generate(noisy, params, training=True)
            mse = _per_example_mean(tf.square(fake - clean))
            per_ex = mse
            out = {}
            if t.l1_weight:
                per_ex = per_ex + t.l1_weight * _per_example_mean(tf.abs(fake - clean))
            if adversarial:
                adv = _bce(tf.ones_like(fake[:, :1, 0, 0]), self.judge(fake, training=False))
                per_ex = per_ex + t.adv_weight * adv
                out["g_adv"] = tf.nn.compute_average_loss(adv)
            loss = tf.nn.compute_average_loss(per_ex)
        self._apply(self.g_opt, loss, tape, self.generator.trainable_variables)
        out.update(g_loss=loss, mse=tf.nn.compute_average_loss(mse))
        return out

    def pretrain_g_step(self, batch) -> dict:
        return self._g_update(batch["clean"], batch["noisy"], batch["params"], adversarial=False)

    def pretrain_d_step(self, batch) -> dict:
        # The paper's D pretraining: clean chunks are real, noisy ones fake.
        return self._d_update(batch["clean"], batch["noisy"], salt=0)

    def gan_step(self, batch) -> dict:
        clean, noisy, params = batch["clean"], batch["noisy"], batch["params"]
        out: dict = {}
        for i in range(self.cfg.train.d_steps):
            fake = self.generate(noisy, params, training=False)
            out.update(self._d_update(clean, fake, salt=2 + 2 * i))
        for _ in range(self.cfg.train.g_steps):
            out.update(self._g_update(clean, noisy, params, adversarial=True))
        return out

    # ---------------------------------------------------------------- running

    @staticmethod
    def _wrap_xla(fn, xla: bool):
        return tf.function(fn, jit_compile=True) if xla else fn

    def _distributed(self, fn):
        def run(batch):
            per_replica = self.strategy.run(fn, args=(batch,))
            return {
                k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()
            }

        return run

    def distribute(self, batch: dict):
        """Hand a worker-local numpy batch to the strategy, split across local replicas."""
        keys = ("clean", "noisy", "params")
        if self.strategy.num_replicas_in_sync == 1:
            return {k: tf.convert_to_tensor(batch[k]) for k in keys}
        n_local = len(self.strategy.extended.worker_devices)

        def value_fn(ctx):
            i = ctx.replica_id_in_sync_group % n_local
            per = len(batch["clean"]) // n_local
            return {k: tf.convert_to_tensor(batch[k][i * per : (i + 1) * per]) for k in keys}

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def train_on(self, phase: str, batch: dict) -> dict[str, float]:
        out = self._compiled[phase](self.distribute(batch))
        self.step.assign_add(1)
        return {k: float(v) for k, v in out.items()}

    def denoise_fn(self):
        """A compiled inference function (noisy, params) -> denoised, for eval and denoise."""

        @tf.function(reduce_retracing=True)
        def infer(noisy, params):
            return self.generate(noisy, params, training=False)

        return infer

"""The training steps: G pretraining, D pretraining, and the adversarial step.

Every step is written for one replica and run through `strategy.run`, so the same code
serves local mode (the default strategy), MirroredStrategy and Ray Train's
MultiWorkerMirroredStrategy. Losses are per-example and averaged over the *global*
batch with `tf.nn.compute_average_loss`, so summing replicas gives the global mean.

Per batch, the GAN step runs `train.d_steps` discriminator steps then `train.g_steps`
generator steps:
  D: clean chunks are real, denoised chunks fake; smoothed noisy labels; BCE; Adam.
  G: loss(denoised, clean) + adv_weight * BCE(D(denoised), real) [+ l1_weight * L1], with
     `train.loss` mse, l1 or charbonnier; `train.optimizer` (Adam, AdamW or the paper's
     RMSprop) on `train.schedule` (warm-up, then cosine decay over all G updates).
A D step touches only D's variables, a G step only G's (G runs in inference mode while
D learns, and D in inference mode while G learns, so not even BatchNorm statistics move).

After every batch that moved G, an exponential moving average of G's weights
(`train.ema`) takes a step; `ema_generator` holds it, and evaluation, checkpoints' exported
weights and `distgan export` use it. Its decay warms up as min(ema, (1 + n) / (10 + n))
over the n G updates so far, so that a short run's average is not its initial weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from .config import Config
from .models import build_decoder, build_discriminator, build_encoder, build_generator
from .parallel import Placement, bfloat16_supported

CHARBONNIER_EPS = 1e-3  # on the [0, 1] scale, as BasicSR's default

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


def g_updates(cfg: Config) -> int:
    """How many times G's optimizer steps in a whole run: the schedule's length."""
    t = cfg.train
    return t.pretrain_g_steps + t.steps * t.g_steps


def g_learning_rate(cfg: Config):
    """G's learning rate: a constant, or warm-up then cosine decay to `lr_min`."""
    t = cfg.train
    if t.schedule == "constant":
        return t.lr_g
    warmup = min(t.warmup_steps, max(g_updates(cfg) - 1, 0))
    # The warm-up starts at lr_g / warmup_steps, not at 0: the first update counts too.
    return keras.optimizers.schedules.CosineDecay(
        t.lr_g / warmup if warmup else t.lr_g, max(g_updates(cfg) - warmup, 1),
        alpha=min(t.lr_min / t.lr_g, 1.0) if t.lr_g else 0.0,
        warmup_target=t.lr_g if warmup else None, warmup_steps=warmup)


def g_optimizer(cfg: Config) -> keras.optimizers.Optimizer:
    t, lr = cfg.train, g_learning_rate(cfg)
    if t.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    return keras.optimizers.Adam(lr)


def compute_dtype(cfg: Config) -> str | None:
    """The Keras dtype policy G and D are built with: None (float32) or mixed_bfloat16."""
    precision = cfg.train.precision
    if cfg.model.generator != "unet":
        return None  # the paper's autoencoder stays in float32
    if precision == "auto":
        precision = "bfloat16" if bfloat16_supported() else "float32"
    return "mixed_bfloat16" if precision == "bfloat16" else None


def _bce(y_true: tf.Tensor, y_prob: tf.Tensor) -> tf.Tensor:
    return keras.losses.binary_crossentropy(y_true, tf.cast(y_prob, tf.float32))  # (B,)


def pixel_loss(kind: str, fake: tf.Tensor, clean: tf.Tensor) -> tf.Tensor:
    """Per-example reconstruction loss: mse, l1 or charbonnier."""
    d = fake - clean
    if kind == "l1":
        return _per_example_mean(tf.abs(d))
    if kind == "charbonnier":
        return _per_example_mean(tf.sqrt(tf.square(d) + CHARBONNIER_EPS**2))
    return _per_example_mean(tf.square(d))


class GANTrainer:
    """Owns G (as encoder + decoder), D, both optimizers and the compiled steps."""

    def __init__(self, cfg: Config, placement: Placement, strategy: tf.distribute.Strategy):
        self.cfg = cfg
        self.place = placement
        self.strategy = strategy
        m, chunk, dtype = cfg.model, cfg.data.chunk, compute_dtype(cfg)
        with strategy.scope():
            with placement.encoder():
                self.encoder = build_encoder(m, chunk, dtype)
            with placement.decoder():
                self.decoder = build_decoder(m, chunk, dtype)
            self.generator = build_generator(m, chunk, self.encoder, self.decoder)
            self.ema_generator = self.generator
            if cfg.train.ema:
                # The average, in float32, on the devices of the parts it averages.
                with placement.encoder():
                    ema_enc = build_encoder(m, chunk)
                with placement.decoder():
                    ema_dec = build_decoder(m, chunk)
                self.ema_generator = build_generator(m, chunk, ema_enc, ema_dec)
                for avg, w in zip(self.ema_generator.weights, self.generator.weights):
                    avg.assign(w)
            with placement.discriminator():
                self.discriminator = build_discriminator(m, chunk, dtype)
            self.g_opt = g_optimizer(cfg)
            self.d_opt = keras.optimizers.Adam(cfg.train.lr_d, beta_1=0.5)
            # Build optimizer slots now, inside the scope: created lazily inside a traced
            # step under MirroredStrategy they fail ("must feed a value for placeholder").
            self.g_opt.build(self.generator.trainable_variables)
            self.d_opt.build(self.discriminator.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.spent = {"cpu_s": 0.0, "wall_s": 0.0}  # training time before this process
        xla = cfg.train.xla and placement.mode != "split"  # XLA cannot span devices
        self._compiled = {
            phase: tf.function(self._distributed(fn, moves_g=phase != "pretrain_d"),
                               jit_compile=False, reduce_retracing=True)
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

    def _apply(self, opt, loss, tape, variables, clip_norm: float = 0.0):
        grads = tape.gradient(loss, variables)
        if clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, clip_norm)
        opt.apply_gradients(zip(grads, variables))

    def _ema_update(self) -> None:
        """One step of the weights' moving average (cross-replica: every copy gets it)."""
        n = tf.cast(self.g_opt.iterations, tf.float32)
        decay = tf.minimum(self.cfg.train.ema, (1.0 + n) / (10.0 + n))
        for avg, w in zip(self.ema_generator.weights, self.generator.weights):
            avg.assign(decay * avg + (1.0 - decay) * tf.cast(w, avg.dtype))

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
            per_ex = mse if t.loss == "mse" else pixel_loss(t.loss, fake, clean)
            out = {}
            if t.l1_weight:
                per_ex = per_ex + t.l1_weight * _per_example_mean(tf.abs(fake - clean))
            if adversarial:
                adv = _bce(tf.ones_like(fake[:, :1, 0, 0]), self.judge(fake, training=False))
                per_ex = per_ex + t.adv_weight * adv
                out["g_adv"] = tf.nn.compute_average_loss(adv)
            loss = tf.nn.compute_average_loss(per_ex)
        self._apply(self.g_opt, loss, tape, self.generator.trainable_variables, t.clip_norm)
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

    def _distributed(self, fn, moves_g: bool):
        def run(batch):
            per_replica = self.strategy.run(fn, args=(batch,))
            out = {
                k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in per_replica.items()
            }
            if moves_g and self.ema_generator is not self.generator:
                self._ema_update()
            return out

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
        """A compiled inference function (noisy, params) -> denoised, for eval and denoise:
        the moving average of G where there is one."""
        if self.ema_generator is self.generator:

            @tf.function(reduce_retracing=True)
            def infer(noisy, params):
                return self.generate(noisy, params, training=False)

            return infer
        ema = self.ema_generator
        return tf.function(lambda noisy, params: ema([noisy, params], training=False),
                           reduce_retracing=True)

"""Device placement inside one worker (`parallel.mode`).

    single    one device (TensorFlow's default placement)
    mirrored  MirroredStrategy over the local GPUs (or, with none, the logical CPUs)
    split     model parallel: encoder, decoder and discriminator each on its own device

`split` must hold when layers are *called*, not only where their variables are built,
so `Placement` hands out device scopes that wrap both the building and every call.
Across workers, Ray Train's MultiWorkerMirroredStrategy replaces the strategy here.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from .config import ParallelConfig

log = logging.getLogger("distgan.parallel")


def _short(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'."""
    return name.rsplit("device:", 1)[-1]


def local_devices() -> list[str]:
    """Logical accelerator devices if any, else logical CPUs ('GPU:0', ... or 'CPU:0', ...)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [_short(d.name) for d in (gpus or tf.config.list_logical_devices("CPU"))]


def bfloat16_supported() -> bool:
    """A GPU, or a CPU whose flags show native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    if tf.config.list_logical_devices("GPU"):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class Placement:
    mode: str
    encoder_device: str | None = None
    decoder_device: str | None = None
    discriminator_device: str | None = None

    @classmethod
    def from_config(cls, cfg: ParallelConfig) -> Placement:
        if cfg.mode != "split":
            return cls(cfg.mode)
        want = [cfg.encoder_device, cfg.decoder_device, cfg.discriminator_device]
        have = local_devices()
        all_logical = {_short(d.name) for d in tf.config.list_logical_devices()}
        if all(w.upper() in all_logical for w in (x.upper() for x in want)):
            return cls("split", *(w.upper() for w in want))
        # Fewer devices than asked: spread the three parts over what exists, and say so.
        got = [have[i % len(have)] for i in range(3)]
        log.warning(
            "parallel.split: asked for %s but this worker has %s; running encoder on %s, "
            "decoder on %s, discriminator on %s",
            ", ".join(want), ", ".join(have), *got,
        )
        return cls("split", *got)

    def _scope(self, device: str | None):
        return tf.device(device) if self.mode == "split" and device else contextlib.nullcontext()

    def encoder(self):
        return self._scope(self.encoder_device)

    def decoder(self):
        return self._scope(self.decoder_device)

    def discriminator(self):
        return self._scope(self.discriminator_device)

    def strategy(self) -> tf.distribute.Strategy:
        if self.mode == "mirrored":
            devices = local_devices()
            if len(devices) < 2:
                log.warning("parallel.mirrored: only %s here; training on one device", devices)
            return tf.distribute.MirroredStrategy(devices=devices)
        return tf.distribute.get_strategy()  # the default (no-op) strategy


def split_logical_cpus(n: int) -> None:
    """Split the CPU into n logical devices (tests and demos of mirrored/split without GPUs).

    Must run before TensorFlow initialises its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)

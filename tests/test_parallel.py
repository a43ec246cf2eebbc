"""Placement inside a worker, on logical CPU devices (TensorFlow must be configured before it
starts, so each check runs in a fresh interpreter)."""

import subprocess
import sys
import textwrap

from .conftest import ROOT

PRELUDE = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from distgan.parallel import split_logical_cpus
split_logical_cpus({n})
import numpy as np
import tensorflow as tf
from distgan.config import load_config
from distgan.data import LocalBatches, open_source
from distgan.train import build_trainer

def cfg_with(*sets):
    return load_config("configs/smoke.yaml", ["run.tensorboard=false", *sets])

def batch(cfg):
    return LocalBatches(cfg, open_source("samples").split(1)[0]).batch(0)
"""


def _run(body: str, n_devices: int) -> subprocess.CompletedProcess:
    code = PRELUDE.format(n=n_devices) + textwrap.dedent(body)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


SPLIT = ["parallel.mode=split", "parallel.encoder_device=CPU:1",
         "parallel.decoder_device=CPU:2", "parallel.discriminator_device=CPU:3"]


def test_split_places_variables_and_ops_on_their_devices():
    _run(f"""
    cfg = cfg_with(*{SPLIT!r})
    t = build_trainer(cfg)
    dev = lambda m: {{v.value.device.rsplit(":", 2)[-2] + ":" + v.value.device[-1]
                     for v in m.weights}}
    assert dev(t.encoder) == {{"CPU:1"}}, dev(t.encoder)
    assert dev(t.decoder) == {{"CPU:2"}}, dev(t.decoder)
    assert dev(t.discriminator) == {{"CPU:3"}}, dev(t.discriminator)
    graph = t._compiled["gan"].get_concrete_function(t.distribute(batch(cfg))).graph
    seen = {{}}
    for op in graph.get_operations():
        if op.type in ("Conv2D", "Conv2DBackpropInput", "LeakyRelu", "MatMul", "Sigmoid"):
            scope = op.name.split("/")[0].rsplit("_", 1)[0]
            if scope in ("encoder", "decoder", "discriminator"):
                seen.setdefault(scope, set()).add(op.device[-5:])
    # ops run where their sub-model lives, when called, in the D and the G pass alike
    assert seen == {{"encoder": {{"CPU:1"}}, "decoder": {{"CPU:2"}}, "discriminator": {{"CPU:3"}}}}, seen
    """, 4)


def test_one_gan_step_under_split_equals_single():
    _run(f"""
    cfg_split, cfg_single = cfg_with(*{SPLIT!r}), cfg_with()
    b = batch(cfg_single)
    out = {{}}
    for name, cfg in (("split", cfg_split), ("single", cfg_single)):
        t = build_trainer(cfg)
        losses = t.train_on("gan", b)
        out[name] = (losses, [v.numpy() for v in t.generator.weights + t.discriminator.weights])
    (ls, ws), (l1, w1) = out["split"], out["single"]
    assert all(abs(ls[k] - l1[k]) < 1e-5 for k in l1), (ls, l1)
    assert all(np.allclose(a, c, atol=1e-5) for a, c in zip(ws, w1))
    """, 4)


def test_split_with_too_few_devices_falls_back_with_one_warning():
    r = _run("""
    import logging
    logging.basicConfig(level=logging.WARNING)
    cfg = cfg_with("parallel.mode=split", "parallel.encoder_device=GPU:0",
                   "parallel.decoder_device=GPU:1", "parallel.discriminator_device=GPU:2")
    t = build_trainer(cfg)
    assert np.isfinite(t.train_on("gan", batch(cfg))["g_loss"])
    """, 2)
    warnings = [ln for ln in r.stderr.splitlines() if "parallel.split" in ln]
    assert len(warnings) == 1
    assert "GPU:0, GPU:1, GPU:2" in warnings[0] and "running encoder on CPU:0" in warnings[0]


def test_mirrored_runs_replicas_in_sync():
    _run("""
    cfg = cfg_with("parallel.mode=mirrored")
    t = build_trainer(cfg)
    assert t.strategy.num_replicas_in_sync == 2
    for _ in range(2):
        losses = t.train_on("gan", batch(cfg))
    assert all(np.isfinite(v) for v in losses.values())
    assert int(t.g_opt.iterations.numpy()) == 2
    # every replica holds the same weights after the all-reduced updates
    for v in t.generator.trainable_variables[:4]:
        vals = [x.numpy() for x in t.strategy.experimental_local_results(v.value)]
        assert len(vals) == 2 and np.array_equal(vals[0], vals[1])
    """, 2)


def test_xla_step_gives_the_same_update():
    _run("""
    b = batch(cfg_with())
    res = []
    for xla in ("true", "false"):
        t = build_trainer(cfg_with(f"train.xla={xla}"))
        res.append((t.train_on("gan", b), [v.numpy() for v in t.generator.trainable_weights]))
    (lx, wx), (ln, wn) = res
    # G's side is the same to float rounding.
    assert all(abs(lx[k] - ln[k]) <= 1e-4 * abs(ln[k]) + 1e-6 for k in ("g_loss", "mse")), (lx, ln)
    # D's forward (BatchNorm batch statistics, sigmoid, then BCE on probabilities) runs in
    # another order under XLA. A fresh D is confident here (outputs from 0.05 to 0.99), and
    # there the BCE magnifies small output differences: 0.3 % on one smoke batch, 2.3 % on
    # another.
    assert abs(lx["d_loss"] - ln["d_loss"]) <= 0.05 * ln["d_loss"] and lx["d_acc"] == ln["d_acc"]
    assert all(np.allclose(a, c, atol=1e-5) for a, c in zip(wx, wn))
    """, 1)

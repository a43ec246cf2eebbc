"""What a training sample costs in FLOPs, and what that means in time: here and on GPUs.

For a config's generator and discriminator (default: configs/shipped.yaml, the shipped model),
one run:

  flops      FLOPs of one 64 px sample's forward pass, over the model's traced forward
             graph: TensorFlow's own FLOP statistics for Conv2D and MatMul, and for the
             transposed convolutions (Conv2DBackpropInput, which it has none for) 2 x kh x
             kw x in x out per input position; the same count for Conv2D is checked against
             TensorFlow's. A training step costs 3x the
             forward (the backward pass computes gradients for inputs and for weights, each
             as much as the forward); BatchNorm, activations and optimiser updates are left
             out (elementwise, a few % here).
  rate       the G-pretraining step measured on this machine (median of timed steps, batch
             of the config): samples/s and the FLOP rate it reaches.
  estimate   hours for N training samples (10^8 by default, what DnCNN-class denoisers see)
             at this machine's measured rate, and on GPUs at an assumed fraction of their
             fp32 peak (the A10G's 31.2 TFLOP/s; --utilisation, 0.4 by default).

`--quick` for a short run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import ROOT, emit, quick

from distgan.config import load_config
from distgan.data import LocalBatches, open_source
from distgan.models import build_discriminator, build_generator
from distgan.train import build_trainer

A10G_FP32_TFLOPS = 31.2


def graph_flops(model, inputs: list) -> dict[str, float]:
    """Forward FLOPs of one sample, by op type, over the model's forward graph traced at
    batch 1: Conv2D and MatMul by TensorFlow's registered statistics, and by our count for
    Conv2D as a check; Conv2DBackpropInput (what a transposed convolution runs, for which
    TensorFlow registers none) by our count, 2 x kh x kw x in x out per input position."""
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops

    specs = [tf.TensorSpec((1, *x.shape[1:]), tf.float32) for x in inputs]
    call = lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False)  # noqa: E731
    graph = tf.function(call).get_concrete_function(*specs).graph
    out = {"Conv2D": 0.0, "Conv2D_ours": 0.0, "Conv2DBackpropInput": 0.0, "MatMul": 0.0}
    for op in graph.get_operations():
        if op.type in ("Conv2D", "MatMul"):
            out[op.type] += tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        if op.type == "Conv2D":
            kh, kw, cin, cout = op.inputs[1].shape
            _, h, w, _ = op.outputs[0].shape
            out["Conv2D_ours"] += 2.0 * kh * kw * cin * cout * h * w
        elif op.type == "Conv2DBackpropInput":
            kh, kw, cout, cin = op.inputs[1].shape  # filter: (kh, kw, output ch, input ch)
            _, h, w, _ = op.inputs[2].shape  # the transposed convolution's input
            out["Conv2DBackpropInput"] += 2.0 * kh * kw * cin * cout * h * w
    return out


def step_rate(cfg, steps: int) -> float:
    """Samples/s of the G-pretraining step here, median of `steps` timed steps."""
    trainer = build_trainer(cfg)
    batches = LocalBatches(cfg, open_source("samples").split(cfg.data.eval_images)[0])
    times = []
    for s in range(steps + 2):  # 2 warm-up steps: tracing
        b = batches.batch(s)
        t = time.perf_counter()
        trainer.train_on("pretrain_g", b)
        if s >= 2:
            times.append(time.perf_counter() - t)
    return cfg.data.batch_size / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "shipped.yaml"))
    ap.add_argument("--samples", type=float, default=1e8)
    ap.add_argument("--utilisation", type=float, default=0.4)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, ["data.source=samples"] + (["data.batch_size=8"] if quick() else []))
    chunk = cfg.data.chunk
    g = build_generator(cfg.model, chunk)
    d = build_discriminator(cfg.model, chunk)
    per_sample = {}
    for name, model, inputs in (
        ("generator", g, [np.zeros((1, chunk, chunk, 3), np.float32), np.zeros((1, 7), np.float32)]),
        ("discriminator", d, [np.zeros((1, chunk, chunk, 3), np.float32)]),
    ):
        f = graph_flops(model, inputs)
        forward = f["Conv2D"] + f["Conv2DBackpropInput"] + f["MatMul"]
        per_sample[name] = forward
        emit(bench="flops", model=name, config=args.config, chunk=chunk,
             forward_gflop=round(forward / 1e9, 4), train_step_gflop=round(3 * forward / 1e9, 4),
             conv2d_gflop=round(f["Conv2D"] / 1e9, 4),
             transposed_conv_gflop=round(f["Conv2DBackpropInput"] / 1e9, 4),
             matmul_gflop=round(f["MatMul"] / 1e9, 6),
             conv2d_count_matches_tensorflow=bool(np.isclose(f["Conv2D_ours"], f["Conv2D"], rtol=1e-9)))
    g_step = 3 * per_sample["generator"]
    rate = step_rate(cfg, 3 if quick() else 10)
    emit(bench="flops", measure="rate", phase="pretrain_g", batch=cfg.data.batch_size,
         samples_per_s=round(rate, 1), achieved_gflop_per_s=round(rate * g_step / 1e9, 1))
    gpu = A10G_FP32_TFLOPS * 1e12 * args.utilisation
    for where, flop_per_s in (("this machine, measured", rate * g_step), ("1 A10G", gpu),
                              ("4 A10G (cluster/gpu.yaml)", 4 * gpu)):
        emit(bench="flops", measure="estimate", where=where, samples=args.samples,
             pflop=round(args.samples * g_step / 1e15, 1),
             hours=round(args.samples * g_step / flop_per_s / 3600, 2),
             assumed_fraction_of_fp32_peak=None if "measured" in where else args.utilisation)


if __name__ == "__main__":
    main()

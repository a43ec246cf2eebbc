"""The `distgan` command. Each subcommand is a thin shell over a module's function.

Heavy imports (TensorFlow, Ray) happen inside the subcommands, so `distgan --help`
and `distgan noise` start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

from .errors import UserError


def _seed_for(seed: int, name: str) -> list[int]:
    """A per-file seed: the same file gets the same noise whatever order it comes in."""
    return [seed, zlib.crc32(name.encode())]


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files and folders -> (image files, problems). A missing path is a problem, not a crash."""
    from .imagefile import list_images

    files, problems = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                problems.append(f"{p}: folder has no images")
            files += found
        elif p.exists():
            files.append(p)
        else:
            problems.append(f"{p}: no such file")
    return files, problems


def cmd_noise(args: argparse.Namespace) -> int:
    import numpy as np

    from .config import load_config
    from .imagefile import read_image, write_image
    from .noise import add_noise, parse_spec, sample_spec

    spec = parse_spec(args.noise)
    cfg = load_config(args.config, args.set)
    files, problems = expand_inputs(args.inputs)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for path in files:
        try:
            rgb, info = read_image(path)
        except UserError as e:
            problems.append(str(e))
            continue
        rng = np.random.default_rng(_seed_for(args.seed, path.name))
        concrete = sample_spec(cfg.noise, rng) if spec.is_random else spec
        noisy, params = add_noise(rgb, concrete, rng)
        target = out / (path.stem + ".png")
        write_image(target, noisy, info)
        meta = {
            "source": str(path),
            "spec": str(concrete),
            "params": [round(float(v), 6) for v in params],
            "seed": args.seed,
            "clipped_on_write": not concrete.clip,
        }
        (out / (path.stem + ".json")).write_text(json.dumps(meta, indent=1) + "\n")
        written += 1
    for p in problems:
        print(f"distgan: skipped {p}", file=sys.stderr)
    print(json.dumps({"written": written, "skipped": len(problems), "out": str(out)}))
    return 2 if problems else 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    from PIL import Image

    from . import data, raysession
    from .config import load_config

    cfg = load_config(args.config, args.set)
    source = data.open_source(cfg.data.source)
    raysession.connect()
    data.data_resource_limits(cfg)
    stats = data.make_stats()
    ds = data.build_dataset(cfg, source, epochs=1, stats=stats)
    t0 = time.perf_counter()
    clean, noisy, n = [], [], 0
    for i, b in enumerate(data.tf_batches(ds, cfg.data.batch_size, cfg.data.shuffle_buffer)):
        n += len(b["clean"])
        if len(clean) < 8:
            clean += list(b["clean"][: 8 - len(clean)])
            noisy += list(b["noisy"][: 8 - len(noisy)])
        if i + 1 >= args.batches:
            break
    dt = time.perf_counter() - t0
    import ray

    st = ray.get(stats.get.remote())
    if n == 0:
        raise UserError(f"data.source {cfg.data.source!r}: no usable image "
                        f"({st['skipped']} skipped: {st['skipped_files'][:3]})")
    pairs = [np.concatenate([c, x], axis=0) for c, x in zip(clean, noisy)]  # clean over noisy
    grid = np.concatenate(pairs, axis=1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(args.output)
    print(json.dumps({"images": st["images"], "skipped": st["skipped"], "chunks": n,
                      "chunks_per_s": round(n / dt, 1), "noise_kinds": st["noise_kinds"]}))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train

    return train.run_from_args(args)


def _add_config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", "-c", required=required, help="YAML config (configs/*.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value; repeatable (e.g. --set train.steps=100)",
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="distgan",
        description="Train a denoising GAN on Ray, and denoise photos of any size.",
    )
    parser.add_argument("--version", action="version", version=f"distgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("noise", help="write noisy copies of images (+ JSON with spec and params)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--noise", required=True, metavar="SPEC", help="e.g. gaussian:25, random")
    p.add_argument("--seed", type=int, default=0)
    _add_config_args(p)
    p.set_defaults(func=cmd_noise)

    p = sub.add_parser("data", help="inspect the training data pipeline")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser("preview", help="grid of clean/noisy chunk pairs + throughput JSON")
    _add_config_args(q)
    q.add_argument("-o", "--output", required=True, metavar="GRID.png")
    q.add_argument("--batches", type=int, default=4, metavar="N")
    q.set_defaults(func=cmd_data_preview)

    p = sub.add_parser("train", help="train the GAN (Ray Train, or --local)")
    from .train import add_train_args

    add_train_args(p)
    p.set_defaults(func=cmd_train)
    return parser


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) unless asked."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"distgan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

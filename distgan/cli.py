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

    p = sub.add_parser("train", help="train the GAN (Ray Train, or --local)")
    from .train import add_train_args

    add_train_args(p)
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
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

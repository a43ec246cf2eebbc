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

from . import console
from .config import add_config_args
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


def _denoise_targets(args, files: list[Path]) -> list[tuple[Path, Path]]:
    """(input, output) pairs: -o is a file for one input with an image suffix, else a folder.
    An output that is its own input is refused unless --overwrite."""
    from .imagefile import IMAGE_SUFFIXES

    out = Path(args.output)
    single = len(files) == 1 and out.suffix.lower() in IMAGE_SUFFIXES and not out.is_dir()
    pairs = [(f, out if single else out / f.name) for f in files]
    for src, dst in pairs:
        if dst.resolve() == src.resolve() and not args.overwrite:
            raise UserError(f"{dst}: would overwrite its input; choose another -o, or pass "
                            f"--overwrite")
    return pairs


def _denoise_one(den, src: Path, dst: Path, args) -> dict:
    import time

    from .denoise import denoise_array
    from .imagefile import read_native, write_native

    t0 = time.perf_counter()
    rgb, info = read_native(src, max_megapixels=args.max_megapixels)
    out = denoise_array(den, rgb, args.strength, args.noise_level, args.tile, args.overlap,
                        ensemble=args.ensemble)
    write_native(dst, out, info)
    mp = rgb.shape[0] * rgb.shape[1] / 1e6
    dt = time.perf_counter() - t0
    return {"input": str(src), "output": str(dst), "megapixels": round(mp, 3),
            "seconds": round(dt, 3), "s_per_mp": round(dt / max(mp, 1e-9), 3)}


def cmd_denoise(args: argparse.Namespace) -> int:
    from .denoise import load_denoiser

    files, problems = expand_inputs(args.inputs)
    pairs = _denoise_targets(args, files)
    den = load_denoiser(args.model, args.precision)
    if args.ray:
        results = _denoise_on_ray(args, pairs)
    else:
        results = []
        for src, dst in pairs:
            try:
                results.append(_denoise_one(den, src, dst, args))
            except UserError as e:
                results.append({"input": str(src), "error": str(e)})
    for r in results:
        if "error" in r:
            problems.append(r["error"])
        else:
            print(json.dumps(r))
    for p in problems:
        print(f"distgan: failed: {p}", file=sys.stderr)
    return 1 if problems else 0


def _denoise_on_ray(args, pairs: list[tuple[Path, Path]]) -> list[dict]:
    """A folder across the Ray cluster: Ray Data map_batches over an actor pool, each actor
    holding the model once."""
    import ray.data
    from ray.data import ActorPoolStrategy

    from . import raysession

    raysession.connect()

    class DenoiseActor:
        def __init__(self, opts: dict):
            from .denoise import load_denoiser

            self.opts = argparse.Namespace(**opts)
            self.den = load_denoiser(self.opts.model, self.opts.precision)

        def __call__(self, batch: dict) -> dict:
            rows = []
            for src, dst in zip(batch["input"], batch["output"]):
                try:
                    rows.append(_denoise_one(self.den, Path(src), Path(dst), self.opts))
                except UserError as e:
                    rows.append({"input": str(src), "error": str(e)})
            return {"result": [json.dumps(r) for r in rows]}

    opts = {k: getattr(args, k) for k in ("model", "precision", "strength", "noise_level",
                                          "tile", "overlap", "max_megapixels", "ensemble")}
    items = [{"input": str(a.resolve()), "output": str(b.resolve())} for a, b in pairs]
    ds = ray.data.from_items(items).map_batches(
        DenoiseActor, fn_constructor_kwargs={"opts": opts}, batch_size=1,
        compute=ActorPoolStrategy(size=args.ray_actors), num_cpus=1)
    return [json.loads(r["result"]) for r in ds.take_all()]


def cmd_eval(args: argparse.Namespace) -> int:
    from .baselines import BASELINES
    from .denoise import check_ensemble
    from .evaluation import NOISE_GRID, distgan_method, markdown_table, run_eval
    from .noise import parse_spec

    texts = NOISE_GRID if args.noise.strip() == "all" else [t for t in args.noise.split(",") if t]
    specs = [parse_spec(t) for t in texts]
    if any(s.is_random for s in specs):
        raise UserError("--noise: eval needs fixed specs (random would differ per method)")
    try:
        ensembles = [int(t) for t in args.ensemble.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--ensemble: a comma-separated list of 1, 2, 4, 8, got {args.ensemble!r}") from None
    ensembles = list(dict.fromkeys(ensembles or [1]))
    for n in ensembles:
        check_ensemble(n)
    levels = [x.strip() for x in args.noise_level.split(",") if x.strip()]
    if not levels or set(levels) - {"true", "auto"}:
        raise UserError(f"--noise-level: true, auto or true,auto; got {args.noise_level!r}")
    baselines = [b for b in args.baselines.split(",") if b]
    methods = [distgan_method(n, level == "auto") for level in levels for n in ensembles] + baselines
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"--baselines: unknown {unknown}; choose from {', '.join(BASELINES)}")
    files, problems = expand_inputs([args.data])
    if problems:
        raise UserError("; ".join(problems))
    files = files[: args.limit] if args.limit else files
    report = run_eval(files, specs, methods, args.model, args.seed, jobs=args.jobs)
    report["settings"] = {"data": args.data, "images": len(files), "seed": args.seed,
                          "model": args.model or "shipped", "jobs": args.jobs,
                          "ensembles": ensembles, "noise_level": levels}
    table = markdown_table(report)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    if out.suffix == ".json":
        out.with_suffix(".md").write_text(table + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .denoise import export

    print(export(args.checkpoint, args.output, args.format, args.average))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from . import train

    return train.run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="distgan", allow_abbrev=False,
        description="Train a denoising GAN on Ray, and denoise photos of any size.",
    )
    parser.add_argument("--version", action="version", version=f"distgan {__version__}")
    verbose_help = f"also show TensorFlow's, absl's and Ray's own log lines (or set {console.ENV}=1)"
    parser.add_argument("--verbose", "-v", action="store_true", help=verbose_help)
    # The same flag after the command; SUPPRESS so an absent one keeps the value above.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help=verbose_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "noise", parents=[common], allow_abbrev=False,
        help="write noisy copies of images (+ JSON with spec and params)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    p.add_argument("--noise", required=True, metavar="SPEC", help="e.g. gaussian:25, random")
    p.add_argument("--seed", type=int, default=0)
    add_config_args(p)
    p.set_defaults(func=cmd_noise)

    p = sub.add_parser(
        "data", parents=[common], allow_abbrev=False,
        help="inspect the training data pipeline")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser(
        "preview", parents=[common], allow_abbrev=False,
        help="grid of clean/noisy chunk pairs + throughput JSON")
    add_config_args(q)
    q.add_argument("-o", "--output", required=True, metavar="GRID.png")
    q.add_argument("--batches", type=int, default=4, metavar="N")
    q.set_defaults(func=cmd_data_preview)

    p = sub.add_parser(
        "denoise", parents=[common], allow_abbrev=False,
        help="denoise photos of any size")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (or file, for one input)")
    p.add_argument("--model", default=None,
                   help="run folder, checkpoint folder or .keras file (default: shipped model)")
    p.add_argument("--strength", type=float, default=1.0, metavar="I",
                   help="y = (1 - I) x + I f(x); 0 = unchanged, 1 = full (default)")
    p.add_argument("--noise-level", default="auto", metavar="SIGMA|SPEC|auto",
                   help="gaussian sigma on 0-255, a noise spec, or auto (estimated)")
    p.add_argument("--tile", type=int, default=None, help="tile size (default: up to 384, or the "
                   "model's chunk for a model with a dense latent)")
    p.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="auto: bfloat16 where the CPU (AVX512-BF16/AMX) or GPU has it")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap (default: min(16, tile/4))")
    p.add_argument("--ensemble", type=int, default=1, metavar="N", choices=(1, 2, 4, 8),
                   help="average the model over N symmetries of each tile (1, 2, 4 or 8): "
                        "N times the compute for a cleaner result")
    p.add_argument("--overwrite", action="store_true", help="allow writing over the input")
    p.add_argument("--max-megapixels", type=float, default=1000.0)
    p.add_argument("--ray", action="store_true", help="spread the files over the Ray cluster")
    p.add_argument("--ray-actors", type=int, default=2, metavar="N")
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser(
        "eval", parents=[common], allow_abbrev=False,
        help="PSNR/SSIM of distgan against classical denoisers")
    p.add_argument("--data", required=True, help="folder of clean images (e.g. Kodak24)")
    p.add_argument("--noise", required=True, metavar="SPEC[,SPEC...]|all")
    p.add_argument("--model", default=None, help="default: the shipped model")
    p.add_argument("--baselines", default="noisy,bm3d,nlm,tv,wavelet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, metavar="K", help="first K images only")
    p.add_argument("--ensemble", default="1", metavar="N[,N...]",
                   help="score distgan with these self-ensembles (1, 2, 4, 8), e.g. 1,8")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="score images in N processes of one thread each (same scores)")
    p.add_argument("--noise-level", default="true", metavar="true|auto|true,auto",
                   help="tell distgan the true noise parameters (as BM3D gets the true sigma), "
                        "or let it estimate sigma itself ('distgan auto' rows), or both")
    p.add_argument("--out", required=True, metavar="REPORT.json")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "export", parents=[common], allow_abbrev=False,
        help="export a checkpoint's generator (.keras or SavedModel)")
    p.add_argument("checkpoint", help="run folder, checkpoint folder or .keras file")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--format", choices=("keras", "savedmodel"), default="keras")
    p.add_argument("--average", type=int, default=1, metavar="K",
                   help="average the weights of the last K checkpoints up to this one")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "train", parents=[common], allow_abbrev=False,
        help="train the GAN (Ray Train, or --local)")
    from .train import add_train_args

    add_train_args(p)
    p.set_defaults(func=cmd_train)
    return parser


TF_COMMANDS = ("train", "denoise", "export", "eval")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console.setup(args.verbose)
    return console.run(lambda: args.func(args), tensorflow=args.command in TF_COMMANDS)


if __name__ == "__main__":
    sys.exit(main())

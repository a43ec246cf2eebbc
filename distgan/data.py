"""Training data: sources, decoding, and the per-image transform (crops -> noise).

The transform is plain functions on arrays (`noisy_chunks`: numpy, or the compiled kernels
of `native` where they build), so it is tested eagerly and runs unchanged in-process
(`LocalBatches`, for `--local`) and inside Ray Data (`build_dataset`, for Ray Train).
Nothing is precomputed per epoch: every batch is drawn fresh, and in local mode batch
`step` is a pure function of (seed, step) on a given backend, so a resumed run sees exactly the
batches it would have seen.

Sources (`data.source`):
    samples         colour photos that scikit-image installs (the default; no download)
    folder:PATH     images under PATH, recursively (jpg, png, tif, bmp, webp)
    coco:PATH       a COCO images folder, or an instances JSON (file_names resolve next to it)
    cifar100        keras.datasets.cifar100 (train split), through Keras' own loader
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import threading
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import native
from .config import Config, DataConfig
from .errors import UserError
from .imagefile import ImageReadError, decode_rgb8, list_images
from .noise import N_PARAMS, add_noise, draw_specs
from .noisebatch import add_noise_batch, kernels_for
from .tiling import dihedral, mirror_index

log = logging.getLogger("distgan.data")

# scikit-image's bundled colour photos. Order matters: the last ones are held out for
# evaluation (data.eval_images), so the natural photos chelsea and coffee come last.
SAMPLE_FILES = (
    "astronaut.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
    "chelsea.png",
    "coffee.png",
)


class NoImagesError(UserError):
    """The configured source has no usable image."""


# ------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Source:
    """A list of items: file paths, or indices into an in-memory array (cifar100)."""

    name: str
    paths: tuple[str, ...] = ()
    array: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.paths) if self.array is None else len(self.array)

    def load(self, i: int, cfg: DataConfig) -> np.ndarray:
        """Item i as RGB uint8 (raises ImageReadError with the file named)."""
        if self.array is not None:
            return self.array[i]
        return decode_item({"path": self.paths[i]}, cfg)

    def split(self, n_eval: int) -> tuple[Source, Source]:
        """(train, eval): the last n_eval items are held out."""
        n = len(self)
        if n_eval and n <= n_eval:
            raise NoImagesError(
                f"source {self.name!r} has {n} image(s): not enough to hold out "
                f"data.eval_images={n_eval} and still train; add images or lower it"
            )
        cut = n - n_eval
        if self.array is not None:
            return Source(self.name, (), self.array[:cut]), Source(self.name, (), self.array[cut:])
        return Source(self.name, self.paths[:cut]), Source(self.name, self.paths[cut:])


def _samples_dir() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def _coco_paths(path: Path) -> list[Path]:
    if path.is_dir():
        return list_images(path)
    if path.suffix.lower() == ".json":
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: not a readable COCO instances JSON ({e})") from None
        images = meta.get("images") if isinstance(meta, dict) else None
        if not isinstance(images, list):
            raise UserError(f"{path}: no 'images' list; is this a COCO instances file?")
        here = path.parent
        out = []
        for im in images:
            name = im.get("file_name") if isinstance(im, dict) else None
            if name:
                # COCO keeps JSONs in annotations/ beside train2017/; accept both layouts
                cands = [here / name, here.parent / _coco_split(path) / name]
                out.append(next((c for c in cands if c.exists()), cands[0]))
        return out
    raise UserError(f"coco:{path}: expected an images folder or an instances .json")


def _coco_split(json_path: Path) -> str:
    # instances_train2017.json -> train2017
    stem = json_path.stem
    return stem.split("_", 1)[1] if "_" in stem else stem


def _keras_datasets_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets"


def _cifar100() -> np.ndarray:
    """CIFAR-100 train images (50000 x 32 x 32 x 3 uint8) in Keras' cache layout.

    Uses the extracted cache, or a `cifar-100-python.tar.gz` placed in
    $KERAS_HOME/datasets by hand (machines without network), and only otherwise asks
    `keras.datasets.cifar100.load_data()` to download. Batches are parsed by Keras' own
    `load_batch`.
    """
    import tarfile

    import keras
    from keras.src.datasets.cifar import load_batch

    root = _keras_datasets_dir()
    extracted = root / "cifar-100-python-target" / "cifar-100-python"
    archive = root / "cifar-100-python.tar.gz"
    if not (extracted / "train").exists() and archive.exists():
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(extracted.parent, filter="data")
        except (tarfile.TarError, OSError) as e:
            raise UserError(f"{archive}: not a readable CIFAR-100 archive ({e})") from None
    if not (extracted / "train").exists():
        try:
            keras.datasets.cifar100.load_data()
        except Exception as e:  # no network: say where to put the file
            raise UserError(
                f"cifar100 is not available ({type(e).__name__}: {str(e)[:200]}); place "
                f"cifar-100-python.tar.gz in {root} or choose another data.source"
            ) from None
    try:
        x, _ = load_batch(str(extracted / "train"), label_key="fine_labels")
    except Exception as e:
        raise UserError(f"{extracted / 'train'}: not a CIFAR-100 batch file ({e})") from None
    return np.ascontiguousarray(np.asarray(x, np.uint8).transpose(0, 2, 3, 1))


def open_source(spec: str) -> Source:
    """Resolve `data.source` to a Source; errors name the source and what to do."""
    kind, _, arg = spec.partition(":")
    if kind == "samples" and not arg:
        d = _samples_dir()
        return Source("samples", tuple(str(d / f) for f in SAMPLE_FILES if (d / f).exists()))
    if kind == "cifar100" and not arg:
        return Source("cifar100", (), _cifar100())
    if kind in ("folder", "coco") and arg:
        path = Path(arg).expanduser()
        if not path.exists():
            raise UserError(f"data.source {spec!r}: {path} does not exist")
        paths = list_images(path) if kind == "folder" else _coco_paths(path)
        if not paths:
            raise NoImagesError(f"data.source {spec!r}: no image files found under {path}")
        return Source(spec, tuple(str(p) for p in paths))
    raise UserError(
        f"data.source {spec!r} is not understood; use samples, folder:PATH, coco:PATH or cifar100"
    )


# ---------------------------------------------------------------- transform


def fit_to_chunk(img: np.ndarray, chunk: int, small: str) -> np.ndarray | None:
    """Mirror-pad an image smaller than a chunk (or None to skip it, per `small`)."""
    h, w = img.shape[:2]
    if h >= chunk and w >= chunk:
        return img
    if small == "skip":
        return None
    ys = mirror_index(np.arange(max(h, chunk)), h)
    xs = mirror_index(np.arange(max(w, chunk)), w)
    return img[ys][:, xs]


def fitted(img: np.ndarray, d: DataConfig, name: str) -> np.ndarray:
    """`fit_to_chunk`, raising (so the image is skipped and counted) where it says skip."""
    out = fit_to_chunk(img, d.chunk, d.small_images)
    if out is None:
        raise ImageReadError(f"{name}: smaller than a {d.chunk} px chunk (data.small_images=skip)")
    return out


def crop_windows(shape: tuple, chunk: int, k: int, rng: np.random.Generator):
    """k random chunk x chunk windows of an image of `shape`: (top rows, left columns,
    symmetries 0-7 as in `tiling.dihedral`)."""
    h, w = shape[:2]
    ys = rng.integers(0, h - chunk + 1, size=k)
    xs = rng.integers(0, w - chunk + 1, size=k)
    sym = rng.integers(0, 8, size=k)
    return ys, xs, sym


def cut_crops(img: np.ndarray, chunk: int, ys, xs, sym) -> np.ndarray:
    """The windows' crops of `img`, each turned by its symmetry: uint8 (k, chunk, chunk, ch)."""
    h, w, ch = img.shape
    # Each pixel as one item of `ch` bytes: a rotated crop is then copied a pixel at a time,
    # not a byte at a time: 11 instead of 20 us for a 64 px RGB crop here.
    pixels = np.ascontiguousarray(img).view(np.dtype((np.void, ch * img.itemsize))).reshape(h, w)
    out = np.empty((len(ys), chunk, chunk), pixels.dtype)
    for i in range(len(ys)):  # k is small; each crop is a view, copied once
        out[i] = dihedral(pixels[None, ys[i] : ys[i] + chunk, xs[i] : xs[i] + chunk], sym[i])[0]
    return out.view(img.dtype).reshape(len(ys), chunk, chunk, ch)


@functools.cache
def _symmetry_walks(chunk: int) -> np.ndarray:
    """(8, 3, 2): for each symmetry, where `tiling.dihedral`'s output pixel (0, 0) comes from
    in the window, and the source steps of one output row and one output column, as (row,
    column) pairs; read off dihedral itself, so the compiled crops follow its convention."""
    rows, cols = (a[None, :, :, None] for a in np.indices((max(chunk, 2),) * 2))
    walks = np.zeros((8, 3, 2), np.int64)
    for s in range(8):
        r, c = (dihedral(a, s)[0, :, :, 0] for a in (rows, cols))
        walks[s] = [(r[0, 0], c[0, 0]), (r[1, 0] - r[0, 0], c[1, 0] - c[0, 0]),
                    (r[0, 1] - r[0, 0], c[0, 1] - c[0, 0])]
        if chunk == 1:
            walks[s] = 0
    return walks


def _crop_walks(img: np.ndarray, chunk: int, ys, xs, sym) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows as the kernels walk them: each crop's first byte, and its byte steps
    down an output row and along an output column."""
    w, ch = img.shape[1], img.shape[2]
    walk = _symmetry_walks(chunk)[np.asarray(sym)]  # (k, 3, 2)
    pixel = np.array([w * ch, ch], np.int64)  # bytes per (row, column) step
    start = (np.asarray(ys) + walk[:, 0, 0]) * pixel[0] + (np.asarray(xs) + walk[:, 0, 1]) * pixel[1]
    return start, walk[:, 1] @ pixel, walk[:, 2] @ pixel


def cut_crops_float(img: np.ndarray, chunk: int, ys, xs, sym, out: np.ndarray,
                    kernels: native.Kernels | None) -> None:
    """`cut_crops(...) / 255` into float32 `out`: in one compiled pass where `kernels` is
    given, else through `cut_crops`."""
    if kernels is None:
        np.divide(cut_crops(img, chunk, ys, xs, sym), np.float32(255.0), out=out, dtype=np.float32)
        return
    kernels.crops(img, chunk, *_crop_walks(img, chunk, ys, xs, sym), out)


def noisy_chunks(
    img: np.ndarray, k: int, cfg: Config, rng: np.random.Generator,
    out: dict[str, np.ndarray] | None = None, backend: str = "auto",
) -> dict[str, np.ndarray]:
    """k random crops of uint8 `img` (`crop_windows`), each noised with its own random spec
    -> float32 {clean, noisy, params} and the kind labels.

    The crops are i.i.d.; they are ordered by their first noise kind, which lets the numpy
    path noise each kind in one call on a contiguous view (`noisebatch.add_noise_batch`).
    The compiled kernels cut and noise crop by crop in one call. `out` may hold
    preallocated float32 'clean' and 'noisy' arrays of k chunks. `backend` picks the code:
    the compiled kernels, numpy, or "auto" (the kernels where they build); the windows,
    specs and row order are the same on both.
    """
    chunk = cfg.data.chunk
    ys, xs, sym = crop_windows(img.shape, chunk, k, rng)
    specs = draw_specs(cfg.noise, rng, k)
    order = np.argsort(specs.kinds[:, 0], kind="stable")
    ys, xs, sym, specs = ys[order], xs[order], sym[order], specs.take(order)
    shape = (k, chunk, chunk, img.shape[2])
    clean = np.empty(shape, np.float32) if out is None else out["clean"]
    noisy = np.empty(shape, np.float32) if out is None else out["noisy"]
    kernels = kernels_for(backend)
    if kernels is not None:
        kernels.noisy_crops(img, chunk, *_crop_walks(img, chunk, ys, xs, sym), specs, rng, clean, noisy)
        params = specs.params()
    else:
        cut_crops_float(img, chunk, ys, xs, sym, clean, None)
        _, params = add_noise_batch(clean, specs.specs(), rng, noisy, backend)
    return {"clean": clean, "noisy": noisy, "params": params, "kind": specs.labels()}


# ------------------------------------------------------------- local batches


class LocalBatches:
    """Batches drawn in-process, for `--local` training: batch(step) = f(seed, step).

    Decoded images are kept in a bounded LRU cache, so memory does not grow with the
    corpus. Unreadable files are skipped with a warning naming them, and counted.
    """

    def __init__(self, cfg: Config, source: Source, cache_images: int = 256):
        if len(source) == 0:
            raise NoImagesError(f"data.source {cfg.data.source!r} has no images")
        self.cfg = cfg
        self.source = source
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_images = cache_images
        self.bad: dict[int, str] = {}
        self.kinds: Counter = Counter()

    def image(self, i: int) -> np.ndarray | None:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if i in self.bad:
            return None
        try:
            img = fitted(self.source.load(i, self.cfg.data), self.cfg.data, self._name(i))
        except ImageReadError as e:
            self.bad[i] = str(e)
            log.warning("skipping %s", e)
            if len(self.bad) == len(self.source):
                raise NoImagesError(
                    f"data.source {self.cfg.data.source!r}: no usable image "
                    f"({len(self.bad)} skipped; first: {next(iter(self.bad.values()))})"
                ) from None
            return None
        self._cache[i] = img
        if len(self._cache) > self._cache_images:
            self._cache.popitem(last=False)
        return img

    def _name(self, i: int) -> str:
        return self.source.paths[i] if self.source.paths else f"{self.source.name}[{i}]"

    def batch(self, step: int) -> dict[str, np.ndarray]:
        d = self.cfg.data
        rng = np.random.default_rng([self.cfg.run.seed, step, 0xDA7A])
        parts, have = [], 0
        while have < d.batch_size:
            img = self.image(int(rng.integers(len(self.source))))
            if img is None:
                continue
            k = min(d.crops_per_image, d.batch_size - have)
            parts.append(noisy_chunks(img, k, self.cfg, rng))
            have += k
        out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        self.kinds.update(out.pop("kind").tolist())
        return out


# ---------------------------------------------------------------- evaluation


@dataclass
class EvalImage:
    name: str
    clean: np.ndarray  # float32 H x W x 3
    noisy: np.ndarray
    params: np.ndarray
    spec: str


def eval_noise(img: np.ndarray, cfg: Config, index: int, spec_text: str):
    """Held-out image `index` under one of `data.eval_noise`, seeded by the run's seed, the
    index and the spec, so every evaluation of a run sees the same noisy images."""
    spec = eval_spec(spec_text)
    rng = np.random.default_rng([cfg.run.seed, index, zlib.crc32(str(spec).encode()), 0xE7A1])
    noisy, params = add_noise(img, spec, rng)
    return noisy, params, spec


def eval_spec(text: str):
    """A spec of `data.eval_noise`, with an error that names the key."""
    from .noise import NoiseSpecError, parse_spec

    try:
        spec = parse_spec(text)
    except NoiseSpecError as e:
        raise UserError(f"data.eval_noise: {e}") from None
    if spec.is_random:
        raise UserError(f"data.eval_noise: {text!r} is random; evaluation needs fixed specs")
    return spec


def eval_images(cfg: Config, source: Source) -> list[EvalImage]:
    """Held-out whole images, each under every spec of `data.eval_noise`."""
    from skimage.transform import resize

    for text in cfg.data.eval_noise:
        eval_spec(text)
    out = []
    for i in range(len(source)):
        try:
            img = source.load(i, cfg.data).astype(np.float32) / 255.0
        except ImageReadError as e:
            log.warning("skipping eval image %s", e)
            continue
        edge = cfg.data.eval_max_edge
        h, w = img.shape[:2]
        if edge and max(h, w) > edge:
            s = edge / max(h, w)
            img = resize(img, (max(1, round(h * s)), max(1, round(w * s))), anti_aliasing=True)
            img = img.astype(np.float32)
        name = Path(source.paths[i]).name if source.paths else f"{source.name}[{i}]"
        for text in cfg.data.eval_noise:
            noisy, params, spec = eval_noise(img, cfg, i, text)
            out.append(EvalImage(name, img, noisy, params, str(spec)))
    return out


# ------------------------------------------------------------------ Ray Data


def image_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator for one image in one pass: its crops and noise depend on nothing else,
    so the stream is the same however Ray schedules the work."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode())])


def decode_item(row: dict, cfg: DataConfig) -> np.ndarray:
    """A pipeline row -> RGB uint8: from file bytes ('bytes'), a path, or an array ('image')."""
    if "image" in row and row["image"] is not None and np.size(row["image"]):
        return np.asarray(row["image"], np.uint8)
    data = row.get("bytes")
    if data is None:
        try:
            data = Path(row["path"]).read_bytes()
        except OSError as e:
            raise ImageReadError(f"{row['path']}: cannot be read ({e.strerror})") from None
    return decode_rgb8(bytes(data), str(row["path"]), cfg.max_megapixels)


class _ReusedArrays(threading.local):
    """chunk_batch's output arrays, reused once nothing references them any more.

    A fresh 50-100 MB array costs page faults on its first write: writing two fresh ones
    took 19.4 us a 64 px row here against 4.7 to rewrite two old ones. A data worker makes
    them task after task, so the last task's pair is kept and handed out again, but only
    when the only references left are this cache's own (the rows went into the object
    store, or the caller dropped them): nobody's rows are ever overwritten. Per thread, so
    two threads never share one.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        # What getrefcount says of a kept array nobody else holds (the dict's reference and
        # the local name's, as the interpreter counts them), read off the same pattern.
        probe = {"a": np.empty(0)}
        held = probe.get("a")
        self.free = sys.getrefcount(held)

    def array(self, name: str, shape: tuple) -> np.ndarray:
        """A float32 array of `shape`: the first rows of the kept one where it is free and
        large enough, else a new one, which is kept instead."""
        old = self.arrays.get(name)
        fits = old is not None and old.shape[1:] == shape[1:] and len(old) >= shape[0]
        if not fits or sys.getrefcount(old) > self.free:
            old = self.arrays[name] = np.empty(shape, np.float32)
        return old[: shape[0]]


_OUTPUT = _ReusedArrays()


def chunk_batch(batch: dict[str, np.ndarray], cfg: Config, stats=None) -> dict[str, np.ndarray]:
    """The pipeline's transform: a batch of images -> a batch of noisy chunk rows.

    Rows in: 'path' and 'epoch' (plus 'bytes' or 'image'). Rows out: clean, noisy (float32
    chunk x chunk x 3), params (float32), kind (str). Unusable images are skipped with a
    warning that names them, and reported to `stats` (a DataStats actor) when given.
    """
    d = cfg.data
    parts, skipped, kinds = [], [], Counter()
    n = len(batch["path"])
    k, c = d.crops_per_image, d.chunk
    # Every image's rows are written in place into one pair of arrays.
    clean, noisy = (_OUTPUT.array(name, (n * k, c, c, 3)) for name in ("clean", "noisy"))
    for i in range(n):
        row = {col: v[i] for col, v in batch.items()}
        key = str(row["path"])
        try:
            img = fitted(decode_item(row, d), d, key)
        except ImageReadError as e:
            log.warning("skipping %s", e)
            skipped.append(str(e))
            continue
        rng = image_rng(cfg.run.seed, int(row.get("epoch", 0)), key)
        rows = slice(len(parts) * k, (len(parts) + 1) * k)
        out = noisy_chunks(img, k, cfg, rng, out={"clean": clean[rows], "noisy": noisy[rows]})
        kinds.update(out["kind"].tolist())
        parts.append(out)
    if stats is not None:
        stats.add.remote(n - len(skipped), skipped, dict(kinds))
    used = len(parts) * k
    return {"clean": clean[:used], "noisy": noisy[:used],
            "params": np.concatenate([p["params"] for p in parts] or [np.zeros((0, N_PARAMS), np.float32)]),
            "kind": np.concatenate([p["kind"] for p in parts] or [np.zeros((0,), "<U1")])}


def _items(source: Source, epochs: int, seed: int) -> list[dict]:
    """(image, pass) items, each pass in its own seeded order; images themselves are read
    lazily by the pipeline."""
    items = []
    for e in range(epochs):
        order = np.random.default_rng([seed, e, 0x0DE7]).permutation(len(source))
        for i in order:
            if source.array is not None:
                items.append({"path": f"{source.name}[{i}]", "epoch": e, "index": int(i)})
            else:
                items.append({"path": source.paths[i], "epoch": e})
    return items


def data_resource_limits(cfg: Config) -> None:
    """Cap Ray Data at the CPUs reserved for it, so trainers and data never starve each
    other; let its scheduler sleep when it spins while the trainers are behind, and see a
    finished task promptly (`rayhooks`)."""
    import ray
    from ray.data import DataContext
    from ray.data._internal.execution.interfaces.execution_options import ExecutionResources

    ctx = DataContext.get_current()
    total = ray.cluster_resources().get("CPU", 1.0) if ray.is_initialized() else None
    cpus = cfg.scaling.reserved_data_cpus or total
    ctx.execution_options.resource_limits = ExecutionResources(cpu=cpus)
    ctx.enable_progress_bars = False
    from .rayhooks import IdleBackoff, PromptDispatch

    ctx.custom_execution_callback_classes = [
        *ctx.custom_execution_callback_classes,
        *(c for c in (IdleBackoff, PromptDispatch) if c not in ctx.custom_execution_callback_classes)]


# Rows per Ray Data task, as bytes of float32 clean + noisy chunks: ~1,000 rows at 64 px.
# Through Ray Data on 1 CPU, tasks of 512 / 256 rows at 64 px ran 10 % / 28 % slower: the
# worker waits for its next task between tasks. Under Ray Data's 128 MB block size.
TASK_BYTES = 96 * 2**20


def rows_per_task(chunk: int) -> int:
    """How many chunk rows (float32 clean + noisy, RGB) make TASK_BYTES."""
    return TASK_BYTES // (2 * 4 * 3 * chunk**2)


def build_dataset(cfg: Config, source: Source, epochs: int = 1, stats=None):
    """A streaming `ray.data.Dataset` of noisy chunk rows: read -> decode -> crops -> noise.

    `epochs` passes over the images, each with fresh crops and noise. Nothing is
    materialised: rows are produced as the consumer pulls batches.
    """
    import ray
    from ray.data import TaskPoolStrategy

    if len(source) == 0:
        raise NoImagesError(f"data.source {cfg.data.source!r} has no images")
    items = _items(source, epochs, cfg.run.seed)
    # Images per task: enough for ~TASK_BYTES of rows, so the per-task cost of Ray
    # (scheduling, block shaping) is spread thin, and at least two tasks per data worker,
    # so a small corpus still runs in parallel.
    per_block = max(1, min(rows_per_task(cfg.data.chunk) // cfg.data.crops_per_image,
                           len(items) // (2 * cfg.data.data_workers)))
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / per_block)))
    if source.array is not None:
        array_ref = ray.put(source.array)

        def attach(batch, arr=array_ref):
            a = ray.get(arr) if isinstance(arr, ray.ObjectRef) else arr
            batch["image"] = a[batch["index"]]
            return batch

        ds = ds.map_batches(attach, batch_format="numpy", compute=TaskPoolStrategy(
            size=cfg.data.data_workers), num_cpus=min(cfg.data.cpus_per_task, 0.1))
    return ds.map_batches(
        chunk_batch,
        fn_kwargs={"cfg": cfg, "stats": stats},
        batch_size=per_block,
        batch_format="numpy",
        compute=TaskPoolStrategy(size=cfg.data.data_workers),
        num_cpus=cfg.data.cpus_per_task,
    )


def make_stats():
    """A small actor that counts images, skipped files (with reasons) and noise kinds."""
    import ray

    @ray.remote(num_cpus=0)
    class DataStats:
        def __init__(self):
            self.images, self.skipped, self.kinds = 0, [], Counter()

        def add(self, images: int, skipped: list[str], kinds: dict):
            self.images += images
            self.skipped += skipped
            self.kinds.update(kinds)

        def get(self) -> dict:
            return {"images": self.images, "skipped": len(self.skipped),
                    "skipped_files": self.skipped[:20], "noise_kinds": dict(self.kinds)}

    return DataStats.remote()


def tf_batches(ds_or_iter, batch_size: int, shuffle_buffer: int, seed: int | None = None):
    """Numpy batches {clean, noisy, params} from a Dataset or a Train shard, streaming,
    shuffled through a local buffer."""
    kw = {"local_shuffle_buffer_size": shuffle_buffer} if shuffle_buffer else {}
    if shuffle_buffer and seed is not None:
        kw["local_shuffle_seed"] = seed
    for b in ds_or_iter.iter_batches(batch_size=batch_size, batch_format="numpy",
                                     drop_last=True, **kw):
        yield {k: b[k] for k in ("clean", "noisy", "params")}


# ------------------------------------------------------------------ evaluation mode


def eval_chunk_batch(batch: dict[str, np.ndarray], cfg: Config) -> dict[str, np.ndarray]:
    """The paper's test mode: every sequential chunk of each image, in order, with the layout
    that `tiling.join` needs, and the image's fixed noise (the first of `data.eval_noise`,
    seeded as in `eval_images`)."""
    from .tiling import split

    d = cfg.data
    out: dict[str, list] = {k: [] for k in ("name", "tile_index", "clean", "noisy", "params",
                                            "height", "width")}
    for name, idx in zip(batch["path"], batch["index"]):
        try:
            img = decode_item({"path": str(name)}, d).astype(np.float32) / np.float32(255.0)
        except ImageReadError as e:
            log.warning("skipping eval image %s", e)
            continue
        noisy, params, _ = eval_noise(img, cfg, int(idx), d.eval_noise[0])
        clean_t, layout = split(img, d.chunk)
        noisy_t, _ = split(noisy, d.chunk)
        n = layout.n_tiles
        out["name"] += [str(name)] * n
        out["tile_index"] += list(range(n))
        out["clean"].append(clean_t)
        out["noisy"].append(noisy_t)
        out["params"].append(np.repeat(params[None], n, 0))
        out["height"] += [layout.height] * n
        out["width"] += [layout.width] * n
    if not out["clean"]:
        c = d.chunk
        empty = np.zeros((0, c, c, 3), np.float32)
        return {"name": np.zeros(0, "<U1"), "tile_index": np.zeros(0, int), "clean": empty,
                "noisy": empty, "params": np.zeros((0, N_PARAMS), np.float32),
                "height": np.zeros(0, int), "width": np.zeros(0, int)}
    return {"name": np.array(out["name"]), "tile_index": np.array(out["tile_index"]),
            "clean": np.concatenate(out["clean"]), "noisy": np.concatenate(out["noisy"]),
            "params": np.concatenate(out["params"]), "height": np.array(out["height"]),
            "width": np.array(out["width"])}


def build_eval_dataset(cfg: Config, source: Source):
    """Ray Data, evaluation mode: sequential chunks in image order (order preserved)."""
    import ray
    from ray.data import DataContext, TaskPoolStrategy

    DataContext.get_current().execution_options.preserve_order = True
    items = [{"path": p, "index": i} for i, p in enumerate(source.paths)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    return ds.map_batches(eval_chunk_batch, fn_kwargs={"cfg": cfg}, batch_size=1,
                          batch_format="numpy", compute=TaskPoolStrategy(size=cfg.data.data_workers),
                          num_cpus=cfg.data.cpus_per_task)


def join_eval(rows: dict[str, np.ndarray], key: str = "clean") -> dict[str, np.ndarray]:
    """Rebuild whole images from evaluation-mode chunk rows (any column of tiles)."""
    from .tiling import join, make_layout

    images = {}
    for name in dict.fromkeys(rows["name"].tolist()):
        sel = rows["name"] == name
        order = np.argsort(rows["tile_index"][sel])
        h, w = int(rows["height"][sel][0]), int(rows["width"][sel][0])
        tiles = rows[key][sel][order]
        images[name] = join(tiles, make_layout((h, w, 3), tiles.shape[1]))
    return images

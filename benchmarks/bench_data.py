"""64 px chunks/s with mixed noise, all measured in one run on sun80 (or the sample photos):

  (a) paper      a faithful re-implementation of the paper's generator: a loader thread and
                 worker threads, 15x image oversampling, whole images noised then cut, into a
                 preallocated 6-D (epoch, gen+disc steps, batch, h, w, rgb) array; the median
                 of 3 passes
  (b) inprocess  distgan's transform (decode -> crops -> noise) in one process, with 16
                 crops per decoded photo (the shipped configs'), 64, and 192 (the paper's
                 chunks per photo per pass); inprocess_640x480: at 16 crops, on the
                 photos resized to COCO's 640 x 480 (what configs/cluster.yaml trains on)
  (c) ray_1cpu / ray_2cpu   the same through Ray Data, with 1 CPU (64 and 192 crops) and
                 with 2 CPUs (64 crops), one task per CPU; ray_2cpu_3tasks: 2 CPUs shared
                 by 3 tasks at once; ray_1cpu_640x480: 1 CPU, 16 crops of the 640 x 480
                 photos. All of Ray's processes (raylet, object store, workers) are pinned
                 to that many cores, the consumer to the others where there are any

then where (b)'s time goes: decode, crop, noise (the compiled kernels the pipeline uses
where they build, noisebatch's numpy path, and the scikit-image reference noise), against
the floors of drawing the random numbers alone; and what (c) adds: writing a task's output
into the object store, against a plain copy of it. One JSON line each;
ratios are per core against (a). `--quick` for a short run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time

import numpy as np
from _common import corpus, cores, emit, quick

from distgan.config import load_config
from distgan.data import chunk_batch, crop_windows, cut_crops, cut_crops_float, noisy_chunks, rows_per_task
from distgan.imagefile import decode_rgb8
from distgan.noise import add_noise, sample_spec
from distgan.noisebatch import kernels_for, normals
from distgan.tiling import split

CHUNK = 64
# The paper cuts every whole 64 px chunk of a 1024 x 768 photo, 192 of them per pass; at
# that count distgan's per-chunk share of the decode is the paper's.
K_PAPER = 192
# The crops per photo that configs/default.yaml and cluster.yaml draw: a pass decodes 4x the
# photos per chunk that 64 crops do.
K_CONFIGS = 16
# Passes through Ray Data at 64 crops (more at fewer crops, for as many rows): 16 x 40 photos
# is 40 tasks of 16 photos, enough that the pipeline's fill and drain do not set the figure.
EPOCHS = int(os.environ.get("BENCH_DATA_EPOCHS", "16"))


def cfg_for(k: int, workers: int = 1):
    return load_config(None, [f"data.chunk={CHUNK}", f"data.crops_per_image={k}",
                              f"data.data_workers={workers}", "noise.mix_prob=0.3"])


def paper_generator(paths, n_workers: int = 2, oversample: int = 15, batch: int = 32,
                    steps: int = 5) -> tuple[int, float]:
    """The paper's design, rebuilt: returns (chunks produced, seconds)."""
    cfg = cfg_for(1)
    images: queue.Queue = queue.Queue(maxsize=8)
    per_image = (768 // CHUNK) * (1024 // CHUNK)
    n_chunks = len(paths) * oversample * per_image
    n_batches = -(-n_chunks // batch)
    epoch = np.zeros((1, steps, -(-n_batches // steps), batch, CHUNK, CHUNK, 3), np.float32)
    flat = epoch.reshape(-1, CHUNK, CHUNK, 3)
    cursor = [0]
    lock = threading.Lock()

    def loader():
        for p in paths:
            images.put(decode_rgb8(p.read_bytes(), str(p)).astype(np.float32) / 255)
        for _ in range(n_workers):
            images.put(None)

    def worker(seed):
        rng = np.random.default_rng(seed)
        while (img := images.get()) is not None:
            for _ in range(oversample):
                noisy, _ = add_noise(img, sample_spec(cfg.noise, rng), rng)
                h, w = (noisy.shape[0] // CHUNK) * CHUNK, (noisy.shape[1] // CHUNK) * CHUNK
                tiles, _ = split(noisy[:h, :w], CHUNK)  # whole chunks only, as the paper
                with lock:
                    i = cursor[0]
                    j = min(i + len(tiles), len(flat))
                    flat[i:j] = tiles[: j - i]
                    cursor[0] = j

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loader)] + [
        threading.Thread(target=worker, args=(s,)) for s in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return cursor[0], time.perf_counter() - t0


def coco_sized(paths) -> list:
    """The photos resized to 640 x 480 (COCO's usual size, which configs/cluster.yaml
    trains on) as quality-90 JPEGs in a temporary folder, removed at exit."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from PIL import Image

    folder = Path(tempfile.mkdtemp(prefix="bench-data-"))
    atexit.register(shutil.rmtree, folder, True)
    out = []
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB").resize((640, 480), Image.LANCZOS).save(folder / f"{p.stem}.jpg", quality=90)
        out.append(folder / f"{p.stem}.jpg")
    return out


def photos_per_task(k: int) -> int:
    """Photos a Ray Data task transforms at k crops each (as build_dataset sizes them)."""
    return max(1, rows_per_task(CHUNK) // k)


def inprocess(paths, k: int, repeats: int = 3) -> tuple[int, float]:
    """(chunks, seconds) of the median of `repeats` passes, each with fresh crops and noise,
    a Ray Data task's worth of photos per call, as the pipeline runs it (one call for all
    40 photos at 192 crops allocates 754 MB per output array, whose page faults made the
    figure swing by 40 % between runs)."""
    cfg = cfg_for(k)
    per_task = photos_per_task(k)
    runs = []
    for epoch in range(repeats):
        n, t0 = 0, time.perf_counter()
        for i in range(0, len(paths), per_task):
            some = paths[i : i + per_task]
            n += len(chunk_batch({"path": np.array([str(p) for p in some]),
                                  "epoch": np.full(len(some), epoch)}, cfg)["clean"])
        runs.append((n, time.perf_counter() - t0))
    return sorted(runs, key=lambda r: r[1])[len(runs) // 2]


def _descendants(root: int) -> list[int]:
    """Every process below `root`: for the private cluster this benchmark starts, Ray's GCS,
    raylet (with its object store), dashboard, workers and actors."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read() if entry.isdigit() else ""
        except OSError:  # gone since the listing
            continue
        if stat:
            children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (an affinity is a thread's, not a process's)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in threads:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:  # a thread that has ended
            pass


@contextlib.contextmanager
def ray_on_cores(n: int):
    """Confine the local Ray cluster, all of its processes, to `n` of this process's cores
    and this process (the consumer, and Ray Data's scheduler thread) to the others, if any.
    The per-core figure then pays for everything Ray does on the data side, not only the
    worker's transform: on 1 CPU unpinned, the raylet, its object store and the other Ray
    processes ran on the second core beside the consumer."""
    every = sorted(os.sched_getaffinity(0))
    mine = set(every[n:]) or set(every)
    ray_pids = [] if os.environ.get("RAY_ADDRESS") else _descendants(os.getpid())
    for pid in ray_pids:
        _pin(pid, set(every[:n]))
    _pin(os.getpid(), mine)
    try:
        yield
    finally:
        for pid in [os.getpid(), *_descendants(os.getpid())]:
            _pin(pid, set(every))


def through_ray(paths, k: int, cpus: int, tasks: int | None = None) -> tuple[int, float]:
    """(chunks, seconds) through Ray Data on `cpus` CPUs, running `tasks` tasks at once
    (cpus / tasks CPU each; one per CPU by default), with the cluster on `cpus` cores."""
    from distgan import raysession

    raysession.connect(num_cpus=2)
    with ray_on_cores(cpus):
        return _through_ray(paths, k, cpus, tasks)


def _through_ray(paths, k: int, cpus: int, tasks: int | None) -> tuple[int, float]:
    from distgan.data import Source, build_dataset, data_resource_limits, tf_batches

    tasks = tasks or cpus
    cfg = cfg_for(k, tasks).replace(scaling={"reserved_data_cpus": float(cpus)},
                                    data={"cpus_per_task": cpus / tasks})
    data_resource_limits(cfg)
    ds = build_dataset(cfg, Source("bench", tuple(map(str, paths))), epochs=EPOCHS * max(1, 64 // k))
    # Steady state, as a training run sees it for hours: the clock starts once two tasks'
    # rows per CPU have arrived. A fresh worker process's first task ran ~2.7x slower
    # (imports, the kernels' loading, first-touch memory): 386-415 us a chunk against a
    # median of 153 over 100 tasks, which in a 20-task run cut the figure by ~15 %.
    warm = 2 * cpus * rows_per_task(CHUNK)
    n, t0 = 0, None
    for b in tf_batches(ds, 256, 0):
        if t0 is None and n >= warm:
            n, t0 = 0, time.perf_counter()
        n += len(b["clean"])
    if t0 is None:
        raise SystemExit(f"bench_data: {n} rows through Ray Data, fewer than the {warm} of the warm-up")
    return n, time.perf_counter() - t0


def object_store(paths, k: int, puts: int = 48, repeats: int = 5) -> dict:
    """Per chunk, on one core: the CPU time of writing one Ray Data task's output block into
    the object store (what every task pays after its transform; ray.put copies on several
    threads, all counted), against a numpy copy of the same arrays into memory already
    mapped, the machine's memory-bandwidth floor for it.

    A put into store memory this process has not touched yet also pays a page fault per
    4 KB: ~57 against ~17 us a chunk in scratch runs. A pipeline's worker writes memory it
    has mapped before (1.7 faults a chunk over a steady 1-CPU run, where a first touch takes
    24), so the figure is the median over `puts` puts of those that did not fault, each
    held until the next as a consumer holds the block it reads; the first-touch figure is
    the median of those that did.
    """
    import resource

    import ray
    from ray.data.block import BlockAccessor

    per_task = photos_per_task(k)
    rows = chunk_batch({"path": np.array([str(p) for p in paths[:per_task]]),
                        "epoch": np.zeros(per_task, int)}, cfg_for(k))
    n = len(rows["clean"])
    block = BlockAccessor.batch_to_block(rows)  # zero-copy: Ray Data's own conversion
    into = {c: np.ones_like(rows[c]) for c in ("clean", "noisy")}  # written once: no page faults
    every = os.sched_getaffinity(0)
    _pin(os.getpid(), {min(every)})
    try:
        mapped, fresh, copy, ref = [], [], [], None
        for _ in range(puts):
            faults, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
            ref = ray.put(block)
            cpu = time.process_time() - cpu
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults > n
            (fresh if faulted else mapped).append(cpu)
        del ref
        for _ in range(repeats):
            t = time.perf_counter()
            for c in into:
                np.copyto(into[c], rows[c])
            copy.append(time.perf_counter() - t)
    finally:
        _pin(os.getpid(), every)
    out = {"numpy_copy_us_per_chunk": 1e6 * float(np.median(copy)) / n,
           "object_store_first_touch_puts": f"{len(fresh)}/{puts}"}
    for key, times in (("object_store_put_us_per_chunk", mapped),
                       ("object_store_put_first_touch_us_per_chunk", fresh)):
        if times:
            out[key] = 1e6 * float(np.median(times)) / n
    return out


def breakdown(paths, k: int) -> dict:
    """Per chunk: decode, crop, noise (the compiled kernels, the numpy path, and the
    scikit-image reference), against the floors of drawing the numbers alone."""
    cfg = cfg_for(k)
    rng = np.random.default_rng(0)
    # Decoded and dropped one by one, as a task does (a photo's array then reuses the last
    # one's memory): the median of 3 passes. Kept all at once, as below for the next
    # steps, every photo lands in fresh pages, which cost 65-79 us a chunk instead of ~40.
    passes = []
    for _ in range(3):
        t = time.perf_counter()
        for p in paths:
            decode_rgb8(p.read_bytes(), str(p))
        passes.append(time.perf_counter() - t)
    decode = float(np.median(passes))
    imgs = [decode_rgb8(p.read_bytes(), str(p)) for p in paths]
    kernels = kernels_for("native")
    windows = [crop_windows(im.shape, CHUNK, k, rng) for im in imgs]
    # Each photo's rows go where a task puts them: its place in a task's arrays, written
    # before (as chunk_batch reuses the last task's).
    per_task = photos_per_task(k)
    task = {c: np.ones((per_task * k, CHUNK, CHUNK, 3), np.float32) for c in ("clean", "noisy")}
    rows = [{c: a[(i % per_task) * k : (i % per_task + 1) * k] for c, a in task.items()}
            for i in range(len(imgs))]
    crop, noise = {}, {}
    for backend, kern in (("native", kernels), ("numpy", None)):
        t = time.perf_counter()
        for im, w, out in zip(imgs, windows, rows):
            cut_crops_float(im, CHUNK, *w, out["clean"], kern)
        crop[backend] = time.perf_counter() - t
        t = time.perf_counter()
        for im, out in zip(imgs, rows):  # windows, specs, crops and noise: all after decode
            noisy_chunks(im, k, cfg, rng, out=out, backend=backend)
        noise[backend] = time.perf_counter() - t - crop[backend]  # the rest of it
    n = k * len(paths)
    eighth = max(1, len(imgs) // 8)  # the reference is slow: time an eighth
    sub = [cut_crops(im, CHUNK, *w) for im, w in zip(imgs[:eighth], windows[:eighth])]
    t = time.perf_counter()
    for c in sub:
        for crop_ in c:
            add_noise(crop_.astype(np.float32) / 255, sample_spec(cfg.noise, rng), rng)
    reference = (time.perf_counter() - t) / (k * len(sub))
    values = CHUNK * CHUNK * 3
    floors = {}
    for name, draw in (("rng_floor_bits", lambda: rng.bit_generator.random_raw(values // 2)),
                       ("rng_floor_normals_f32", lambda: normals(rng, (values,))),
                       ("rng_floor_normals_native", lambda: kernels.normals(rng, (values,))),
                       ("rng_floor_normals_f64", lambda: rng.standard_normal(values))):
        t = time.perf_counter()
        for _ in range(n):
            draw()
        floors[name] = (time.perf_counter() - t) / n
    return {"decode_us_per_chunk": 1e6 * decode / n, "crop_us_per_chunk": 1e6 * crop["native"] / n,
            "crop_numpy_us_per_chunk": 1e6 * crop["numpy"] / n,
            "noise_us_per_chunk": 1e6 * noise["native"] / n,
            "noise_numpy_us_per_chunk": 1e6 * noise["numpy"] / n,
            "noise_reference_us_per_chunk": 1e6 * reference,
            **{f"{k_}_us_per_chunk": 1e6 * v for k_, v in floors.items()}}


def main() -> None:
    name, paths = corpus()
    paths = paths[:8] if quick() else paths[:40]
    k = 64
    # The median of 3 passes, as for distgan's in-process line: the first pass in a process
    # ran 10-20 % slower than the next two (1,210-1,420 against 1,500-1,580 chunks/s a core).
    passes = [paper_generator(paths[:4] if quick() else paths[:12], oversample=3 if quick() else 15)
              for _ in range(3)]
    n_a, t_a = sorted(passes, key=lambda r: r[1])[1]
    a_core = n_a / t_a / 2  # two worker threads on two cores (they keep ~1.9 of them busy)
    emit(bench="data", method="paper", corpus=name, chunks=n_a, chunks_per_s=round(n_a / t_a),
         chunks_per_s_per_core=round(a_core), cores=2)
    rate = {}

    def line(method: str, corpus_name: str, kk: int, chunks: int, seconds: float, cpus: int,
             **extra) -> float:
        """One line of chunks/s, per core and against the paper; returns chunks/s."""
        emit(bench="data", method=method, corpus=corpus_name, crops_per_image=kk, **extra, chunks=chunks,
             chunks_per_s=round(chunks / seconds), chunks_per_s_per_core=round(chunks / seconds / cpus),
             ratio_per_core_vs_paper=round(chunks / seconds / cpus / a_core, 2), cores=cpus)
        return chunks / seconds

    def inprocess_line(method: str, corpus_name: str, photos, kk: int) -> float:
        return line(method, corpus_name, kk, *inprocess(photos, kk), 1)

    for kk in (K_CONFIGS, k, K_PAPER):
        rate[kk] = inprocess_line("inprocess", name, paths, kk)
    # Untimed, on both CPUs, so that every timed line finds a warm cluster: both worker
    # processes started and through their first tasks, the object store's memory touched.
    # Warmed on 1 CPU only, the 2-CPU line met a fresh second worker (a fresh worker's first
    # task runs ~2.7x slower) and gave 9,302 chunks/s, against 11,363-11,435 in the three
    # runs after it in the same process.
    through_ray(paths[:8], k, 2)

    def ray_line(method: str, corpus_name: str, photos, kk: int, cpus: int, tasks: int) -> float:
        return line(method, corpus_name, kk, *through_ray(photos, kk, cpus, tasks), cpus, tasks=tasks)

    # (2, k, 3) runs 3 tasks at once on the 2 CPUs (2/3 CPU each): a worker waits ~30 ms
    # between its tasks (the object-store write, the next dispatch), which a third fills.
    for cpus, kk, tasks in ((1, k, 1), (1, K_PAPER, 1), (2, k, 2), (2, k, 3)):
        rate[f"ray{cpus}", kk, tasks] = ray_line(
            f"ray_{cpus}cpu" + (f"_{tasks}tasks" if tasks != cpus else ""), name, paths, kk, cpus, tasks)
    # The shipped cluster config's case: 16 crops of COCO-sized photos, on 1 CPU.
    coco = coco_sized(paths)
    ray_line("ray_1cpu_640x480", f"{name} at 640x480", coco, K_CONFIGS, 1, 1)
    import ray

    store = object_store(paths, k)
    ray.shutdown()  # the breakdown is timed alone, not beside an idle Ray cluster
    # transfer: what a chunk costs through Ray Data on one core beyond the same transform
    # in-process (tasks, Arrow blocks, the object store, Ray's own processes on that core)
    emit(bench="data", method="breakdown", corpus=name, crops_per_image=k,
         **{k_: round(v, 1) for k_, v in breakdown(paths, k).items()},
         ray_transfer_us_per_chunk=round(1e6 / rate["ray1", k, 1] - 1e6 / rate[k], 1),
         **{k_: round(v, 1) if isinstance(v, float) else v for k_, v in store.items()},
         machine_cores=cores())
    # Last, alone: placed before the Ray lines, the 1-CPU line at 64 crops gave a median of
    # 6,633 chunks/s in five runs, against 7,795 and 7,243 in two sets of three without it;
    # right after ray.shutdown(), one run in three gave 4,501 against ~6,200.
    inprocess_line("inprocess_640x480", f"{name} at 640x480", coco, K_CONFIGS)


if __name__ == "__main__":
    main()

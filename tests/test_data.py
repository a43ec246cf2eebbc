import json
import pickle
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from distgan import native
from distgan.config import load_config
from distgan.data import (
    LocalBatches, NoImagesError, Source, build_dataset, chunk_batch, crop_windows,
    cut_crops, cut_crops_float, eval_images, fit_to_chunk, noisy_chunks, open_source, tf_batches,
)
from distgan.errors import UserError
from distgan.noise import N_PARAMS

from .conftest import ROOT


def _cfg(*sets):
    return load_config(ROOT / "configs" / "smoke.yaml", list(sets))


# ---------------------------------------------------------------- eager transform


def crops_of(img, chunk, k, rng):
    """k random crops of img, each at a random symmetry: what noisy_chunks cuts."""
    return cut_crops(img, chunk, *crop_windows(img.shape, chunk, k, rng))


def test_crops_are_random_windows_of_the_image_and_seeded():
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    a = crops_of(img, 32, 6, np.random.default_rng(1))
    b = crops_of(img, 32, 6, np.random.default_rng(1))
    assert a.shape == (6, 32, 32, 3) and np.array_equal(a, b)
    assert not np.array_equal(a, crops_of(img, 32, 6, np.random.default_rng(2)))


def test_each_crop_is_one_of_the_8_symmetries_of_a_window():
    h, w = 90, 120
    img = np.zeros((h, w, 3), np.uint8)  # each pixel names its own position
    img[..., 0], img[..., 1], img[..., 2] = np.arange(h)[:, None], np.arange(w)[None, :], 7
    crops = crops_of(img, 16, 200, np.random.default_rng(0))
    seen = set()
    for c in crops:
        y0, x0 = int(c[..., 0].min()), int(c[..., 1].min())
        window = img[y0 : y0 + 16, x0 : x0 + 16]
        syms = [np.rot90(window, r) for r in range(4)]
        syms += [s[:, ::-1] for s in syms]
        matches = [i for i, s in enumerate(syms) if np.array_equal(c, s)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_small_images_are_padded_or_skipped():
    img = np.zeros((10, 50, 3), np.uint8)
    assert fit_to_chunk(img, 32, "pad").shape == (32, 50, 3)
    assert fit_to_chunk(img, 32, "skip") is None
    assert fit_to_chunk(np.zeros((1, 1, 3), np.uint8), 64, "pad").shape == (64, 64, 3)


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_noisy_chunks_rows(backend):
    img = np.full((40, 50, 3), 128, np.uint8)
    out = noisy_chunks(img, 5, _cfg(), np.random.default_rng(0), backend=backend)
    assert out["clean"].dtype == out["noisy"].dtype == np.float32
    assert out["clean"].shape == out["noisy"].shape == (5, 32, 32, 3)
    assert np.all(out["clean"] == np.float32(128 / 255))
    assert out["params"].shape == (5, N_PARAMS) and len(out["kind"]) == 5
    assert not np.array_equal(out["clean"], out["noisy"])


@pytest.mark.parametrize("chunk, ch", [(16, 3), (7, 3), (1, 3), (9, 1), (5, 4)])
def test_compiled_crops_are_the_numpy_crops(chunk, ch):
    """Every symmetry of windows anywhere, edges included, cut by the kernels equals
    `cut_crops` / 255 exactly."""
    rng = np.random.default_rng(chunk)
    img = rng.integers(0, 256, (23, 31, ch), dtype=np.uint8)
    ys, xs, _ = crop_windows(img.shape, chunk, 64, rng)
    ys[:2], xs[:2] = 0, [0, img.shape[1] - chunk]
    ys[2:4], xs[2:4] = img.shape[0] - chunk, [0, img.shape[1] - chunk]
    sym = np.arange(64) % 8
    want = cut_crops(img, chunk, ys, xs, sym).astype(np.float32) / np.float32(255)
    got = np.empty_like(want)
    cut_crops_float(img, chunk, ys, xs, sym, got, native.kernels())
    assert np.array_equal(got, want)


def test_the_two_backends_draw_the_same_crops_and_specs():
    img = np.random.default_rng(0).integers(0, 256, (60, 70, 3), dtype=np.uint8)
    a, b = (noisy_chunks(img, 24, _cfg(), np.random.default_rng(5), backend=be) for be in ("native", "numpy"))
    for key in ("clean", "params", "kind"):
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["noisy"], b["noisy"])  # different random streams


def test_compiled_crops_refuse_a_window_outside_the_image():
    img = np.zeros((20, 20, 3), np.uint8)
    out = np.empty((1, 8, 8, 3), np.float32)
    k = native.kernels()
    k.crops(img, 8, np.array([(12 * 20 + 12) * 3]), np.array([60]), np.array([3]), out)  # the last window
    for start, di, dj in (((13 * 20) * 3, 60, 3), (-3, 60, 3), (0, -60, 3), (0, 60, 180)):
        with pytest.raises(ValueError, match="walks out of the"):
            k.crops(img, 8, np.array([start]), np.array([di]), np.array([dj]), out)


def test_local_batches_are_a_function_of_seed_and_step():
    cfg = _cfg()
    src, _ = open_source("samples").split(1)
    a, b = LocalBatches(cfg, src), LocalBatches(cfg, src)
    assert all(np.array_equal(a.batch(3)[k], b.batch(3)[k]) for k in ("clean", "noisy", "params"))
    assert not np.array_equal(a.batch(3)["clean"], a.batch(4)["clean"])
    assert a.batch(0)["clean"].shape == (cfg.data.batch_size, 32, 32, 3)


def test_chunk_batch_reuses_its_arrays_only_once_nobody_holds_the_rows(tmp_path):
    """A dropped result's memory is written again (no fresh pages for every task); rows a
    caller still holds, even through one view, are never overwritten."""
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    cfg = _cfg("data.crops_per_image=4", "noise.kinds=[gaussian]")
    batch = lambda e, n=3: {"path": np.array([str(tmp_path / f"{i}.png") for i in range(n)]),  # noqa: E731
                            "epoch": np.full(n, e)}
    where = lambda rows: rows["noisy"].__array_interface__["data"][0]  # noqa: E731
    first = chunk_batch(batch(0), cfg)
    address = where(first)
    del first
    second = chunk_batch(batch(1), cfg)
    assert where(second) == address  # reused
    held, keep = second["noisy"][5], second["noisy"][5].copy()
    del second
    third = chunk_batch(batch(2), cfg)
    assert where(third) != address and np.array_equal(held, keep)  # a held view keeps its rows
    address = where(third)
    del third
    smaller = chunk_batch(batch(3, 2), cfg)  # fewer images: the first rows of the kept pair
    assert len(smaller["noisy"]) == 8 and where(smaller) == address and np.array_equal(held, keep)


# ---------------------------------------------------------------- sources


def _write_mixed_folder(d):
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(d / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (70, 64), dtype=np.uint8)).save(d / "sub" / "grey.png")
    Image.fromarray(rng.integers(0, 255, (64, 70, 4), dtype=np.uint8)).save(d / "sub" / "rgba.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE).save(d / "pal.png")
    Image.fromarray(rng.integers(0, 65535, (66, 66), dtype=np.uint16)).save(d / "g16.png")
    Image.fromarray(rng.integers(0, 255, (40, 200, 3), dtype=np.uint8)).save(d / "thin.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.png").write_text("not an image")
    data = (d / "rgb.jpg").read_bytes()
    (d / "trunc.jpg").write_bytes(data[: len(data) // 3])
    return 6, 3  # usable, bad


def test_folder_source_decodes_every_kind_to_rgb_and_skips_bad(tmp_path):
    good, bad = _write_mixed_folder(tmp_path / "imgs")
    cfg = _cfg(f"data.source=folder:{tmp_path / 'imgs'}", "data.batch_size=64",
               "data.crops_per_image=4", "data.chunk=48")
    src = open_source(cfg.data.source)
    assert len(src) == good + bad
    lb = LocalBatches(cfg, src)
    for s in range(8):
        b = lb.batch(s)
        assert b["clean"].shape == (64, 48, 48, 3)
    assert set(lb.bad) and all(("empty" in r or "not a readable" in r) for r in lb.bad.values())
    assert len(lb.bad) == bad


def test_small_image_skip_is_counted(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(d / "tiny.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "ok.png")
    cfg = _cfg(f"data.source=folder:{d}", "data.small_images=skip")
    lb = LocalBatches(cfg, open_source(cfg.data.source))
    for step in range(8):  # images are drawn at random: make sure the tiny one came up
        lb.batch(step)
    assert [r for r in lb.bad.values() if "smaller than" in r]


def test_no_usable_image_is_a_clear_error(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_text("x")
    (d / "b.jpg").write_bytes(b"")
    cfg = _cfg(f"data.source=folder:{d}")
    with pytest.raises(NoImagesError, match="no usable image"):
        LocalBatches(cfg, open_source(cfg.data.source)).batch(0)
    with pytest.raises(UserError, match="does not exist"):
        open_source(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "none").mkdir()
    with pytest.raises(NoImagesError, match="no image files"):
        open_source(f"folder:{tmp_path / 'none'}")
    with pytest.raises(UserError, match="not understood"):
        open_source("imagenet")


def test_coco_folder_and_instances_json(tmp_path):
    imgs = tmp_path / "coco" / "train2017"
    imgs.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), i * 50, np.uint8)).save(imgs / f"{i:012d}.jpg")
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir()
    meta = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in (0, 2)], "annotations": []}
    (ann / "instances_train2017.json").write_text(json.dumps(meta))
    assert len(open_source(f"coco:{imgs}")) == 3
    src = open_source(f"coco:{ann / 'instances_train2017.json'}")
    assert [p.rsplit("/", 1)[-1] for p in src.paths] == ["000000000000.jpg", "000000000002.jpg"]
    assert src.load(1, _cfg().data)[0, 0].tolist() == [100, 100, 100]


def test_cifar100_through_keras_cache_layout(tmp_path, monkeypatch):
    # A tiny archive in CIFAR-100's real format, where Keras keeps its datasets.
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (5, 3 * 32 * 32), dtype=np.uint8)
    build = tmp_path / "build" / "cifar-100-python"
    build.mkdir(parents=True)
    for name in ("train", "test"):
        with open(build / name, "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": list(range(5)),
                         b"coarse_labels": [0] * 5}, f)
    home = tmp_path / "keras"
    (home / "datasets").mkdir(parents=True)
    with tarfile.open(home / "datasets" / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(build, arcname="cifar-100-python")
    monkeypatch.setenv("KERAS_HOME", str(home))
    src = open_source("cifar100")
    assert len(src) == 5 and src.array.shape == (5, 32, 32, 3)
    assert np.array_equal(src.array[0], x[0].reshape(3, 32, 32).transpose(1, 2, 0))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="cifar-100-python.tar.gz"):
        open_source("cifar100")


def test_eval_images_are_fixed_and_resized():
    cfg = _cfg("data.eval_max_edge=100")
    _, ev = open_source("samples").split(2)
    a, b = eval_images(cfg, ev), eval_images(cfg, ev)
    assert len({e.name for e in a}) == 2 and max(a[0].clean.shape[:2]) == 100
    assert [e.spec for e in a[:2]] == list(cfg.data.eval_noise)  # each image under every spec
    assert len(a) == 2 * len(cfg.data.eval_noise)
    assert np.array_equal(a[1].noisy, b[1].noisy) and a[1].spec == b[1].spec


def test_holding_out_every_image_is_refused():
    with pytest.raises(NoImagesError, match="hold out"):
        Source("x", ("a", "b")).split(2)


# ---------------------------------------------------------------- in the pipeline


def test_transform_is_the_same_eagerly_and_in_ray_data(ray_cluster, tmp_path):
    cfg = _cfg("data.crops_per_image=3", "data.data_workers=1")
    src, _ = open_source("samples").split(1)
    eager = chunk_batch({"path": np.array(src.paths), "epoch": np.zeros(len(src), int)}, cfg)
    ds = build_dataset(cfg, src, epochs=1)
    rows = ds.take_all()
    assert len(rows) == len(eager["clean"]) == 3 * len(src)
    # Same (image, pass) -> same chunks, whatever order Ray ran them in.
    key = lambda a: a.tobytes()  # noqa: E731
    assert sorted(map(key, eager["noisy"])) == sorted(key(r["noisy"]) for r in rows)


def test_pipeline_streams_skips_bad_files_and_counts_them(ray_cluster, tmp_path):
    from distgan.data import data_resource_limits, make_stats

    good, bad = _write_mixed_folder(tmp_path / "imgs")
    cfg = _cfg(f"data.source=folder:{tmp_path / 'imgs'}", "data.crops_per_image=2",
               "data.chunk=48")
    data_resource_limits(cfg)
    stats = make_stats()
    ds = build_dataset(cfg, open_source(cfg.data.source), epochs=2, stats=stats)
    n = sum(len(b["clean"]) for b in tf_batches(ds, 4, 8))
    assert n == 2 * 2 * good
    st = ray_cluster.get(stats.get.remote())
    assert st["images"] == 2 * good and st["skipped"] == 2 * bad
    assert any("trunc.jpg" in r for r in st["skipped_files"])
    assert sum(st["noise_kinds"].values()) == n


def test_passes_get_fresh_crops(ray_cluster):
    cfg = _cfg("data.crops_per_image=2")
    src = Source("samples", open_source("samples").paths[:1])
    rows = build_dataset(cfg, src, epochs=2).take_all()
    assert len(rows) == 4 and not np.array_equal(rows[0]["clean"], rows[2]["clean"])


def test_preview_command(ray_cluster, tmp_path):
    from .conftest import run_cli

    r = run_cli("data", "preview", "--config", str(ROOT / "configs" / "smoke.yaml"),
                "-o", str(tmp_path / "grid.png"), "--batches", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["chunks"] == 16 and out["skipped"] == 0 and out["chunks_per_s"] > 0
    assert sum(Counter(out["noise_kinds"]).values()) >= 16
    assert Image.open(tmp_path / "grid.png").size == (8 * 32, 2 * 32)


def test_eval_mode_chunks_rejoin_into_whole_images(ray_cluster, tmp_path):
    from distgan.data import build_eval_dataset, join_eval
    from distgan.imagefile import read_image

    d = tmp_path / "ev"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, hw in (("a.png", (70, 45)), ("b.png", (33, 100)), ("c.png", (5, 7))):
        Image.fromarray(rng.integers(0, 255, (*hw, 3), dtype=np.uint8)).save(d / name)
    cfg = _cfg(f"data.source=folder:{d}")
    src = open_source(cfg.data.source)
    rows = build_eval_dataset(cfg, src).take_all()
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    # in order: images in source order, tiles in row-major order within each image
    assert [r["name"].rsplit("/", 1)[-1] for r in rows][0] == "a.png"
    assert all(np.diff(batch["tile_index"][batch["name"] == batch["name"][0]]) == 1)
    clean = join_eval(batch, "clean")
    noisy = join_eval(batch, "noisy")
    for p in src.paths:
        want, _ = read_image(p)
        assert np.array_equal(clean[p], want)
        assert noisy[p].shape == want.shape and not np.array_equal(noisy[p], want)


def test_ray_data_polls_its_running_tasks_every_10_ms(ray_cluster):
    """Ray Data 2.60 waits for all its running tasks at once, 0.1 s at a time, before it
    submits the next; PromptDispatch shortens that wait to 10 ms in the process that runs
    the pipeline (bench_data on 2 CPUs: 9,457 against 7,276 chunks/s, medians of 3 runs)."""
    from ray.data import DataContext
    from ray.data._internal.execution import streaming_executor_state as state

    from distgan.data import data_resource_limits
    from distgan.rayhooks import PromptDispatch

    data_resource_limits(_cfg())
    data_resource_limits(_cfg())  # registered once, however often it is called
    assert DataContext.get_current().custom_execution_callback_classes.count(PromptDispatch) == 1
    src = Source("samples", open_source("samples").paths[:2])
    assert len(build_dataset(_cfg("data.crops_per_image=2"), src).take_all()) == 4
    assert state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S == PromptDispatch.POLL_S == 0.01


def test_ray_data_scheduler_sleeps_only_when_it_spins(ray_cluster):
    """Ray Data 2.60's scheduling loop spins while backpressure holds it (it blocks in
    ray.wait only while tasks run). Under Ray Train it runs in the SplitCoordinator actor
    that feeds the shards; in bench_distributed it took 60-87 % of a core from the
    trainer. distgan registers IdleBackoff, which lets a spinning loop sleep."""
    import time

    from ray.data import DataContext

    from distgan.data import data_resource_limits
    from distgan.rayhooks import IdleBackoff

    data_resource_limits(_cfg())
    data_resource_limits(_cfg())  # registered once, however often it is called
    assert DataContext.get_current().custom_execution_callback_classes.count(IdleBackoff) == 1
    hook = IdleBackoff()
    t0 = time.perf_counter()
    for _ in range(30):  # a loop whose steps return at once: it spins
        hook.on_execution_step(None)
    assert time.perf_counter() - t0 >= (30 - IdleBackoff.SPIN_STEPS) * IdleBackoff.SLEEP_S
    for _ in range(5):  # steps that blocked in ray.wait are never delayed
        time.sleep(0.01)
        t0 = time.perf_counter()
        hook.on_execution_step(None)
        assert time.perf_counter() - t0 < 0.005
    # and a pipeline with the hook still streams
    src = Source("samples", open_source("samples").paths[:2])
    shard = build_dataset(_cfg("data.crops_per_image=2"), src, epochs=2).streaming_split(1)[0]
    assert sum(len(b["clean"]) for b in tf_batches(shard, 4, 0)) == 8

"""Shared helpers: timing medians and one JSON object per line."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ../shared/datasets beside the checkout, or where DISTGAN_DATASETS points.
DATASETS = Path(os.environ.get("DISTGAN_DATASETS", ROOT.parent / "shared" / "datasets"))
SUN80 = DATASETS / "sun80"
KODAK = DATASETS / "kodak24"


def emit(**row) -> None:
    print(json.dumps(row, default=float), flush=True)


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def corpus() -> tuple[str, list[Path]]:
    """sun80 when this machine has ../shared, else scikit-image's sample photos."""
    from distgan.data import open_source

    if SUN80.is_dir():
        src = open_source(f"folder:{SUN80}")
        return "sun80", [Path(p) for p in src.paths]
    return "samples", [Path(p) for p in open_source("samples").paths]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def quick() -> bool:
    return "--quick" in sys.argv

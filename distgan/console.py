"""What a command prints, and how it fails.

By default a command shows distgan's own progress and results: not TensorFlow's C++ log
lines (device probes, grappler's `remapper failed`), absl's warnings, nor Ray's start-up
banner. `--verbose`, or DISTGAN_VERBOSE=1 in the environment (which Ray's workers
inherit), brings them all back.

`run` is the error boundary of every entry point (`distgan ...` and `python -m
distgan.train ...`): a UserError becomes one line, `distgan: error: ...`, and exit code 2;
Ctrl-C exit code 130. Nothing else is caught: a bug still shows its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from .errors import UserError

ENV = "DISTGAN_VERBOSE"


def is_verbose() -> bool:
    return os.environ.get(ENV) == "1"


def setup(verbose: bool = False) -> None:
    """Logging for a command: distgan's INFO lines; other libraries' only when verbose."""
    if verbose:
        os.environ[ENV] = "1"
    verbose = is_verbose()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("distgan").setLevel(logging.INFO)
    if not verbose:
        # TensorFlow's C++ logging (read when TensorFlow loads, and by Ray's workers).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        for name in ("absl", "tensorflow", "ray"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _set_threads(tf, threads: int | None) -> None:
    if threads:  # only before TensorFlow's context starts, i.e. before any device probe
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def quiet_tensorflow(threads: int | None = None) -> None:
    """Import TensorFlow without its C++ start-up chatter (absl's pre-init lines about
    CUDA probes and oneDNN, which no environment variable filters), so that a command's
    stderr carries only what distgan says. Verbose mode shows everything. `threads` pins
    TensorFlow's thread pools to that many threads (in a fresh process only)."""
    import tempfile

    if is_verbose() or "tensorflow" in sys.modules:
        if threads and "tensorflow" not in sys.modules:
            import tensorflow as tf

            _set_threads(tf, threads)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow as tf

            _set_threads(tf, threads)
            tf.config.list_logical_devices()  # device probing logs happen here
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def run(fn: Callable[[], int | None], tensorflow: bool = False) -> int:
    """Run one command: TensorFlow imported quietly first if it needs it, and a UserError
    turned into one line on stderr."""
    try:
        if tensorflow:
            quiet_tensorflow()
        return int(fn() or 0)
    except UserError as e:
        print(f"distgan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distgan: interrupted", file=sys.stderr)
        return 130

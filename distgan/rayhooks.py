"""Ray Data hooks (imported only where Ray Data runs)."""

from __future__ import annotations

import time

from ray.data._internal.execution.execution_callback import ExecutionCallback


class IdleBackoff(ExecutionCallback):
    """Hold Ray Data's scheduling loop to at most one step per 20 ms.

    Ray Data 2.60's streaming executor blocks in `ray.wait` only while tasks are running.
    Once the consumer is behind and backpressure holds the operators, its loop spins:
    measured on 2 cores, the SplitCoordinator took 60-87 % of a core doing nothing, and the
    Ray Train worker beside it ran at half speed. A step that blocked in `ray.wait` is not
    delayed; one that returned at once waits out the rest of its 20 ms, which adds at most
    20 ms to the start of the next task, against the ~0.5 s a trainer takes per block.
    """

    MIN_STEP_S = 0.02

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def on_execution_step(self, executor) -> None:
        rest = self.MIN_STEP_S - (time.perf_counter() - self._last)
        if rest > 0:
            time.sleep(rest)
        self._last = time.perf_counter()

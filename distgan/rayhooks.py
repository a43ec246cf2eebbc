"""Ray Data hooks (imported only where Ray Data runs)."""

from __future__ import annotations

import time

from ray.data._internal.execution.execution_callback import ExecutionCallback


class IdleBackoff(ExecutionCallback):
    """Let Ray Data's scheduling loop sleep when it spins.

    Ray Data 2.60's streaming executor blocks in `ray.wait` only while it has tasks to wait
    for. Once the consumer is behind and backpressure holds the operators, its loop spins:
    measured on 2 cores, the SplitCoordinator took 60-87 % of a core doing nothing, and the
    Ray Train worker beside it ran at half speed. A step that blocked (a task finished, or
    the 0.1 s wait ran out) is never delayed, so a busy pipeline dispatches at full speed;
    after SPIN_STEPS steps in a row that returned at once, each further one sleeps SLEEP_S.
    """

    FAST_S = 0.005  # a step this short did not block in ray.wait
    SPIN_STEPS = 3
    SLEEP_S = 0.02

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._fast = 0

    def on_execution_step(self, executor) -> None:
        fast = time.perf_counter() - self._last < self.FAST_S
        self._fast = self._fast + 1 if fast else 0
        if self._fast >= self.SPIN_STEPS:
            time.sleep(self.SLEEP_S)
        self._last = time.perf_counter()

"""Ray Data hooks (imported only where Ray Data runs)."""

from __future__ import annotations

import logging
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


class PromptDispatch(ExecutionCallback):
    """Let Ray Data's executor poll its running tasks every 10 ms instead of 100.

    Ray Data 2.60's executor waits on all its running tasks at once, `ray.wait(..., num_returns=
    all of them, timeout=0.1)`, and submits the next tasks after it returns. With 2 data CPUs
    here a worker waited 28-31 ms (median) and up to 1.2 s between tasks, and the machine
    sat 37 % idle. With this timeout at 10 ms, bench_data's 2-CPU line went from 7,276 to
    9,457 chunks/s (3 tasks at once: 8,145 to 11,368), medians of three runs each; the
    1-CPU lines did not move. (Which wait holds the dispatch back was not pinned down:
    short tasks run beside a long one were dispatched every ~33 ms with either timeout.)
    The timeout is a module constant of the executor's state module; this sets it in the
    process that runs the executor (the driver, or the SplitCoordinator that feeds Ray
    Train), which then loops up to 100 times a second while tasks run.
    """

    POLL_S = 0.01

    def before_execution_starts(self, executor) -> None:
        from ray.data._internal.execution import streaming_executor_state as state

        if not hasattr(state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S"):  # a Ray that changed it
            logging.getLogger("distgan.rayhooks").info("Ray Data has no completion timeout to shorten")
            return
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = min(state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S, self.POLL_S)

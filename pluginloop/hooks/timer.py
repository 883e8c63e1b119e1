"""IterTimerHook: time per iteration, time waiting for data, and the ETA."""

from __future__ import annotations

import math
from time import perf_counter
from typing import TYPE_CHECKING, Any

from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.hub import MessageHub
    from pluginloop.runner import Runner

__all__ = ["IterTimerHook", "loader_length"]


def loader_length(loader: Any) -> int | None:
    """``len(loader)``, or None for a loader without a length (an iterable dataset)."""
    try:
        return len(loader)
    except TypeError:
        return None


@HOOKS.register_module()
class IterTimerHook(Hook):
    """Publish ``data_time``, ``time`` and ``eta`` to ``runner.message_hub`` (NORMAL).

    ``data_time``: seconds from the end of the previous iteration (or the start of the
    epoch) to ``before_train_iter``: waiting for the loader and moving the batch.
    ``time``: seconds from that same start to ``after_train_iter`` (data included).
    Both go into the hub's window, so the logger shows their mean over its interval.
    ``eta`` (latest only, seconds): remaining iterations times the mean iteration time of
    the iterations run in this process, so it is right after a resume too. The val and
    test loops publish ``val/data_time``, ``val/time``, ``val/eta`` (and ``test/...``),
    their ETA being the rest of that loop. Host clock only: nothing waits for the device,
    so an iteration's ``time`` includes the device work still queued from earlier ones.

    Training iterations only add to the hook's own sums; the hub receives them (as a
    source, ``MessageHub.add_source``) whenever it is read, e.g. when a line is logged.
    """

    priority = Priority.NORMAL

    def __init__(self) -> None:
        self._last = 0.0  # perf_counter() at the end of the previous iteration
        self._elapsed = 0.0  # seconds of the training iterations timed in this process
        self._iters = 0
        self._total = math.inf  # training iterations of the run
        self._loop_elapsed = 0.0  # the same three for the running val/test loop
        self._loop_iters = 0
        self._loop_total: int | None = None
        # Training iterations timed since the hub last took them: data, whole, count, and
        # runner.iter after the last of them.
        self._data_sum = self._time_sum = 0.0
        self._pending = self._done = 0
        self._fetched = 0.0  # perf_counter() at before_train_iter

    def before_run(self, runner: Runner) -> None:
        """Publish the training timings to the runner's hub whenever it is read."""
        runner.message_hub.add_source(self._publish)

    def after_run(self, runner: Runner) -> None:
        """Hand over what is left and stop being a source: the hook may serve another Runner next."""
        self._publish(runner.message_hub)
        runner.message_hub.remove_source(self._publish)

    def before_train_epoch(self, runner: Runner) -> None:
        """Start the clock for the epoch's first batch."""
        self._total = runner.max_iters
        self._last = perf_counter()

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """Note when the batch arrived."""
        self._fetched = perf_counter()

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Add the iteration's data time and time to the sums the hub will take."""
        now = perf_counter()
        self._data_sum += self._fetched - self._last
        self._time_sum += now - self._last
        self._last = now
        self._pending += 1
        self._done = runner.iter + 1

    def _publish(self, hub: MessageHub) -> None:
        """The hub's source: the window means of the pending iterations, and the ETA."""
        n = self._pending
        if not n:
            return
        self._elapsed += self._time_sum
        self._iters += n
        hub.update("data_time", self._data_sum / n, count=n)
        hub.update("time", self._time_sum / n, count=n)
        hub.set("eta", (self._total - self._done) * self._elapsed / self._iters)
        self._data_sum = self._time_sum = 0.0
        self._pending = 0

    def before_val_epoch(self, runner: Runner) -> None:
        """Start timing the validation loop."""
        self._start_loop(runner.val_dataloader)

    def before_val_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """Publish ``val/data_time``."""
        runner.message_hub.update("val/data_time", perf_counter() - self._last)

    def after_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Publish ``val/time`` and ``val/eta``."""
        self._loop_iter(runner, "val/", batch_idx)

    def before_test_epoch(self, runner: Runner) -> None:
        """Start timing the test loop."""
        self._start_loop(runner.test_dataloader)

    def before_test_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """Publish ``test/data_time``."""
        runner.message_hub.update("test/data_time", perf_counter() - self._last)

    def after_test_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Publish ``test/time`` and ``test/eta``."""
        self._loop_iter(runner, "test/", batch_idx)

    def _start_loop(self, loader: Any) -> None:
        self._loop_elapsed, self._loop_iters = 0.0, 0
        self._loop_total = loader_length(loader)
        self._last = perf_counter()

    def _loop_iter(self, runner: Runner, prefix: str, batch_idx: int) -> None:
        now = perf_counter()
        took, self._last = now - self._last, now
        self._loop_elapsed += took
        self._loop_iters += 1
        hub = runner.message_hub
        hub.update(f"{prefix}time", took)
        if self._loop_total is not None:
            remaining = self._loop_total - batch_idx - 1
            hub.set(f"{prefix}eta", remaining * self._loop_elapsed / self._loop_iters)

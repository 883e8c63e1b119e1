"""pluginloop-template: the smallest complete plugin, to copy.

``SamplesSeenHook`` counts the training samples a run has seen, logs the count and the
throughput after every training epoch, and keeps the count in checkpoints so that a
resumed run goes on counting. Each part shows one thing a plugin does:

- subclass ``pluginloop.Hook`` and override methods named after hook points (no decorator);
- ``priority`` places it among the built-ins at each point (lower runs earlier);
- arguments with defaults, so that the entry point can build it with no arguments and a
  user can still configure it: ``custom_hooks=[dict(type='template', log=False)]``;
- ``hook_points()`` leaves out points that do nothing in this configuration, so that
  they cost nothing per iteration;
- ``state_dict`` / ``load_state_dict`` make the state part of every checkpoint;
- import heavy libraries inside the methods that need them, not at the top: every Runner
  imports installed plugins while it is built.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pluginloop import Hook, Priority

if TYPE_CHECKING:
    from pluginloop import Runner

__all__ = ["SamplesSeenHook"]


class SamplesSeenHook(Hook):
    """Count training samples; log ``samples seen`` and samples/s after each epoch when ``log``."""

    # NORMAL is the default; an observer that only reads the loop's state can run late.
    priority = Priority.BELOW_NORMAL

    def __init__(self, log: bool = True) -> None:
        self.log = log
        self.samples_seen = 0
        self._epoch_start = 0.0
        self._epoch_samples = 0

    def hook_points(self) -> tuple[str, ...]:
        """Without ``log``, only the counting point is registered."""
        points = ("after_train_iter",)
        return ("before_train_epoch", *points, "after_train_epoch") if self.log else points

    def before_train_epoch(self, runner: Runner) -> None:
        """Start the epoch's clock."""
        self._epoch_start, self._epoch_samples = time.perf_counter(), 0

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Add this batch's size (the length of its first tensor) to the count."""
        n = _batch_size(data_batch)
        self.samples_seen += n
        self._epoch_samples += n

    def after_train_epoch(self, runner: Runner) -> None:
        """Log the count and this epoch's throughput."""
        seconds = max(time.perf_counter() - self._epoch_start, 1e-9)
        runner.logger.info(
            "samples seen: %d (%.1f samples/s this epoch)", self.samples_seen, self._epoch_samples / seconds
        )

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint under this hook's registered name."""
        return {"samples_seen": self.samples_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restored on resume, after the runner's own state."""
        self.samples_seen = int(state["samples_seen"])


def _batch_size(batch: Any) -> int:
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    shape = getattr(batch, "shape", None)
    return int(shape[0]) if shape else 1

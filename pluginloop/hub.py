"""MessageHub: the one place where hooks publish scalars (loss, lr, time, grad_norm, metrics).

Values stay where they were produced: a loss tensor on the GPU is summed on the GPU, and
only ``means()`` (called when a log line is written) copies to the host. That keeps
iterations that write no log line free of device-to-host synchronisation.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["MessageHub"]

Scalar = float | int | torch.Tensor


class MessageHub:
    """Windowed scalars (summed until read) plus the latest value of each name.

    ``update(name, value)`` adds to the window; ``means()`` returns and clears the window
    means; ``latest[name]`` is the last value published (e.g. ``'lr'``, ``'val/acc'``).
    """

    def __init__(self) -> None:
        self._sums: dict[str, Scalar] = {}
        self._counts: dict[str, int] = {}
        self.latest: dict[str, Scalar] = {}

    def update(self, name: str, value: Scalar, count: int = 1) -> None:
        """Publish ``value`` (the mean over ``count`` samples) under ``name``."""
        if isinstance(value, torch.Tensor):
            value = value.detach()
        self.latest[name] = value
        total = value * count if count != 1 else value
        previous = self._sums.get(name)
        self._sums[name] = total if previous is None else previous + total
        self._counts[name] = self._counts.get(name, 0) + count

    def means(self, clear: bool = True) -> dict[str, float]:
        """The mean of each window since the last call, as floats (this reads device values)."""
        out = {name: float(total) / self._counts[name] for name, total in self._sums.items()}
        if clear:
            self._sums.clear()
            self._counts.clear()
        return out

    def get(self, name: str, default: float | None = None) -> float | None:
        """The latest value of ``name`` as a float (reads a device value)."""
        value = self.latest.get(name)
        return default if value is None else float(value)

    def state_dict(self) -> dict[str, Any]:
        """Latest values and open windows as plain floats, for checkpoints."""
        return {
            "latest": {k: float(v) for k, v in self.latest.items()},
            "sums": {k: float(v) for k, v in self._sums.items()},
            "counts": dict(self._counts),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.latest = dict(state["latest"])
        self._sums = dict(state["sums"])
        self._counts = dict(state["counts"])

"""EmptyCacheHook: hand cached CUDA memory back to the driver at chosen points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["EmptyCacheHook"]

_MODES = ("train", "val", "test")


@HOOKS.register_module()
class EmptyCacheHook(Hook):
    """``torch.cuda.empty_cache()`` at the chosen points of the train, val and test loops (NORMAL).

    ``before_epoch`` (default False), ``after_iter`` (False) and ``after_epoch`` (True) pick
    the points. Only the chosen points are registered, and none when CUDA is not available,
    so a CPU run pays nothing. Emptying the cache frees no live tensor: it helps other
    processes on the GPU and fragmentation, and costs a re-allocation afterwards.
    """

    priority = Priority.NORMAL

    def __init__(
        self, before_epoch: bool = False, after_iter: bool = False, after_epoch: bool = True
    ) -> None:
        chosen = {"before_{}_epoch": before_epoch, "after_{}_iter": after_iter, "after_{}_epoch": after_epoch}
        self._points = tuple(pattern.format(mode) for pattern, on in chosen.items() if on for mode in _MODES)

    def hook_points(self) -> tuple[str, ...]:
        """The chosen points, or none without CUDA."""
        return self._points if torch.cuda.is_available() else ()

    def before_train_epoch(self, runner: Runner) -> None:
        """Empty the cache (``before_epoch=True``)."""
        torch.cuda.empty_cache()

    def before_val_epoch(self, runner: Runner) -> None:
        """Empty the cache (``before_epoch=True``)."""
        torch.cuda.empty_cache()

    def before_test_epoch(self, runner: Runner) -> None:
        """Empty the cache (``before_epoch=True``)."""
        torch.cuda.empty_cache()

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Empty the cache (``after_iter=True``)."""
        torch.cuda.empty_cache()

    def after_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Empty the cache (``after_iter=True``)."""
        torch.cuda.empty_cache()

    def after_test_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Empty the cache (``after_iter=True``)."""
        torch.cuda.empty_cache()

    def after_train_epoch(self, runner: Runner) -> None:
        """Empty the cache (``after_epoch=True``)."""
        torch.cuda.empty_cache()

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Empty the cache (``after_epoch=True``)."""
        torch.cuda.empty_cache()

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Empty the cache (``after_epoch=True``)."""
        torch.cuda.empty_cache()

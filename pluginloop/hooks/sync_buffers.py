"""SyncBuffersHook: the same BatchNorm statistics on every rank after each epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluginloop import dist
from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["SyncBuffersHook"]


@HOOKS.register_module()
class SyncBuffersHook(Hook):
    """Average the model's buffers across ranks after each train epoch (NORMAL).

    Each rank updates BatchNorm's running statistics from its own shard of the data, so
    they differ between ranks (DDP's ``broadcast_buffers`` copies rank 0's at each forward,
    which still leaves only rank 0's data in them). Averaging them gives evaluation and the
    checkpoints rank 0 writes statistics of all the data. See
    :func:`pluginloop.dist.sync_buffers`. A no-op in a single process.
    """

    priority = Priority.NORMAL

    def after_train_epoch(self, runner: Runner) -> None:
        """Average floating-point buffers, copy integer ones from rank 0."""
        if dist.is_distributed():
            dist.sync_buffers(runner.model)

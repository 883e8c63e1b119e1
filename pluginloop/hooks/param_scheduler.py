"""ParamSchedulerHook: steps the runner's learning-rate (and other parameter) schedulers.

Each entry of ``runner.param_schedulers`` (built by ``pluginloop._build.build_schedulers``)
says when it steps: after each train epoch (``by_epoch=True``, the default) or each train
iteration (``by_epoch=False``); ``ReduceLROnPlateau`` steps with its ``monitor`` metric after
each validation that follows a train epoch.

``begin`` / ``end`` place an entry in the run, so that a list reads as a sequence, e.g. a
linear warmup over iterations [0, 5) then a cosine from iteration 5: an entry takes over at
epoch/iteration ``begin`` (restarted at its own step 0, as ``torch.optim.lr_scheduler.
SequentialLR`` does at a milestone) and advances after each epoch/iteration until ``end``.
Entries active at the same time compose in list order (torch's chainable form).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from pluginloop._build import ParamScheduler
from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["ParamSchedulerHook"]


@HOOKS.register_module()
class ParamSchedulerHook(Hook):
    """Steps ``runner.param_schedulers`` (LOW: after the optimizer step, before checkpoints)."""

    priority = Priority.LOW

    def __init__(self) -> None:
        self._by_epoch: list[ParamScheduler] = []
        self._by_iter: list[ParamScheduler] = []
        self._plateau: list[ParamScheduler] = []
        self._trained_since_val = False

    def before_run(self, runner: Runner) -> None:
        """Sort the runner's schedulers by when they step."""
        entries = runner.param_schedulers
        self._plateau = [e for e in entries if isinstance(e.scheduler, ReduceLROnPlateau)]
        others = [e for e in entries if not isinstance(e.scheduler, ReduceLROnPlateau)]
        self._by_epoch = [e for e in others if e.by_epoch]
        self._by_iter = [e for e in others if not e.by_epoch]
        if self._plateau and runner.val_dataloader is None and runner.train_dataloader is not None:
            runner.logger.warning(
                "ReduceLROnPlateau steps with a validation metric, but there is no val_dataloader: "
                "it will never step; pass val_dataloader= to the Runner"
            )

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Step the iteration-based schedulers."""
        if self._by_iter:
            _step(self._by_iter, runner.iter + 1)

    def after_train_epoch(self, runner: Runner) -> None:
        """Step the epoch-based schedulers."""
        _step(self._by_epoch, runner.epoch + 1)
        self._trained_since_val = True

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """A checkpoint from the end of a train epoch owes that epoch's validation (and plateau step)."""
        self._trained_since_val = bool(checkpoint["meta"].get("val_pending"))

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Step plateau schedulers with their monitored metric (only after a train epoch)."""
        if not self._trained_since_val:  # a standalone runner.val() must not move the schedule
            return
        self._trained_since_val = False
        for entry in self._plateau:
            if not _active(entry, runner.epoch):
                continue
            if entry.monitor not in metrics:
                raise KeyError(
                    f"ReduceLROnPlateau monitors {entry.monitor!r}, but validation reported only "
                    f"{', '.join(sorted(metrics)) or 'nothing'}: set monitor= in its scheduler config "
                    "to one of these"
                )
            entry.scheduler.step(metrics[entry.monitor])


def _step(entries: list[ParamScheduler], done: int) -> None:
    """Step each entry after epoch/iteration ``done`` (counted from 1) of the run, in order."""
    for entry in entries:
        if _active(entry, done):
            entry.scheduler.step()
        elif done == entry.begin:
            _restart(entry.scheduler)


def _active(entry: ParamScheduler, done: int) -> bool:
    """Whether ``entry`` advances after epoch/iteration ``done``: steps begin..end-1, from 0."""
    return entry.begin < done and (entry.end is None or done <= entry.end)


def _restart(scheduler: Any) -> None:
    """Put a scheduler at its own step 0, as SequentialLR does when its milestone is reached."""
    if not isinstance(scheduler, LRScheduler):
        scheduler.step()
        return
    with warnings.catch_warnings():
        # step(epoch) is deprecated for users, but it is the public way to reach the closed
        # form at step 0 (SequentialLR calls the private _update_lr(0) for the same thing).
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step(0)

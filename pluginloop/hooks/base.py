"""``Hook``: the base class of class-style plugins, as in the design document.

Subclass it and override the methods named after hook points, with no decorator. Only the
points a subclass overrides are registered, so an unused point costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, ClassVar

from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.priority import Priority, PriorityLike

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["Hook"]


class Hook:
    """Base class of hooks; ``priority`` is the default priority of instances.

    A priority given at registration (``register_hook(h, priority=...)`` or a config's
    ``priority`` key) wins over the class attribute. A hook that defines ``state_dict()``
    and ``load_state_dict(state)`` has its state saved in checkpoints and restored on resume.
    """

    priority: ClassVar[PriorityLike] = Priority.NORMAL

    def hook_points(self) -> tuple[str, ...]:
        """The hook points this hook implements: by default, those its class overrides.

        Override to leave out points that do not apply to a configuration (e.g. a timer that
        is off), so that they cost nothing per call.
        """
        cls = type(self)
        return tuple(p for p in HOOK_POINTS if getattr(cls, p) is not getattr(Hook, p))

    # -- the 16 hook points (see pluginloop.hookspecs for when each fires) ----------------

    def before_run(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.before_run`."""

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """See :func:`pluginloop.hookspecs.after_load_checkpoint`."""

    def before_train_epoch(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.before_train_epoch`."""

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """See :func:`pluginloop.hookspecs.before_train_iter`."""

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """See :func:`pluginloop.hookspecs.after_train_iter`."""

    def after_train_epoch(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.after_train_epoch`."""

    def before_val_epoch(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.before_val_epoch`."""

    def before_val_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """See :func:`pluginloop.hookspecs.before_val_iter`."""

    def after_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """See :func:`pluginloop.hookspecs.after_val_iter`."""

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """See :func:`pluginloop.hookspecs.after_val_epoch`."""

    def before_test_epoch(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.before_test_epoch`."""

    def before_test_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        """See :func:`pluginloop.hookspecs.before_test_iter`."""

    def after_test_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """See :func:`pluginloop.hookspecs.after_test_iter`."""

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """See :func:`pluginloop.hookspecs.after_test_epoch`."""

    def after_run(self, runner: Runner) -> None:
        """See :func:`pluginloop.hookspecs.after_run`."""

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """See :func:`pluginloop.hookspecs.before_save_checkpoint`."""

    # -- helpers of the design document -------------------------------------------------

    def every_n_epochs(self, runner: Runner, n: int) -> bool:
        """True at the end of every ``n``-th epoch (the epoch in progress counts, from 1)."""
        return n > 0 and (runner.epoch + 1) % n == 0

    def every_n_iters(self, runner: Runner, n: int) -> bool:
        """True on every ``n``-th training iteration of the run (the one in progress, from 1)."""
        return n > 0 and (runner.iter + 1) % n == 0

    def every_n_inner_iters(self, batch_idx: int, n: int) -> bool:
        """True on every ``n``-th iteration within the epoch (``batch_idx`` from 0)."""
        return n > 0 and (batch_idx + 1) % n == 0

    def end_of_epoch(self, dataloader: Sized, batch_idx: int) -> bool:
        """True on the last batch of ``dataloader``."""
        return batch_idx + 1 == len(dataloader)

    def is_last_epoch(self, runner: Runner) -> bool:
        """True during the last training epoch of the run (also when ``max_iters`` ends it)."""
        per_epoch = len(runner.train_dataloader) if isinstance(runner.train_dataloader, Sized) else 0
        if per_epoch and runner.max_iters < math.inf:
            return runner.epoch == (int(runner.max_iters) - 1) // per_epoch
        return runner.epoch + 1 == runner.max_epochs

    def is_last_iter(self, runner: Runner) -> bool:
        """True during the last training iteration of the run (``runner.max_iters`` is its length)."""
        return runner.iter + 1 == runner.max_iters

"""OptimizerHook: backward and optimizer step after each training iteration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner


@HOOKS.register_module()
class OptimizerHook(Hook):
    """zero_grad, backward on ``outputs['loss']``, step; the default ``optimizer`` hook (HIGH)."""

    priority = Priority.HIGH

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Update the parameters with this iteration's loss."""
        optimizer = runner.optimizer
        if optimizer is None:
            raise RuntimeError("OptimizerHook needs runner.optimizer: pass optimizer= to the Runner")
        optimizer.zero_grad(set_to_none=True)
        outputs["loss"].backward()
        optimizer.step()

"""GradientCumulativeOptimizerHook: OptimizerHook with a required ``cumulative_iters``.

The window logic is OptimizerHook's (``cumulative_iters=1`` is the plain step), so that
``Fp16OptimizerHook(cumulative_iters=4)`` accumulates too; this name is the design
document's, kept for configs that ask for accumulation explicitly.
"""

from __future__ import annotations

from typing import Any

from pluginloop.hooks.optimizer import OptimizerHook
from pluginloop.registry import HOOKS

__all__ = ["GradientCumulativeOptimizerHook"]


@HOOKS.register_module()
class GradientCumulativeOptimizerHook(OptimizerHook):
    """Gradient accumulation (HIGH): an optimizer step every ``cumulative_iters`` iterations.

    The loss is divided by ``cumulative_iters``; backward runs every iteration; step and
    zero_grad every ``cumulative_iters`` iterations and at the run's last iteration, whose
    shorter final window divides by its own length. Warns once when the model has BatchNorm
    (micro-batch statistics differ from the large batch's) and when resumed inside a window.
    Under DDP the gradient all-reduce runs only on step iterations.
    """

    def __init__(
        self,
        cumulative_iters: int,
        grad_clip: dict[str, Any] | None = None,
        detect_anomalous_params: bool = False,
    ) -> None:
        super().__init__(grad_clip, detect_anomalous_params, cumulative_iters)

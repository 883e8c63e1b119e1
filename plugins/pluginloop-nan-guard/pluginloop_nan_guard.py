"""pluginloop-nan-guard: stop the run when the loss is NaN or infinite.

``CheckInvalidLossHook`` is the design document's hook. It checks ``outputs['loss']`` at
``after_train_iter`` with priority VERY_HIGH, i.e. before OptimizerHook (HIGH) applies the
step, so a non-finite loss never reaches the weights. Before every checkpoint it also checks
the weights themselves (a NaN can slip in on iterations that ``interval`` skips), so that no
checkpoint with non-finite weights is ever written.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from pluginloop import Hook, Priority

if TYPE_CHECKING:
    from pluginloop import Runner

__all__ = ["CheckInvalidLossHook"]


class CheckInvalidLossHook(Hook):
    """Raise ``FloatingPointError`` naming epoch, iteration and value on a non-finite loss.

    ``interval``: check every ``interval`` training iterations. Each check reads the loss
    from the device, which waits for the GPU (a synchronisation): raise ``interval`` when
    that costs too much. ``check_weights``: refuse to save a checkpoint whose weights are
    not finite.
    """

    priority = Priority.VERY_HIGH  # before OptimizerHook (HIGH): check, then step

    def __init__(self, interval: int = 1, check_weights: bool = True) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        self.interval = interval
        self.check_weights = check_weights

    def hook_points(self) -> tuple[str, ...]:
        """``after_train_iter``, and ``before_save_checkpoint`` when ``check_weights``."""
        return ("after_train_iter", "before_save_checkpoint") if self.check_weights else ("after_train_iter",)

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Check this iteration's loss (every ``interval`` iterations)."""
        if not self.every_n_iters(runner, self.interval) or not outputs or outputs.get("loss") is None:
            return
        loss = outputs["loss"]
        if isinstance(loss, torch.Tensor):
            finite = bool(torch.isfinite(loss.detach()).all())  # the synchronisation point
        else:
            finite = math.isfinite(float(loss))
        if not finite:
            value = loss.detach().flatten()[0].item() if isinstance(loss, torch.Tensor) else float(loss)
            raise FloatingPointError(
                f"the loss is {value} at epoch {runner.epoch}, iteration {runner.iter} "
                f"(batch {batch_idx} of the epoch; counted from 0): the run is stopped before the "
                "optimizer step, so the weights and checkpoints stay finite. Lower the learning rate, "
                "clip gradients (OptimizerHook grad_clip=) or check the data."
            )

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint whose model weights are not all finite."""
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if (
                isinstance(tensor, torch.Tensor)
                and tensor.is_floating_point()
                and not torch.isfinite(tensor).all()
            ):
                raise FloatingPointError(
                    f"weight {name!r} is not finite at epoch {runner.epoch}, iteration {runner.iter}: "
                    "the checkpoint is not written"
                )

"""Fp16OptimizerHook: mixed precision through ``torch.autocast`` and a gradient scaler.

Only the AMP setup lives here. The step itself is OptimizerHook's: it scales the loss through
``runner.grad_scaler``, unscales before clipping, and skips (and logs) steps whose gradients
overflowed. The forward runs under autocast through ``runner.forward_contexts``, so the loop
knows nothing of fp16. Parameters stay float32: autocast casts copies per operation, which
gives the "fp32 master weights" of the design document without a second model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import torch

from pluginloop.errors import ConfigError
from pluginloop.hooks.optimizer import OptimizerHook
from pluginloop.registry import HOOKS, check_arguments

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["Fp16OptimizerHook"]

_DTYPES = {
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}  # fmt: skip


@HOOKS.register_module()
class Fp16OptimizerHook(OptimizerHook):
    """Mixed-precision training (HIGH), used in place of OptimizerHook.

    Args:
        loss_scale: ``'dynamic'`` (default: the scale shrinks on overflow and grows after a run
            of good steps), a number (a static scale, e.g. ``512``), or a dict of
            ``torch.amp.GradScaler`` arguments (``init_scale``, ``growth_factor``,
            ``backoff_factor``, ``growth_interval``). With bfloat16, whose range is float32's,
            ``'dynamic'`` uses no scaler at all; a number or a dict still installs one.
        dtype: the autocast dtype: ``'float16'`` / ``'bfloat16'`` (or a ``torch.dtype``);
            default float16 on CUDA and bfloat16 elsewhere (e.g. CPU, where float16 is slow).
        grad_clip, detect_anomalous_params, cumulative_iters: as for OptimizerHook.

    The scaler's state is saved in checkpoints with this hook's state and restored on resume.
    """

    def __init__(
        self,
        loss_scale: str | float | dict[str, Any] = "dynamic",
        dtype: str | torch.dtype | None = None,
        grad_clip: dict[str, Any] | None = None,
        detect_anomalous_params: bool = False,
        cumulative_iters: int = 1,
    ) -> None:
        super().__init__(grad_clip, detect_anomalous_params, cumulative_iters)
        self.loss_scale = _check_loss_scale(loss_scale)
        self.dtype = _check_dtype(dtype)
        self.scaler: torch.amp.GradScaler | None = None
        self._device_type = "cpu"
        self._autocast_dtype = torch.bfloat16
        self._scaler_state: dict[str, Any] | None = None

    def before_run(self, runner: Runner) -> None:
        """Choose the dtype, install autocast around the forward and the loss scaler."""
        super().before_run(runner)
        self._device_type = device = runner.device.type
        if not torch.amp.is_autocast_available(device):
            raise ConfigError(f"torch.autocast does not support device {device!r}; use OptimizerHook there",
                              "default_hooks.optimizer")
        dtype = self.dtype or (torch.float16 if device == "cuda" else torch.bfloat16)
        if device == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bfloat16 support: use dtype='float16'", "dtype")
        self._autocast_dtype = dtype
        if self._autocast not in runner.forward_contexts:
            runner.forward_contexts.append(self._autocast)
        wants_scaler = dtype is torch.float16 or not isinstance(self.loss_scale, str)
        if wants_scaler and self.scaler is None:
            self.scaler = _make_scaler(device, self.loss_scale)
            if self._scaler_state is not None:
                self.scaler.load_state_dict(self._scaler_state)
                self._scaler_state = None
        runner.grad_scaler = self.scaler

    def state_dict(self) -> dict[str, Any]:
        """OptimizerHook's state plus the scaler's (scale, growth tracker)."""
        state = super().state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        super().load_state_dict(state)
        scaler_state = state.get("scaler")
        if scaler_state is None:
            return
        if self.scaler is None:  # restored before before_run made the scaler: apply it there
            self._scaler_state = scaler_state
        else:
            self.scaler.load_state_dict(scaler_state)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self._device_type, dtype=self._autocast_dtype)


class _StaticGradScaler(torch.amp.GradScaler):
    """A GradScaler whose scale never changes: an overflowing step is skipped, the scale stays.

    GradScaler itself refuses growth_factor=1 / backoff_factor=1, so the fixed value is put back
    after every update instead.
    """

    def __init__(self, device: str, scale: float) -> None:
        super().__init__(device, init_scale=scale)
        self.static_scale = scale

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        """Keep the static scale (unless ``new_scale`` is given)."""
        super().update(self.static_scale if new_scale is None else new_scale)


def _make_scaler(device: str, loss_scale: str | float | dict[str, Any]) -> torch.amp.GradScaler:
    if isinstance(loss_scale, dict):
        return torch.amp.GradScaler(device, **loss_scale)
    if isinstance(loss_scale, str):
        return torch.amp.GradScaler(device)
    return _StaticGradScaler(device, float(loss_scale))


def _check_loss_scale(value: Any) -> str | float | dict[str, Any]:
    if value == "dynamic":
        return "dynamic"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"a static loss scale must be a positive finite number, got {value!r}",
                              "loss_scale")
        return float(value)
    if isinstance(value, dict):
        check_arguments(torch.amp.GradScaler, value, "loss_scale", given=("device", "enabled"))
        try:  # GradScaler checks its factors in the constructor; a CPU one allocates nothing
            torch.amp.GradScaler("cpu", **value)
        except (AssertionError, ValueError) as exc:
            raise ConfigError(str(exc), "loss_scale") from None
        return dict(value)
    raise ConfigError(
        f"expected 'dynamic', a number (a static scale such as 512) or a dict of GradScaler arguments, "
        f"got {value!r}",
        "loss_scale",
    )


def _check_dtype(value: Any) -> torch.dtype | None:
    if value is None or value in (torch.float16, torch.bfloat16):
        return cast("torch.dtype | None", value)
    if isinstance(value, str) and value.lower() in _DTYPES:
        return _DTYPES[value.lower()]
    raise ConfigError(f"expected 'float16' or 'bfloat16' (or None for the device's default), got {value!r}",
                      "dtype")

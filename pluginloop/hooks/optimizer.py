"""OptimizerHook: backward and optimizer step after each training iteration.

This is pluginloop's one implementation of a training step. Mixed precision and gradient
accumulation are not subclasses with loops of their own; they cooperate through
parameters and documented runner state:

- ``cumulative_iters=N`` accumulates N iterations per step (GradientCumulativeOptimizerHook
  is this class with N required);
- ``runner.grad_scaler``, when an AMP hook (Fp16OptimizerHook) installed one, scales the loss,
  unscales the gradients before clipping and skips steps whose gradients overflowed.

Per training iteration: loss (divided by the window size) -> backward; on step iterations:
unscale -> clip (grad norm published as ``'grad_norm'``) -> step -> zero_grad.
"""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pluginloop import dist
from pluginloop.errors import ConfigError
from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS, check_arguments

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["OptimizerHook"]


@HOOKS.register_module()
class OptimizerHook(Hook):
    """Backward on ``outputs['loss']`` and an optimizer step; the default ``optimizer`` hook (HIGH).

    Args:
        grad_clip: keyword arguments of ``torch.nn.utils.clip_grad_norm_`` (``max_norm``
            required, e.g. ``dict(max_norm=1.0, norm_type=2)``), applied to the parameters
            that have gradients; the total norm before clipping is published as ``'grad_norm'``.
        detect_anomalous_params: before each backward, walk the loss's autograd graph and log
            every trainable parameter that is not in it (name and shape): the cause of DDP's
            "Expected to have finished reduction" error. Slow; debugging only.
        cumulative_iters: accumulate gradients over this many iterations per step; the loss is
            divided by the window size, and the last window of the run, when shorter, by its
            own length. Under DDP the gradient all-reduce runs only on step iterations.

    A checkpoint taken inside an accumulation window holds the gradients accumulated so far,
    so that a single-process resume continues the window exactly.
    """

    priority = Priority.HIGH

    def __init__(
        self,
        grad_clip: dict[str, Any] | None = None,
        detect_anomalous_params: bool = False,
        cumulative_iters: int = 1,
    ) -> None:
        self.grad_clip = _check_grad_clip(grad_clip)
        if not isinstance(detect_anomalous_params, bool):
            raise ConfigError(f"must be True or False, got {detect_anomalous_params!r}",
                              "detect_anomalous_params")
        self.detect_anomalous_params = detect_anomalous_params
        self.cumulative_iters = _check_cumulative_iters(cumulative_iters)
        self._run_iters: float = math.inf  # training iterations of the whole run, for the last window
        self._optimizer: torch.optim.Optimizer | None = None
        self._no_sync: Callable[[], contextlib.AbstractContextManager[Any]] | None = None
        self._pending_grads: list[torch.Tensor | None] | None = None
        self._restored_grads = False
        self._reported: frozenset[str] = frozenset()
        self._warned_batchnorm = False

    # -- hook points ----------------------------------------------------------------------

    def before_run(self, runner: Runner) -> None:
        """Start from clean gradients; learn the run's length; under DDP, skip non-step syncs."""
        self._optimizer = runner.optimizer
        if self._optimizer is not None:
            self._optimizer.zero_grad(set_to_none=True)
            if self._pending_grads is not None:  # loaded before this hook saw the optimizer
                self._put_grads(self._pending_grads)
        self._run_iters = runner.max_iters
        if self.cumulative_iters == 1:
            return
        if not self._warned_batchnorm and _has_batchnorm(runner.model):
            self._warned_batchnorm = True
            warnings.warn(
                f"gradient accumulation (cumulative_iters={self.cumulative_iters}) with BatchNorm: "
                "BatchNorm normalises each micro-batch on its own, so this is not the same as "
                "training with a batch cumulative_iters times larger; consider GroupNorm/LayerNorm "
                "or SyncBatchNorm with a larger per-step batch",
                UserWarning,
                stacklevel=2,
            )
        if isinstance(runner.wrapped_model, DistributedDataParallel):
            if self._no_sync is None:
                self._no_sync = functools.partial(self._sync_context, runner)
            if self._no_sync not in runner.forward_contexts:
                runner.forward_contexts.append(self._no_sync)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """Warn when the run resumes inside an accumulation window."""
        done = runner.iter % self.cumulative_iters
        if self.cumulative_iters == 1 or done == 0:
            return
        if self._restored_grads and runner.world_size == 1:
            what = "its accumulated gradients were restored from the checkpoint, so it continues exactly"
        else:
            what = ("its accumulated gradients could not be restored (not in the checkpoint, or ranks "
                    "holding different partial sums), so its step uses only the remaining iterations; "
                    f"checkpoint at multiples of {self.cumulative_iters} iterations for an exact resume")
        warnings.warn(
            f"resumed at iteration {runner.iter}, {done} iteration(s) into a gradient-accumulation window "
            f"of {self.cumulative_iters}: {what}",
            UserWarning,
            stacklevel=2,
        )

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Backward this iteration's loss; step, unless inside an accumulation window."""
        optimizer = runner.optimizer
        if optimizer is None:
            raise RuntimeError("OptimizerHook needs runner.optimizer: pass optimizer= to the Runner")
        loss = outputs["loss"]
        step = True
        if self.cumulative_iters != 1:
            size, step = self._window(runner.iter)
            if size != 1:
                loss = loss / size
        if self.detect_anomalous_params:
            self._report_params_outside_graph(runner, loss)
        scaler = runner.grad_scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if not step:
            return
        overflow = False
        if scaler is not None:
            scaler.unscale_(optimizer)  # real gradients for clipping and the norm
            # GradScaler.step reads these flags with .item() right after anyway: this adds no stall.
            found_inf = scaler._found_inf_per_device(optimizer).values()
            overflow = bool(sum(found_inf).item())
        if self.grad_clip is not None and not overflow:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if params:
                norm = nn.utils.clip_grad_norm_(params, **self.grad_clip)
                runner.message_hub.update("grad_norm", norm)  # stays on the device: no sync
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)  # skips optimizer.step() on overflow
            scaler.update()
            scale = scaler._get_scale_async()  # the scale tensor itself: reading it would sync
            if scale is not None:
                runner.message_hub.set("loss_scale", scale.clone())  # update() changes it in place
            if overflow:
                runner.logger.warning(
                    "iteration %d: gradients overflowed (inf/NaN) under loss scaling; the optimizer step "
                    "was skipped and the loss scale is now %g", runner.iter + 1, scaler.get_scale(),
                )
        optimizer.zero_grad(set_to_none=True)

    # -- checkpoint state -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The gradients accumulated inside an open window (none between windows)."""
        grads = self._grads()
        return {"grads": grads} if any(g is not None for g in grads) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back the gradients of an open accumulation window."""
        grads = state.get("grads")
        self._restored_grads = grads is not None
        if grads is None:
            return
        if self._optimizer is None:
            self._pending_grads = list(grads)
        else:
            self._put_grads(list(grads))

    # -- helpers ----------------------------------------------------------------------------

    def _window(self, index: int) -> tuple[int, bool]:
        """(window size, whether iteration ``index`` (from 0) ends it and steps)."""
        n = self.cumulative_iters
        if n == 1:
            return 1, True
        start = index - index % n
        size = int(min(n, self._run_iters - start))  # the run's last window may be shorter
        return size, index + 1 == start + size

    def _sync_context(self, runner: Runner) -> contextlib.AbstractContextManager[Any]:
        # DDP decides in forward (prepare_for_backward) whether the next backward all-reduces,
        # so no_sync must wrap the forward; the backward in after_train_iter then stays local.
        if runner.wrapped_model.training and torch.is_grad_enabled() and not self._window(runner.iter)[1]:
            return dist.no_sync(runner.wrapped_model)
        return contextlib.nullcontext()

    def _params(self) -> list[torch.Tensor]:
        if self._optimizer is None:
            return []
        return [p for group in self._optimizer.param_groups for p in group["params"]]

    def _grads(self) -> list[torch.Tensor | None]:
        return [None if p.grad is None else p.grad.detach().clone() for p in self._params()]

    def _put_grads(self, grads: list[torch.Tensor | None]) -> None:
        params = self._params()
        self._pending_grads = None
        if len(grads) != len(params):
            warnings.warn(f"checkpoint holds {len(grads)} accumulated gradients but the optimizer has "
                          f"{len(params)} parameters; they are not restored", UserWarning, stacklevel=3)
            self._restored_grads = False
            return
        for param, grad in zip(params, grads):
            param.grad = None if grad is None else grad.to(param.device, param.dtype)

    def _report_params_outside_graph(self, runner: Runner, loss: torch.Tensor) -> None:
        in_graph = _graph_leaf_ids(loss)
        missing = frozenset(
            f"{name} {tuple(p.shape)}"
            for name, p in runner.model.named_parameters()
            if p.requires_grad and id(p) not in in_graph
        )
        if missing and missing != self._reported:  # once per distinct set, not every iteration
            runner.logger.warning(
                "detect_anomalous_params: %d trainable parameter(s) are not in the loss's autograd graph "
                "(they get no gradient; under DDP this causes 'Expected to have finished reduction'): %s",
                len(missing), ", ".join(sorted(missing)),
            )
        self._reported = missing


def _graph_leaf_ids(loss: torch.Tensor) -> set[int]:
    """ids of the leaf tensors (AccumulateGrad nodes' variables) that ``loss`` depends on."""
    found: set[int] = set()
    seen: list[Any] = []  # keeps the node wrappers alive, so that their ids stay unique
    seen_ids: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen_ids:
            continue
        seen.append(fn)
        seen_ids.add(id(fn))
        variable = getattr(fn, "variable", None)
        if variable is not None:
            found.add(id(variable))
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _check_grad_clip(grad_clip: Any) -> dict[str, Any] | None:
    if grad_clip is None:
        return None
    if not isinstance(grad_clip, dict):
        raise ConfigError(
            f"expected a dict of clip_grad_norm_ arguments such as dict(max_norm=1.0), got {grad_clip!r}",
            "grad_clip",
        )
    check_arguments(nn.utils.clip_grad_norm_, grad_clip, "grad_clip", given=("parameters",))
    if "max_norm" not in grad_clip:
        raise ConfigError("needs max_norm, e.g. grad_clip=dict(max_norm=1.0)", "grad_clip")
    return dict(grad_clip)


def _check_cumulative_iters(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"must be a positive int (iterations per optimizer step), got {value!r}",
                          "cumulative_iters")
    return value

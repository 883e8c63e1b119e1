"""Batches in, loss out: moving batches to the device, calling the model, and eval metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pluginloop.errors import ConfigError

__all__ = ["MetricMeter", "forward", "to_device"]


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``batch`` with every tensor (in tuples, lists and dicts, recursively) moved to ``device``."""
    # Runs every iteration. The common batch, a tuple or list (inputs, targets) of two
    # tensors, is checked first and moved with no further call; on a CPU run its tensors
    # usually are in host memory already, and it is returned as it is (the two .to() calls
    # would return the same tensors, at ~0.3 µs each; benchmarks/hotpath.py). Then a tensor;
    # then other sequences, their tensors moved without a recursive call each; the slower
    # isinstance against the Mapping ABC comes last.
    kind = type(batch)
    if (kind is tuple or kind is list) and len(batch) == 2:
        first, second = batch
        if type(first) is torch.Tensor and type(second) is torch.Tensor:
            if device.type == "cpu" and first.is_cpu and second.is_cpu:  # a GPU run stops at the first test
                return batch
            pair = first.to(device, non_blocking=non_blocking), second.to(device, non_blocking=non_blocking)
            return kind(pair)
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, (list, tuple)):
        moved = [
            v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor)
            else to_device(v, device, non_blocking)
            for v in batch
        ]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    return batch


def forward(model: nn.Module, batch: Any, loss_fn: Callable[..., Any] | None) -> dict[str, Any]:
    """Run ``model`` on ``batch`` and return outputs with ``'loss'`` (when computable).

    With ``loss_fn`` the batch is ``(inputs, targets)``. Without it the model computes the
    loss: a mapping batch is passed as keyword arguments, a tuple/list as positional ones,
    and the model returns a scalar tensor, a dict with ``'loss'`` or an object with ``.loss``.
    """
    if loss_fn is not None:
        # type() first: isinstance against the Sequence ABC costs more, every iteration
        if not (type(batch) in (tuple, list) or isinstance(batch, Sequence)) or len(batch) != 2:
            raise TypeError(
                "with loss_fn, batches must be (inputs, targets) pairs; got "
                f"{type(batch).__name__}. Give no loss_fn to let the model compute the loss."
            )
        inputs, targets = batch
        preds = model(inputs)
        return {"loss": loss_fn(preds, targets), "preds": preds, "targets": targets}
    if isinstance(batch, Mapping):
        result = model(**batch)
        targets = batch.get("labels", batch.get("targets"))
    elif isinstance(batch, (list, tuple)):
        result = model(*batch)
        targets = batch[-1] if len(batch) > 1 else None
    else:
        result = model(batch)
        targets = None
    if isinstance(result, torch.Tensor):
        if result.dim() != 0:
            raise TypeError(
                f"the model returned a tensor of shape {tuple(result.shape)} and no loss_fn was "
                "given: return a scalar loss (or a dict with 'loss'), or pass loss_fn="
            )
        return {"loss": result, "targets": targets}
    if isinstance(result, Mapping):
        outputs = dict(result)
    elif hasattr(result, "loss"):
        outputs = {"loss": result.loss, "preds": getattr(result, "logits", None)}
    else:
        raise TypeError(
            f"the model returned {type(result).__name__}; without loss_fn it must return a scalar "
            "loss tensor, a dict with 'loss', or an object with a .loss attribute"
        )
    outputs.setdefault("targets", targets)
    if "preds" not in outputs and "logits" in outputs:
        outputs["preds"] = outputs["logits"]
    return outputs


def _batch_size(outputs: Mapping[str, Any]) -> int:
    for key in ("targets", "preds"):
        value = outputs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


class MetricMeter:
    """Averages the loss and each metric over an evaluation loop, weighted by batch size.

    A metric is a callable ``m(preds, targets) -> number`` (per batch) or a torchmetrics-style
    object with ``update(preds, targets)``, ``compute()`` and ``reset()``.
    """

    def __init__(self, metrics: Mapping[str, Any]) -> None:
        self.metrics = dict(metrics)
        self.stateful = {
            n: m for n, m in self.metrics.items() if hasattr(m, "update") and hasattr(m, "compute")
        }
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0
        for name, metric in self.metrics.items():
            if name not in self.stateful and not callable(metric):
                raise ConfigError(
                    "a metric must be a callable m(preds, targets) or have update/compute/reset",
                    f"metrics.{name}",
                )

    def reset(self) -> None:
        """Start a new loop."""
        self.sums, self.count = {}, 0
        for metric in self.stateful.values():
            if hasattr(metric, "reset"):
                metric.reset()

    def update(self, outputs: Mapping[str, Any]) -> None:
        """Add one batch's outputs (``'loss'``, ``'preds'``, ``'targets'``)."""
        n = _batch_size(outputs)
        self.count += n
        values: dict[str, Any] = {}
        if outputs.get("loss") is not None:
            values["loss"] = outputs["loss"].detach()
        preds, targets = outputs.get("preds"), outputs.get("targets")
        for name, metric in self.metrics.items():
            if name in self.stateful:
                metric.update(preds, targets)
            else:
                value = metric(preds, targets)
                values[name] = value.detach() if isinstance(value, torch.Tensor) else float(value)
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value * n

    def compute(self) -> tuple[dict[str, float], int]:
        """The per-sample means of this loop and the number of samples they cover."""
        means = {name: float(total) / max(self.count, 1) for name, total in self.sums.items()}
        for name, metric in self.stateful.items():
            means[name] = float(metric.compute())
        return means, self.count

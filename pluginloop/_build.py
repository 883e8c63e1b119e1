"""Building the Runner's parts from configs: optimizer, schedulers and the hook list.

Everything here runs in the Runner constructor, so every mistake surfaces before any data
is read, as a ConfigError naming the key path and the fix.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pluginloop.errors import ConfigError
from pluginloop.registry import Registry, build_from_config, check_arguments

__all__ = [
    "SCHEDULERS",
    "ParamScheduler",
    "build_optimizer",
    "build_schedulers",
    "check_dist_options",
    "hook_configs",
]

#: Scheduler classes by name: every ``torch.optim.lr_scheduler`` class, plus registered ones.
SCHEDULERS = Registry("SCHEDULERS")


def _torch_classes(module: Any, base: type) -> dict[str, type]:
    return {
        name: obj for name in dir(module)
        if isinstance(obj := getattr(module, name), type) and issubclass(obj, base) and obj is not base
    }


_OPTIMIZERS = _torch_classes(torch.optim, torch.optim.Optimizer)
_LR_SCHEDULERS = {
    **_torch_classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler),
    "ReduceLROnPlateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
}
SCHEDULERS.fallbacks.append(_LR_SCHEDULERS.get)
SCHEDULERS.extra_names.append(_LR_SCHEDULERS.keys)


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer | None:
    """An optimizer as given, or built from ``dict(type='SGD', lr=...)`` over trainable parameters."""
    if cfg is None or isinstance(cfg, torch.optim.Optimizer):
        return cfg
    if not isinstance(cfg, Mapping):
        raise ConfigError(
            f"expected a torch.optim.Optimizer or a dict(type=..., lr=...), got {type(cfg).__name__}",
            "optimizer",
        )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = build_from_config(
        cfg, _OPTIMIZERS.get, _OPTIMIZERS.keys, "optimizer", "optimizer", params=params
    )
    return optimizer


@dataclasses.dataclass
class ParamScheduler:
    """A scheduler and when ParamSchedulerHook steps it.

    ``by_epoch``: after each train epoch (True) or iteration (False). ``begin`` / ``end``
    (epochs or iterations): the entry takes over at ``begin`` (restarted at its own step 0
    when ``begin > 0``) and advances after steps ``begin .. end-1``; ``end=None`` is the whole
    run. ``monitor``: the validation metric a ReduceLROnPlateau steps with.
    """

    scheduler: Any
    by_epoch: bool = True
    begin: int = 0
    end: int | None = None
    monitor: str = "loss"


def build_schedulers(cfg: Any, optimizer: torch.optim.Optimizer | None) -> list[ParamScheduler]:
    """Schedulers from a dict, a list of dicts, scheduler objects or ParamScheduler entries.

    A config is ``dict(type=<torch.optim.lr_scheduler name or a SCHEDULERS name>, by_epoch=True,
    begin=0, end=None, monitor='loss', **scheduler_kwargs)``.
    """
    if cfg is None:
        return []
    items = cfg if isinstance(cfg, (list, tuple)) else [cfg]
    out = []
    for i, item in enumerate(items):
        key = f"scheduler[{i}]" if isinstance(cfg, (list, tuple)) else "scheduler"
        if isinstance(item, ParamScheduler):
            _check_entry(item, key)
            out.append(item)
        elif isinstance(item, Mapping):
            if optimizer is None:
                raise ConfigError("a scheduler config needs an optimizer: pass optimizer=", key)
            kwargs = dict(item)
            fields = [f.name for f in dataclasses.fields(ParamScheduler)]
            entry = {name: kwargs.pop(name) for name in fields if name in kwargs}
            _check_entry(ParamScheduler(None, **entry), key)
            lrs = [_copy(group["lr"]) for group in optimizer.param_groups]
            scheduler = build_from_config(
                kwargs, SCHEDULERS.get, SCHEDULERS.names, key, "scheduler", optimizer=optimizer
            )
            if entry.get("begin", 0) > 0:
                # torch schedulers take their first step in the constructor; one that starts
                # later must not move the lr now (SequentialLR undoes that step the same way).
                for group, lr in zip(optimizer.param_groups, lrs):
                    if isinstance(group["lr"], torch.Tensor):  # a tensor lr is updated in place
                        group["lr"].copy_(lr)
                    else:
                        group["lr"] = lr
            if "monitor" in entry and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ConfigError(
                    f"monitor= is only used by ReduceLROnPlateau, not {type(scheduler).__name__}: remove it",
                    f"{key}.monitor",
                )
            out.append(ParamScheduler(scheduler, **entry))
        elif hasattr(item, "step") and hasattr(item, "state_dict"):
            out.append(ParamScheduler(item))
        else:
            raise ConfigError(f"expected a scheduler config dict or object, got {type(item).__name__}", key)
    return out


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _check_entry(entry: ParamScheduler, key: str) -> None:
    """Fail on ill-typed or impossible when-to-step settings of one scheduler entry."""
    if not isinstance(entry.by_epoch, bool):
        raise ConfigError(f"by_epoch must be True or False, got {entry.by_epoch!r}", f"{key}.by_epoch")
    for name in ("begin", "end"):
        value = getattr(entry, name)
        if value is None and name == "end":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            unit = "epochs" if entry.by_epoch else "iterations"
            raise ConfigError(f"{name} must be a non-negative int ({unit}), got {value!r}", f"{key}.{name}")
    if entry.end is not None and entry.end <= entry.begin:
        raise ConfigError(f"end ({entry.end}) must be greater than begin ({entry.begin})", f"{key}.end")
    if not isinstance(entry.monitor, str):
        raise ConfigError(f"monitor must be a metric name, got {entry.monitor!r}", f"{key}.monitor")


def hook_configs(
    defaults: Mapping[str, Any], default_hooks: Mapping[str, Any] | None, custom_hooks: Any
) -> list[tuple[str, Any]]:
    """``(key path, config or hook)`` in registration order: merged defaults, then custom hooks.

    ``default_hooks`` is merged over ``defaults``; a ``None`` value removes that default.
    ``custom_hooks`` is a list, or a single dict / hook.
    """
    merged = dict(defaults)
    if default_hooks is not None:
        if not isinstance(default_hooks, Mapping):
            raise ConfigError(
                f"expected a dict of name -> hook config, got {type(default_hooks).__name__}",
                "default_hooks",
            )
        merged.update(default_hooks)
    out = [(f"default_hooks.{k}", v) for k, v in merged.items() if v is not None]
    if custom_hooks is None:
        customs: Sequence[Any] = []
    elif isinstance(custom_hooks, (list, tuple)):
        customs = custom_hooks
    else:
        customs = [custom_hooks]  # the design document's dict(dict(...)) is one dict
    out += [(f"custom_hooks[{i}]", c) for i, c in enumerate(customs)]
    return out


def check_dist_options(
    ddp_kwargs: Mapping[str, Any] | None, timeout: float | datetime.timedelta | None
) -> datetime.timedelta | None:
    """Check ``ddp_kwargs`` and ``dist_timeout`` before any process group exists; return the timeout."""
    if ddp_kwargs is not None:
        if not isinstance(ddp_kwargs, Mapping):
            raise ConfigError(f"expected a dict of DistributedDataParallel arguments, got {ddp_kwargs!r}",
                              "ddp_kwargs")
        # module and process_group are the runner's to give.
        check_arguments(DistributedDataParallel, ddp_kwargs, "ddp_kwargs", given=("module", "process_group"))
    if timeout is None or isinstance(timeout, datetime.timedelta):
        seconds = None if timeout is None else timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise ConfigError(f"expected seconds (a number) or a datetime.timedelta, got {timeout!r}",
                          "dist_timeout")
    if seconds is not None and not seconds > 0:
        raise ConfigError(f"must be positive: the longest wait for the other ranks, got {timeout!r}",
                          "dist_timeout")
    return None if seconds is None else datetime.timedelta(seconds=seconds)

"""What a checkpoint holds, and putting it back: model, optimizer, schedulers, counters, hooks."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from pluginloop.dist import unwrap_model

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["collect", "restore", "restore_weights"]


def collect(runner: Runner, save_optimizer: bool = True) -> dict[str, Any]:
    """The complete checkpoint dict of ``runner`` at the current loop position."""
    epoch, iteration, inner = runner._completed()
    state: dict[str, Any] = {
        "meta": {
            "epoch": epoch,
            "iter": iteration,
            "inner_iter": inner,
            "seed": runner.seed,
            "world_size": runner.world_size,
            "torch_version": torch.__version__,
        },
        "state_dict": unwrap_model(runner.model).state_dict(),
        "message_hub": runner.message_hub.state_dict(),
        "hooks": {
            name: hook.state_dict()
            for name, hook in runner._pm.list_name_plugin()
            if callable(getattr(hook, "state_dict", None))
        },
    }
    if save_optimizer and runner.optimizer is not None:
        state["optimizer"] = runner.optimizer.state_dict()
        state["param_schedulers"] = [s.scheduler.state_dict() for s in runner.param_schedulers]
    return state


def restore_weights(runner: Runner, checkpoint: dict[str, Any], strict: bool = True) -> None:
    """Load the model weights of ``checkpoint`` (``load_from``)."""
    unwrap_model(runner.model).load_state_dict(checkpoint["state_dict"], strict=strict)


def restore(runner: Runner, checkpoint: dict[str, Any]) -> None:
    """Put back everything ``collect`` saved (``resume``), hooks' states included."""
    restore_weights(runner, checkpoint)
    if runner.optimizer is not None:
        if "optimizer" not in checkpoint:
            raise KeyError("the checkpoint has no optimizer state (saved with save_optimizer=False): "
                           "use load_from= to load its weights only")
        runner.optimizer.load_state_dict(checkpoint["optimizer"])
        for entry, sd in zip(runner.param_schedulers, checkpoint.get("param_schedulers", []), strict=False):
            entry.scheduler.load_state_dict(sd)
    meta = checkpoint["meta"]
    runner.epoch, runner.iter = meta["epoch"], meta["iter"]
    runner._resume_inner = meta.get("inner_iter", 0)
    runner.message_hub.load_state_dict(checkpoint.get("message_hub", {"latest": {}, "sums": {}, "counts": {}}))
    saved = dict(checkpoint.get("hooks", {}))
    for name, hook in runner._pm.list_name_plugin():
        if not callable(getattr(hook, "load_state_dict", None)):
            continue
        if name in saved:
            hook.load_state_dict(saved.pop(name))
        else:
            warnings.warn(f"resume: the checkpoint has no state for hook {name!r}; it starts fresh",
                          stacklevel=2)
    for name in saved:
        warnings.warn(f"resume: the checkpoint holds state of hook {name!r}, which is not registered; "
                      "it is ignored", stacklevel=2)

"""DistSamplerSeedHook: a new shuffle every epoch for samplers that draw it from ``set_epoch``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["DistSamplerSeedHook"]


@HOOKS.register_module()
class DistSamplerSeedHook(Hook):
    """Call ``set_epoch(runner.epoch)`` on the train sampler before each epoch (NORMAL).

    A ``DistributedSampler`` seeds its shuffle with the epoch; without this call every
    epoch repeats the first one's order. The sampler is the loader's ``sampler`` or, when
    the loader was given a ``batch_sampler``, that batch sampler's ``sampler``. A no-op
    when neither has ``set_epoch``. After a resume ``runner.epoch`` is the resumed epoch,
    so the order continues where it left off.
    """

    priority = Priority.NORMAL

    def before_train_epoch(self, runner: Runner) -> None:
        """Give the sampler this epoch's number."""
        loader = runner.train_dataloader
        batch_sampler = getattr(loader, "batch_sampler", None)
        # With batch_sampler= given, loader.sampler is an unused SequentialSampler: no set_epoch.
        for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(runner.epoch)
                return

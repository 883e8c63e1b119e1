"""Built-in hooks, one module each, and the ``Hook`` base class."""

from __future__ import annotations

from typing import Any

from pluginloop.hooks.accumulation import GradientCumulativeOptimizerHook
from pluginloop.hooks.base import Hook
from pluginloop.hooks.checkpoint import CheckpointHook
from pluginloop.hooks.empty_cache import EmptyCacheHook
from pluginloop.hooks.fp16 import Fp16OptimizerHook
from pluginloop.hooks.logger import LoggerHook, TextLoggerHook
from pluginloop.hooks.optimizer import OptimizerHook
from pluginloop.hooks.param_scheduler import ParamSchedulerHook
from pluginloop.hooks.sampler_seed import DistSamplerSeedHook
from pluginloop.hooks.sync_buffers import SyncBuffersHook
from pluginloop.hooks.timer import IterTimerHook

__all__ = [
    "DEFAULT_HOOKS",
    "CheckpointHook",
    "DistSamplerSeedHook",
    "EmptyCacheHook",
    "Fp16OptimizerHook",
    "GradientCumulativeOptimizerHook",
    "Hook",
    "IterTimerHook",
    "LoggerHook",
    "OptimizerHook",
    "ParamSchedulerHook",
    "SyncBuffersHook",
    "TextLoggerHook",
]

#: The default hooks, in registration order; ``Runner(default_hooks=...)`` is merged over it.
DEFAULT_HOOKS: dict[str, dict[str, Any]] = {
    "optimizer": dict(type="OptimizerHook"),
    "sampler_seed": dict(type="DistSamplerSeedHook"),
    "sync_buffers": dict(type="SyncBuffersHook"),
    "empty_cache": dict(type="EmptyCacheHook"),
    "timer": dict(type="IterTimerHook"),
    "logger": dict(type="LoggerHook"),
    "param_scheduler": dict(type="ParamSchedulerHook"),
    "checkpoint": dict(type="CheckpointHook", interval=1),
}

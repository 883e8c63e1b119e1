"""pluginloop: a PyTorch training loop in which every customization is a plugin."""

from __future__ import annotations

from pluginloop import errors
from pluginloop._build import SCHEDULERS
from pluginloop._manager import hookimpl
from pluginloop.errors import ConfigError, HookCallError, PluginLoopError, PluginValidationError
from pluginloop.hooks import Hook
from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.priority import Priority, get_priority
from pluginloop.registry import HOOKS, Registry
from pluginloop.runner import Runner, train

__version__ = "0.1.0"

__all__ = [
    "HOOKS",
    "HOOK_POINTS",
    "SCHEDULERS",
    "ConfigError",
    "Hook",
    "HookCallError",
    "PluginLoopError",
    "PluginValidationError",
    "Priority",
    "Registry",
    "Runner",
    "errors",
    "get_priority",
    "hookimpl",
    "train",
]

"""Built-in hooks, one module each, and the ``Hook`` base class."""

from __future__ import annotations

from typing import Any

from pluginloop.hooks.base import Hook
from pluginloop.hooks.optimizer import OptimizerHook

__all__ = ["DEFAULT_HOOKS", "Hook", "OptimizerHook"]

#: The default hooks, in registration order; ``Runner(default_hooks=...)`` is merged over it.
DEFAULT_HOOKS: dict[str, dict[str, Any]] = {
    "optimizer": dict(type="OptimizerHook"),
}

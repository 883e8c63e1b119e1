"""Every error pluginloop raises on purpose, in one place.

Each message names the place (config key, plugin, hook point, file) and the fix.
"""

from __future__ import annotations


class PluginLoopError(Exception):
    """Base class of all pluginloop errors."""


class ConfigError(PluginLoopError, ValueError):
    """A configuration mistake found at construction: unknown type, bad argument, bad value.

    ``key`` is the path of the offending entry, e.g. ``default_hooks.checkpoint``.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class PluginValidationError(PluginLoopError):
    """A plugin that cannot be registered (misspelled hook method, wrong arguments, bad priority).

    Nothing of the plugin is registered when this is raised.
    """

    def __init__(self, plugin: object, message: str) -> None:
        self.plugin = plugin
        super().__init__(message)


class HookCallError(PluginLoopError):
    """An exception raised inside a hook, re-raised with the plugin, hook point and loop position.

    The original exception is ``__cause__`` and keeps its traceback.
    """

    def __init__(
        self, plugin_name: str, hook_name: str, epoch: int, iter: int, cause: BaseException
    ) -> None:
        self.plugin_name = plugin_name
        self.hook_name = hook_name
        self.epoch = epoch
        self.iter = iter
        super().__init__(
            f"plugin {plugin_name!r} failed in hook point {hook_name!r} "
            f"at epoch {epoch}, iteration {iter}: {type(cause).__name__}: {cause}"
        )


class CheckpointError(PluginLoopError):
    """A checkpoint that cannot be written or must not be loaded (torn, truncated, altered, no space)."""

    def __init__(self, message: str, path: object = None) -> None:
        self.path = path
        super().__init__(message)


class PluginLoadError(PluginLoopError):
    """An installed entry-point plugin that failed to import or register."""


class DistributedError(PluginLoopError):
    """A distributed run that cannot go on (mismatched world size, a rank that failed)."""

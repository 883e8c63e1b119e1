"""Installed plugins: entry points of group ``pluginloop``, loaded into every Runner.

``pip install pluginloop-visualizer`` adds a hook to every Runner with no code change, as
pytest does with its ``pytest11`` group. pluggy's ``load_setuptools_entrypoints`` is not
used: it stops at the first plugin that fails to import, keeps the ones before it, skips
a duplicate name silently and registers a class object instead of an instance.

Here the entry points are scanned once per process (a Runner is built in milliseconds),
deduplicated and sorted by name, so that ties between equal priorities are the same on
every machine. Each plugin is loaded on its own and fails with a ``PluginLoadError`` that
names its distribution, version and entry point, the cause, and how to run without it.

Controls, strongest first: ``Runner(autoload_plugins=False)`` (none at all);
``Runner(disable_plugins=[...])`` / ``pluginloop train -p no:NAME``; the environment
variables ``PLUGINLOOP_PLUGINS=a,b`` (only these, even when autoload is off by the next
one) and ``PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD=1``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import json
import os
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import importlib_metadata

from pluginloop._manager import PluginManager
from pluginloop.errors import ConfigError, PluginLoadError
from pluginloop.hooks.base import Hook
from pluginloop.hookspecs import HOOK_POINTS, PROJECT_NAME
from pluginloop.priority import Priority, get_priority, priority_name
from pluginloop.registry import HOOKS

__all__ = [
    "ENV_DISABLE_AUTOLOAD",
    "ENV_PLUGINS",
    "GROUP",
    "PluginInfo",
    "clear_cache",
    "format_plugins",
    "list_plugins",
    "load_plugins",
]

#: The entry-point group plugin packages declare (``[project.entry-points.pluginloop]``).
GROUP = "pluginloop"
#: Set to 1 to load no installed plugin (except those named in ``PLUGINLOOP_PLUGINS``).
ENV_DISABLE_AUTOLOAD = "PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD"
#: ``name,name``: load only these installed plugins.
ENV_PLUGINS = "PLUGINLOOP_PLUGINS"

_IMPL_ATTR = f"{PROJECT_NAME}_impl"  # what pluggy's HookimplMarker sets on a marked function
_FALSE = ("", "0", "false", "no", "off")

Status = Literal["loaded", "replaced", "available", "disabled", "failed"]


@dataclasses.dataclass(frozen=True)
class _Found:
    """One entry point of the group, with the distribution that declares it."""

    name: str
    value: str
    distribution: str
    version: str
    entry_point: importlib_metadata.EntryPoint

    @property
    def origin(self) -> str:
        return f"distribution {self.distribution} {self.version}, entry point '{self.name} = {self.value}'"

    @property
    def class_name(self) -> str:
        """The last name of the object the entry point names (``VisualizerHook``)."""
        return self.value.rpartition(":")[2].rpartition(".")[2].strip()


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """What ``pluginloop plugins`` shows for one installed plugin.

    ``status``: ``loaded``; ``replaced`` (a custom hook configures it); ``available``
    (it needs arguments, so it is used only when configured in ``custom_hooks``);
    ``disabled`` (``reason`` says by what); ``failed`` (``reason`` says why).
    """

    name: str
    distribution: str
    version: str
    value: str
    status: Status
    reason: str = ""
    object: str = ""
    priority: str = ""
    hook_points: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        out = dataclasses.asdict(self)
        out["hook_points"] = list(self.hook_points)
        return out


# -- discovery (once per process) ---------------------------------------------------------


@functools.cache
def _scan() -> tuple[_Found, ...]:
    """Every entry point of the group, deduplicated, sorted by (name, distribution)."""
    found: dict[tuple[str, str, str], _Found] = {}
    for ep in importlib_metadata.entry_points(group=GROUP):
        dist = ep.dist
        dist_name = dist.name if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        # The same distribution reachable through two sys.path entries is one plugin.
        key = (ep.name, ep.value, _normalize(dist_name))
        found.setdefault(key, _Found(ep.name, ep.value, dist_name, version, ep))
    return tuple(sorted(found.values(), key=lambda f: (f.name, _normalize(f.distribution))))


def clear_cache() -> None:
    """Forget the scan; call it after installing or removing a plugin in this process."""
    _scan.cache_clear()
    importlib.invalidate_caches()


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _by_name() -> dict[str, list[_Found]]:
    out: dict[str, list[_Found]] = {}
    for found in _scan():
        out.setdefault(found.name, []).append(found)
    return out


# -- choosing what to load ----------------------------------------------------------------


def _disable_hint(name: str) -> str:
    return (
        f"To run without it: Runner(disable_plugins=[{name!r}]), `pluginloop train -p no:{name}`, "
        f"or {ENV_DISABLE_AUTOLOAD}=1 to load no installed plugin."
    )


def _check_names(names: Iterable[str], installed: dict[str, list[_Found]], key: str) -> None:
    for name in names:
        if name not in installed:
            close = difflib.get_close_matches(name, list(installed), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"no installed plugin is named {name!r}; {hint}installed: {', '.join(installed) or 'none'} "
                "(`pluginloop plugins` lists them; a default hook is removed with "
                "default_hooks={'<key>': None})",
                key,
            )


def _env_plugins() -> list[str] | None:
    raw = os.environ.get(ENV_PLUGINS)
    if raw is None:
        return None
    return [n.strip() for n in raw.split(",") if n.strip()]


def _reasons(
    installed: dict[str, list[_Found]], autoload: bool, disable: Sequence[str]
) -> dict[str, str | None]:
    """Plugin name -> why it is not loaded (``None``: load it)."""
    if isinstance(disable, str) or not all(isinstance(n, str) for n in disable):
        raise ConfigError(f"expected a list of plugin names, got {disable!r}", "disable_plugins")
    _check_names(disable, installed, "disable_plugins")
    only = _env_plugins()
    if only is not None:
        _check_names(only, installed, ENV_PLUGINS)
    env_off = os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() not in _FALSE
    reasons: dict[str, str | None] = {}
    for name in installed:
        if name in disable:
            reasons[name] = f"by disable_plugins / -p no:{name}"
        elif not autoload:
            reasons[name] = "by autoload_plugins=False"
        elif only is not None:
            reasons[name] = None if name in only else f"by {ENV_PLUGINS} (not listed)"
        elif env_off:
            reasons[name] = f"by {ENV_DISABLE_AUTOLOAD}=1"
        else:
            reasons[name] = None
    return reasons


# -- loading one plugin -------------------------------------------------------------------


def _fail(found: _Found, what: str, cause: BaseException | str) -> PluginLoadError:
    detail = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause
    return PluginLoadError(
        f"installed plugin {found.name!r} ({found.origin}) {what}: {detail}\n{_disable_hint(found.name)}"
    )


def _unique(entries: list[_Found]) -> _Found:
    """The one entry point of a name; two distributions declaring it is an error."""
    if len(entries) > 1:
        first, second = entries[0], entries[1]
        raise PluginLoadError(
            f"two installed distributions provide the pluginloop plugin {first.name!r}: "
            f"{first.distribution} {first.version} ('{first.name} = {first.value}') and "
            f"{second.distribution} {second.version} ('{second.name} = {second.value}'). "
            f"Uninstall one (`pip uninstall {second.distribution}`).\n{_disable_hint(first.name)}"
        )
    return entries[0]


def _load(found: _Found) -> Any:
    try:
        return found.entry_point.load()
    except Exception as exc:  # anything a plugin's import raises is that plugin's fault
        raise _fail(found, "failed to import", exc) from exc


def _has_hookimpls(obj: Any) -> bool:
    return any(hasattr(getattr(obj, attr, None), _IMPL_ATTR) for attr in dir(obj) if not attr.startswith("_"))


def _plugin_class(obj: Any) -> type | None:
    """The class a config of this plugin builds, if it is class-like."""
    if isinstance(obj, type):
        return obj
    if isinstance(obj, Hook):
        return type(obj)
    return None


def _instantiate(found: _Found, obj: Any) -> Any:
    """The object to register: a class is instantiated with no arguments."""
    if isinstance(obj, type):
        if not (issubclass(obj, Hook) or _has_hookimpls(obj)):
            raise _fail(found, "cannot be registered", f"class {obj.__qualname__} is not a Hook subclass")
        try:
            return obj()
        except Exception as exc:
            raise _fail(found, "could not be instantiated with no arguments", exc) from exc
    if isinstance(obj, (Hook, types.ModuleType)) or _has_hookimpls(obj):
        return obj
    raise _fail(
        found,
        "cannot be registered",
        f"it names {type(obj).__name__} {obj!r}, not a Hook subclass, a Hook instance or a "
        "module/object with @pluginloop.hookimpl functions",
    )


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    cls = obj if isinstance(obj, type) else type(obj)
    suffix = "" if isinstance(obj, type) else " instance"
    return f"{cls.__module__}:{cls.__qualname__}{suffix}"


def _register(pm: PluginManager, found: _Found, plugin: Any) -> tuple[str, tuple[str, ...]]:
    """Register atomically under the entry-point name; (priority name, hook points)."""
    try:
        pm.register(plugin, found.name)
    except Exception as exc:
        # pluggy's register() is not atomic; the manager validates first, but be sure.
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise _fail(found, "failed to register", exc) from exc
    points = {caller.name for caller in pm.get_hookcallers(plugin) or ()}
    priority = priority_name(get_priority(getattr(plugin, "priority", Priority.NORMAL)))
    return priority, tuple(p for p in HOOK_POINTS if p in points)


def _info(
    found: _Found,
    status: Status,
    reason: str = "",
    obj: Any = None,
    priority: str = "",
    hook_points: tuple[str, ...] = (),
) -> PluginInfo:
    return PluginInfo(
        found.name,
        found.distribution,
        found.version,
        found.value,
        status,
        reason,
        "" if obj is None else _describe(obj),
        priority,
        hook_points,
    )


def _load_one(pm: PluginManager, found: _Found, customs: Sequence[Any]) -> PluginInfo:
    """Load, instantiate and register one enabled plugin; raises PluginLoadError."""
    obj = _load(found)
    cls = _plugin_class(obj)
    for custom in customs:
        configured = custom is obj or (
            cls is not None
            and (
                custom is cls
                or (isinstance(custom, type) and issubclass(custom, cls))
                or isinstance(custom, cls)
            )
        )
        if configured:
            return _info(found, "replaced", "by custom_hooks (the configured instance runs)", obj)
    if cls is not None and getattr(cls, "autoload", True) is False:
        hint = f"needs arguments: add dict(type={found.name!r}, ...) to custom_hooks"
        return _info(found, "available", hint, obj)
    plugin = _instantiate(found, obj)
    priority, points = _register(pm, found, plugin)
    return _info(found, "loaded", "", obj, priority, points)


# -- public API ---------------------------------------------------------------------------


def load_plugins(
    pm: PluginManager,
    autoload: bool = True,
    disable: Sequence[str] = (),
    customs: Sequence[Any] = (),
) -> list[PluginInfo]:
    """Register the installed plugins that are enabled into ``pm``, sorted by name.

    ``customs`` are the Runner's built custom hooks: a plugin one of them configures is
    not loaded again. Raises ``ConfigError`` for an unknown name in ``disable`` or
    ``PLUGINLOOP_PLUGINS`` and ``PluginLoadError`` for a plugin that cannot be loaded.
    """
    if not isinstance(autoload, bool):
        raise ConfigError(f"must be True or False, got {autoload!r}", "autoload_plugins")
    env_off = os.environ.get(ENV_DISABLE_AUTOLOAD, "").strip().lower() not in _FALSE
    if not disable and (not autoload or (env_off and _env_plugins() is None)):
        return []  # nothing can load: skip the scan, so that autoload off costs nothing
    return _each_plugin(autoload, disable, lambda entries: _load_one(pm, _unique(entries), customs))


def list_plugins(disable: Sequence[str] = (), autoload: bool = True) -> list[PluginInfo]:
    """Every installed plugin with its status, as a Runner with these controls would see it.

    Plugins are loaded into a scratch manager to find their hook points; a failure is
    reported in its ``PluginInfo`` (status ``failed``), not raised.
    """

    def load_or_report(entries: list[_Found]) -> PluginInfo:
        try:
            return _load_one(PluginManager(), _unique(entries), ())
        except PluginLoadError as exc:
            return _info(entries[0], "failed", str(exc).partition("\n")[0])

    return _each_plugin(autoload, disable, load_or_report)


def _each_plugin(
    autoload: bool, disable: Sequence[str], load: Callable[[list[_Found]], PluginInfo]
) -> list[PluginInfo]:
    """Each installed plugin (sorted by name): disabled ones reported, the others ``load``-ed
    (``load`` gets every entry point of the name: two distributions declaring it is its error)."""
    installed = _by_name()
    reasons = _reasons(installed, autoload, disable)
    return [
        _info(entries[0], "disabled", reason) if (reason := reasons[name]) is not None
        else load(entries)
        for name, entries in installed.items()
    ]


def format_plugins(infos: Sequence[PluginInfo], as_json: bool = False) -> str:
    """The ``pluginloop plugins`` listing: a JSON array, or lines for people."""
    if as_json:
        return json.dumps([info.to_dict() for info in infos], indent=2)
    if not infos:
        return f"no pluginloop plugins installed (entry-point group {GROUP!r})"
    lines = []
    for info in infos:
        sep = " " if info.reason.startswith("by ") else ": "  # "disabled by X", "failed: why"
        status = f"{info.status}{sep}{info.reason}" if info.reason else info.status
        lines.append(f"{info.name}  ({info.distribution} {info.version})  {status}")
        lines.append(
            f"    object: {info.object or info.value}"
            + (f"  priority: {info.priority}" if info.priority else "")
        )
        if info.status == "loaded":
            points = ", ".join(info.hook_points) or "none here (the hook turned itself off in this process)"
            lines.append(f"    hook points: {points}")
    return "\n".join(lines)


# -- custom_hooks=[dict(type='visualizer' or 'VisualizerHook', ...)] ------------------------


def _hook_type(name: str) -> type | None:
    """HOOKS fallback: the class of an installed plugin, by entry-point or class name."""
    installed = _by_name()
    if name in installed:
        found = _unique(installed[name])
    else:
        matches = [f for f in _scan() if f.class_name == name]
        if not matches:
            return None
        if len({f.name for f in matches}) > 1:
            raise ConfigError(
                f"{name!r} is the class of several installed plugins ("
                + ", ".join(f"{f.name!r} from {f.distribution}" for f in matches)
                + "): give the entry-point name as the type instead"
            )
        found = _unique(installed[matches[0].name])
    obj = _load(found)
    cls = _plugin_class(obj)
    if cls is None:
        raise ConfigError(
            f"installed plugin {found.name!r} ({found.origin}) is a module or object of @hookimpl "
            "functions: it takes no arguments and is loaded automatically, not configured in custom_hooks"
        )
    return cls


def _hook_names() -> list[str]:
    return sorted({f.name for f in _scan()} | {f.class_name for f in _scan()})


HOOKS.fallbacks.append(_hook_type)
HOOKS.extra_names.append(_hook_names)

"""``HOOKS`` and building objects from config dicts, with errors that name the place and the fix."""

from __future__ import annotations

import difflib
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pluginloop.errors import ConfigError
from pluginloop.priority import get_priority

__all__ = ["HOOKS", "Registry", "build_from_config", "check_arguments"]

T = TypeVar("T", bound=type)


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {' or '.join(repr(c) for c in close)}?"


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a simple annotation; anything we cannot judge passes."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (bool, str):
        return isinstance(value, hint)
    return True


def _hint_name(hint: Any) -> str:
    """``int`` rather than ``<class 'int'>``; unions and generics as written."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def check_arguments(
    target: Callable[..., Any], kwargs: Mapping[str, Any], key: str, given: Iterable[str] = ()
) -> None:
    """Fail with a ConfigError if ``target(**kwargs)`` would not bind or has ill-typed values."""
    name = getattr(target, "__name__", repr(target))
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check
        return
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    hidden = {"self", *given}  # arguments the builder passes itself (params, optimizer)
    valid = [p for p, v in params.items() if p not in hidden and v.kind is not v.VAR_KEYWORD]
    for arg in kwargs:
        if arg not in params and not takes_any:
            raise ConfigError(
                f"{name} got an unexpected argument {arg!r}{_suggest(arg, valid)} "
                f"(valid arguments: {', '.join(valid) or 'none'})",
                key,
            )
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable annotations: skip the type check, binding was checked
        hints = {}
    for arg, value in kwargs.items():
        if arg in hints and not _matches(value, hints[arg]):
            raise ConfigError(
                f"{name} argument {arg!r} must be {_hint_name(hints[arg])}, "
                f"got {type(value).__name__} {value!r}",
                f"{key}.{arg}" if key else arg,
            )


def build_from_config(
    cfg: Mapping[str, Any],
    lookup: Callable[[str], Any],
    known: Callable[[], Iterable[str]],
    key: str,
    what: str,
    **extra: Any,
) -> Any:
    """Build ``cfg['type'](**extra, **rest)`` where a string type is resolved by ``lookup``.

    ``known()`` lists the names to suggest from; it is called only for an unknown type (listing
    a registry's names can scan installed entry points).
    """
    if "type" not in cfg:
        raise ConfigError(f"a {what} config needs a 'type' key (got keys: {', '.join(cfg) or 'none'})", key)
    kwargs = dict(cfg)
    type_ = kwargs.pop("type")
    if isinstance(type_, str):
        target = lookup(type_)
        if target is None:
            raise ConfigError(f"unknown {what} type {type_!r}{_suggest(type_, known())}", f"{key}.type")
    elif callable(type_):
        target = type_
    else:
        raise ConfigError(f"'type' must be a name or a class, not {type(type_).__name__}", f"{key}.type")
    check_arguments(target, kwargs, key, given=extra)
    try:
        return target(**extra, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{getattr(target, '__name__', target)}: {exc}", key) from exc


class Registry:
    """A name -> class table, e.g. ``HOOKS``; ``build`` makes an object from a config dict."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._classes: dict[str, type] = {}
        #: Called for names not registered (entry-point plugins add themselves through it).
        self.fallbacks: list[Callable[[str], type | None]] = []
        #: Extra names offered as suggestions in unknown-type errors.
        self.extra_names: list[Callable[[], Iterable[str]]] = []

    def register_module(
        self, name: str | None = None, force: bool = False, module: type | None = None
    ) -> Any:
        """Register a class under ``name`` (default: its ``__name__``); usable as a decorator.

        A taken name is refused unless ``force=True``.
        """

        def register(cls: T) -> T:
            key = name or cls.__name__
            if not force and key in self._classes and self._classes[key] is not cls:
                raise KeyError(
                    f"{key!r} is already registered in {self.name} by {self._classes[key]!r}; "
                    "pass force=True to replace it or choose another name"
                )
            self._classes[key] = cls
            return cls

        return register(module) if module is not None else register

    def get(self, name: str) -> type | None:
        """The class registered as ``name``, else one a fallback provides, else None."""
        cls = self._classes.get(name)
        for fallback in self.fallbacks:
            if cls is not None:
                break
            cls = fallback(name)
        return cls

    def names(self) -> list[str]:
        """Registered names and the names fallbacks offer, sorted."""
        extra = {n for provide in self.extra_names for n in provide()}
        return sorted(set(self._classes) | extra)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def build(self, cfg: Mapping[str, Any] | Any, key: str = "") -> Any:
        """Build an object from ``dict(type=..., **kwargs)``; a non-dict is returned as is.

        ``priority`` is accepted in every config and set on the built object.
        """
        if not isinstance(cfg, Mapping):
            return cfg
        cfg = dict(cfg)
        priority = cfg.pop("priority", None)
        if priority is not None:
            try:
                priority = get_priority(priority)
            except (TypeError, ValueError) as exc:
                raise ConfigError(str(exc), f"{key}.priority" if key else "priority") from None
        obj = build_from_config(cfg, self.get, self.names, key, self.name.lower().rstrip("s"))
        if priority is not None:
            obj.priority = priority
        return obj


#: The registry of hook classes: ``@HOOKS.register_module()`` and ``HOOKS.build(cfg)``.
HOOKS = Registry("HOOKS")

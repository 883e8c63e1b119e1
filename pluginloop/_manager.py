"""pluggy's PluginManager, made to call implementations in pluginloop's exact order.

pluggy alone knows three bands (tryfirst / normal / trylast) and calls equal impls
last-registered first. pluginloop promises nine levels and first-registered-first ties, so
each impl carries ``priority`` and ``seq`` in its opts and, after every (un)registration,
each hook caller's impl list is re-sorted by them. ``pm.hook.<point>(...)`` then runs in
exactly the loop's order, and pluggy's wrappers and call monitoring keep working.

The loop calls ``before_train_iter`` / ``after_train_iter`` every iteration, so each point's
caller is a :class:`_PlannedCaller`: after every (un)registration it keeps a plan, each
plain impl's function in call order (behind an ``itemgetter`` for one that takes only some of
the arguments, or in another order), and a call runs that plan directly; ``caller.fire`` runs
it cheaper still, positionally and without collecting results, for the loop. Whatever the plan
cannot express (wrappers, ``firstresult``, historic calls, pluggy's call monitoring, a call
leaving out an argument) goes through pluggy's own ``_multicall`` unchanged. Same impls,
same order, same results and exceptions: only less work per call (benchmarks/dispatch.py).
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import itertools
import operator
import types
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar, cast, overload

import pluggy

from pluginloop import hookspecs
from pluginloop.errors import PluginValidationError
from pluginloop.hooks.base import Hook
from pluginloop.hookspecs import HOOK_POINTS, PROJECT_NAME
from pluginloop.priority import Priority, PriorityLike, get_priority, priority_name

__all__ = ["HookRelay", "PluginManager", "hookimpl"]

F = TypeVar("F", bound=Callable[..., Any])

_marker = pluggy.HookimplMarker(PROJECT_NAME)
_PRIORITY_ATTR = "pluginloop_priority"
# A documented meaning for pluggy's flags on the nine-level scale: before / after every
# built-in (HIGH .. VERY_LOW), leaving HIGHEST and LOWEST to explicit priorities.
TRYFIRST_PRIORITY = Priority.VERY_HIGH
TRYLAST_PRIORITY = Priority.VERY_LOW


@overload
def hookimpl(function: F) -> F: ...
@overload
def hookimpl(
    function: None = None,
    *,
    priority: PriorityLike | None = None,
    tryfirst: bool = False,
    trylast: bool = False,
    wrapper: bool = False,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    specname: str | None = None,
) -> Callable[[F], F]: ...
def hookimpl(
    function: F | None = None,
    *,
    priority: PriorityLike | None = None,
    tryfirst: bool = False,
    trylast: bool = False,
    wrapper: bool = False,
    hookwrapper: bool = False,
    optionalhook: bool = False,
    specname: str | None = None,
) -> F | Callable[[F], F]:
    """Mark a function as the implementation of the hook point of its name (pluggy style).

    ``priority`` (a ``Priority``, 0..100 or a level name) sets this impl's priority,
    overriding its plugin's. Without it ``tryfirst=True`` means VERY_HIGH (before every
    built-in) and ``trylast=True`` VERY_LOW (with CheckpointHook, after it when registered
    later). ``wrapper=True`` impls wrap the point in priority order (lower value = outer).
    """
    value = None if priority is None else get_priority(priority)  # bad priority: fail now

    def mark(func: F) -> F:
        if value is not None:
            setattr(func, _PRIORITY_ATTR, value)
        marked: F = _marker(
            tryfirst=tryfirst,
            trylast=trylast,
            wrapper=wrapper,
            hookwrapper=hookwrapper,
            optionalhook=optionalhook,
            specname=specname,
        )(func)
        return marked

    return mark(function) if function is not None else mark


_FILLED_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _sort_key(impl: pluggy.HookImpl) -> tuple[int, int]:
    opts = cast(dict[str, Any], impl.opts)
    return opts.get("priority", Priority.NORMAL), opts.get("seq", 1 << 62)


_Picker = Callable[[Any], tuple[Any, ...]]


def _tuple_getter(keys: tuple[Any, ...]) -> _Picker:
    """A C-level ``container -> tuple(container[k] for k in keys)`` (itemgetter unpacks one key)."""
    if len(keys) >= 2:
        return operator.itemgetter(*keys)
    return lambda container: tuple(container[key] for key in keys)


class _PlannedCaller(pluggy.HookCaller):
    """A hook point's caller that runs a precomputed plan of its plain impls (module docstring).

    Called as pluggy's callers are, by keyword, or with every argument positionally in the
    spec's order (what the loop does: no dict to build and take apart per call).
    """

    __slots__ = ("_calls", "_name_set", "_names", "_ordered", "fire")

    def __init__(self, name: str, hook_execute: Any, specmodule: Any, spec_opts: Any) -> None:
        super().__init__(name, hook_execute, specmodule, spec_opts)
        # Every argument of the spec, those with defaults too: the plan passes all of them.
        self._names: tuple[str, ...] = (*self.spec.argnames, *self.spec.kwargnames) if self.spec else ()
        self._name_set = frozenset(self._names)
        self._ordered = _tuple_getter(self._names)
        # The plan: per plain impl in call order, a callable taking every argument of the
        # spec positionally (the impl's function itself, unless it names only some of them).
        self._calls: tuple[Callable[..., Any], ...] | None = None
        #: ``fire(*args)``: this point called with every argument positionally, in the spec's
        #: order, its results dropped. What the loop calls every iteration: see _firing.
        self.fire = _firing(self)

    def replan(self, enabled: bool) -> None:
        """Rebuild the plan from the impl list (None: every call goes through pluggy)."""
        impls = self._hookimpls
        simple = enabled and self.spec is not None and not self.spec.opts.get("firstresult") and not (
            self.spec.opts.get("historic") or any(i.wrapper or i.hookwrapper or i.kwargnames for i in impls)
        )
        if not simple:
            self._calls = None
            return
        calls = []
        for impl in reversed(impls):  # pluggy calls the list from its end
            wanted = tuple(impl.argnames)
            if wanted == self._names:
                calls.append(impl.function)
            else:
                calls.append(_picking(impl.function, _tuple_getter(tuple(map(self._names.index, wanted)))))
        # A new tuple: a (un)registration made by an impl during a call changes the next
        # call, not this one (pluggy copies its list for the same reason).
        self._calls = tuple(calls)

    def __call__(self, *args: object, **kwargs: object) -> Any:
        calls = self._calls
        if args:
            if kwargs or len(args) != len(self._names):
                raise TypeError(
                    f"{self.name}() takes its arguments ({', '.join(self._names)}) all by keyword, "
                    "or all positionally in this order"
                )
            if calls is None:
                return super().__call__(**dict(zip(self._names, args)))
        elif calls is None or not kwargs.keys() >= self._name_set:
            return super().__call__(**kwargs)  # pluggy's path: defaults, warnings, wrappers
        else:
            args = self._ordered(kwargs)
        results = []
        for call in calls:
            result = call(*args)
            if result is not None:
                results.append(result)
        return results


def _picking(function: Callable[..., Any], pick: _Picker) -> Callable[..., Any]:
    """``function`` called with every argument of the point: it receives the ones it names."""

    def call(*args: Any) -> Any:
        return function(*pick(args))

    return call


def _firing(caller: _PlannedCaller) -> Callable[..., None]:
    """``caller.fire``: the point called positionally, results dropped, as cheaply as CPython allows.

    The per-iteration points take 3 (``before_*_iter``) or 4 (``after_*_iter``) arguments.
    For them ``fire`` is a plain function of exactly that many parameters calling each impl
    with them: no ``*args`` tuple to build and unpack and no ``__call__`` slot, which costs
    less than half the caller itself (benchmarks/dispatch.py). It reads the plan at every
    call, so (un)registrations count from the next one, and it leaves a point that has no
    plan (wrappers, monitoring, ...) to the caller.
    """
    if len(caller._names) == 3:

        def fire3(a: Any, b: Any, c: Any) -> None:
            calls = caller._calls
            if calls is None:
                caller(a, b, c)
                return
            for call in calls:
                call(a, b, c)

        return fire3
    if len(caller._names) == 4:

        def fire4(a: Any, b: Any, c: Any, d: Any) -> None:
            calls = caller._calls
            if calls is None:
                caller(a, b, c, d)
                return
            for call in calls:
                call(a, b, c, d)

        return fire4

    def fire(*args: Any) -> None:
        caller(*args)

    return fire


class HookRelay(Protocol):
    """``PluginManager().hook`` as the Runner sees it: each point's caller is a :class:`_PlannedCaller`."""

    def __getattr__(self, name: str) -> _PlannedCaller: ...


def _did_you_mean(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def _plain_attribute_dict(plugin: Any) -> None:
    """Give a registered plugin instance an ordinary attribute dict, so that ``self.x`` stays fast.

    Registering reads the instance's ``__dict__`` (``dir()`` and pluggy's static attribute
    lookup). On CPython 3.11 to 3.13 that turns the attributes an instance keeps inline into
    a dict that shares its keys with the class, and the interpreter's specialized attribute
    reads and writes then miss on every use: a hook method touching ``self`` every iteration
    runs about twice as slowly (docs/performance.md). A copy of that dict is an ordinary one,
    on which they work again; the attributes themselves are unchanged. Modules, classes,
    objects without a ``__dict__`` and those whose ``__dict__`` cannot be replaced (a
    ``SimpleNamespace``) are left alone.
    """
    if isinstance(plugin, (type, types.ModuleType)):
        return
    attrs = getattr(plugin, "__dict__", None)
    if type(attrs) is dict:
        with contextlib.suppress(AttributeError, TypeError):  # a read-only __dict__: keep it
            object.__setattr__(plugin, "__dict__", dict(attrs))  # past any __setattr__ (frozen dataclasses)


class PluginManager(pluggy.PluginManager):
    """The registry and event bus of one Runner; see the module docstring for ordering."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self._unmonitored = self._inner_hookexec  # pluggy's _multicall, until monitoring wraps it
        self.add_hookspecs(hookspecs)
        for point in HOOK_POINTS:
            spec = self.hook.__dict__[point].spec
            setattr(self.hook, point, _PlannedCaller(point, self._hookexec, spec.namespace, spec.opts))
        self._seq = itertools.count()
        self._priority = int(Priority.NORMAL)
        self._points: tuple[str, ...] | None = None
        self._current_seq = 0
        self._sort()  # the (empty) plans

    # pluggy calls this for every attribute of a plugin during register().
    def parse_hookimpl_opts(self, plugin: Any, name: str) -> pluggy.HookimplOpts | None:
        marked = super().parse_hookimpl_opts(plugin, name)
        if marked is None and (self._points is None or name not in self._points):
            return None
        # An unmarked point of a Hook subclass gets pluggy's defaults (normalize_hookimpl_opts).
        opts: dict[str, Any] = dict(marked or {})
        function = getattr(plugin, name)
        value = getattr(function, _PRIORITY_ATTR, None)
        if value is None:
            if opts.get("tryfirst"):
                value = TRYFIRST_PRIORITY
            elif opts.get("trylast"):
                value = TRYLAST_PRIORITY
            else:
                value = self._priority
        # Keep pluggy's own bands consistent with the exact order, so that anything that
        # inserts by pluggy's rules lands in the right band before the re-sort.
        opts.update(
            priority=int(value), seq=self._current_seq,
            tryfirst=value < Priority.NORMAL, trylast=value > Priority.NORMAL,
        )
        # pluggy keeps unknown keys in HookImpl.opts, where _sort_key reads them back.
        return cast(pluggy.HookimplOpts, opts)

    def register(
        self, plugin: Any, name: str | None = None, priority: PriorityLike | None = None
    ) -> str | None:
        """Register ``plugin`` (a Hook, or an object/module with ``@hookimpl`` functions).

        Its priority: ``priority`` if given, else its ``priority`` attribute, else NORMAL.
        Everything is validated first: a plugin that fails leaves nothing registered.
        """
        label = name or self.get_canonical_name(plugin)
        if self.has_plugin(label):
            raise PluginValidationError(
                plugin, f"a plugin named {label!r} is already registered; give this one another name"
            )
        if priority is None:
            priority = getattr(plugin, "priority", Priority.NORMAL)
        try:
            value = get_priority(priority)
        except (TypeError, ValueError) as exc:
            raise PluginValidationError(plugin, f"plugin {label!r}: {exc}") from None
        self._priority, self._current_seq = value, next(self._seq)
        self._points = plugin.hook_points() if isinstance(plugin, Hook) else None
        try:
            if not self._validate(plugin, label) and not isinstance(plugin, Hook):
                # pluggy accepts anything; a str, a number or an unmarked module would be a
                # plugin that silently does nothing.
                raise PluginValidationError(
                    plugin,
                    f"plugin {label!r} ({plugin!r}) implements no hook point: register a Hook "
                    "instance, an object or module with @pluginloop.hookimpl functions, or a "
                    "config dict(type=...)",
                )
            registered = super().register(plugin, label)
        finally:
            self._points = None
        _plain_attribute_dict(plugin)
        for caller in self.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin and impl.kwargnames:
                    # Every point is always called with all its arguments, so arguments that
                    # have defaults (data_batch=None, as in the design document) can be passed
                    # positionally too: pluggy would build a kwargs dict per impl per call.
                    impl.argnames = (*impl.argnames, *impl.kwargnames)  # type: ignore[misc]
                    impl.kwargnames = ()  # type: ignore[misc]
        self._sort()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        """Remove a plugin (by object or name); the remaining order is unchanged."""
        removed = super().unregister(plugin, name)
        self._sort()
        return removed

    def _validate(self, plugin: Any, label: str) -> int:
        """Reject unknown hook names (with a suggestion) and arguments a point does not have.

        Returns the number of hook implementations found.
        """
        found = 0
        for attr in dir(plugin):  # all of them, as pluggy: a marked _name with specname counts
            opts = self.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                # A Hook method that is a near miss of a point would silently never run.
                if isinstance(plugin, Hook) and not attr.startswith("_") and not hasattr(Hook, attr):
                    hint = _did_you_mean(attr, HOOK_POINTS)
                    if hint and callable(getattr(plugin, attr, None)):
                        raise PluginValidationError(
                            plugin, f"plugin {label!r}: method {attr!r} is not a hook point{hint}"
                        )
                continue
            found += 1
            point = opts.get("specname") or attr
            if point not in HOOK_POINTS:
                raise PluginValidationError(
                    plugin,
                    f"plugin {label!r}: {attr!r} is marked as a hook implementation but "
                    f"{point!r} is not a hook point{_did_you_mean(point, HOOK_POINTS)}",
                )
            spec_args = self.hook.__dict__[point].spec.argnames
            params = inspect.signature(getattr(plugin, attr)).parameters
            # pluggy fills only named positional parameters: a keyword-only one would always
            # keep its default and *args / **kwargs would stay empty, silently.
            unfilled = [p for p in params.values() if p.kind not in _FILLED_KINDS]
            if unfilled:
                raise PluginValidationError(
                    plugin,
                    f"plugin {label!r}: {point}() parameter {str(unfilled[0])!r} is never passed; "
                    f"name the arguments it needs as ordinary parameters ({', '.join(spec_args)})",
                )
            extra = [p for p in params if p not in spec_args]
            if extra:
                raise PluginValidationError(
                    plugin,
                    f"plugin {label!r}: {point}() takes no argument {extra[0]!r}"
                    f"{_did_you_mean(extra[0], spec_args)} (it is called with {', '.join(spec_args)})",
                )
        return found

    def add_hookcall_monitoring(self, before: Any, after: Any) -> Callable[[], None]:
        """pluggy's call monitoring (also ``enable_tracing``): every call then goes through pluggy."""
        undo = super().add_hookcall_monitoring(before, after)
        self._sort()

        def undo_and_replan() -> None:
            undo()
            self._sort()

        return undo_and_replan

    def _sort(self) -> None:
        # pluggy walks the list from the end: reverse-sorted puts the lowest
        # (priority, seq) last, i.e. first called. Wrappers stay after plain impls.
        unmonitored = self._inner_hookexec is self._unmonitored
        for caller in self.hook.__dict__.values():
            if not isinstance(caller, pluggy.HookCaller):
                continue
            impls = caller._hookimpls
            plain = [i for i in impls if not (i.wrapper or i.hookwrapper)]
            wrappers = [i for i in impls if i.wrapper or i.hookwrapper]
            impls[:] = sorted(plain, key=_sort_key, reverse=True) + sorted(
                wrappers, key=_sort_key, reverse=True
            )
            if isinstance(caller, _PlannedCaller):
                caller.replan(unmonitored)

    def ordered_impls(self, point: str) -> Iterator[tuple[str, int]]:
        """(plugin name, priority) of the impls of ``point`` in call order, wrappers first."""
        impls = self.hook.__dict__[point].get_hookimpls()
        for impl in reversed(impls):
            yield impl.plugin_name, _sort_key(impl)[0]

    def hooks_info(self) -> dict[str, list[str]]:
        """Per hook point, ``"name (PRIORITY)"`` for each impl in call order."""
        return {
            point: [f"{name} ({priority_name(p)})" for name, p in self.ordered_impls(point)]
            for point in HOOK_POINTS
        }

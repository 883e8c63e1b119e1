"""Exact dispatch order on pluggy, and validation at registration (pluginloop._manager)."""

from __future__ import annotations

import dataclasses
import inspect
import types
from collections.abc import Callable, Generator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pluginloop
from pluginloop import Hook, PluginValidationError, Priority, Runner, get_priority, hookimpl, hookspecs
from pluginloop._manager import TRYFIRST_PRIORITY, TRYLAST_PRIORITY, PluginManager
from pluginloop.priority import priority_name

Log = list[tuple[Any, ...]]


def call_kwargs(point: str) -> dict[str, Any]:
    """Every argument of ``point``, set to None (enough for impls that take ``runner`` only)."""
    return dict.fromkeys(inspect.signature(getattr(hookspecs, point)).parameters)


def called_order(pm: PluginManager, point: str, log: Log) -> Log:
    """Call ``point`` as the loop does and return what the impls recorded.

    The same impl list run by pluggy's own ``_multicall``, and fired positionally as the loop
    fires its per-iteration points, must record the same: the planned fast paths
    (pluginloop._manager._PlannedCaller) change the cost of a call, nothing else.
    """
    del log[:]
    getattr(pm.hook, point)(**call_kwargs(point))
    planned = list(log)
    del log[:]
    getattr(pm.hook, point).fire(*call_kwargs(point).values())
    fired = list(log)
    del log[:]
    pm._hookexec(point, getattr(pm.hook, point).get_hookimpls(), call_kwargs(point), False)
    assert planned == fired == log
    return planned


# -- property: any mix of plugins, registered / unregistered in any order -----------------

POINTS = ("before_run", "after_train_iter", "after_val_epoch", "before_save_checkpoint")

priorities = st.one_of(
    st.sampled_from(list(Priority)),
    st.sampled_from([p.name for p in Priority]).map(
        lambda n: n.lower() if len(n) % 2 else n.title()  # any case is a level name
    ),
    st.integers(0, 100),
)


@dataclasses.dataclass
class ImplSpec:
    """How one impl is declared: ``mark`` is 'plain', 'priority', 'tryfirst' or 'trylast'."""

    mark: str
    priority: Any = None
    wrapper: bool = False


@dataclasses.dataclass
class PluginSpec:
    """A plugin to build: a Hook subclass, an object with marked methods, or a module."""

    kind: str
    impls: dict[str, ImplSpec]
    own_priority: Any  # class attribute (module attribute for modules), or None
    reg_priority: Any  # given to register(), or None


impl_specs = st.builds(
    ImplSpec,
    mark=st.sampled_from(["plain", "plain", "priority", "tryfirst", "trylast"]),
    priority=priorities,
    wrapper=st.booleans(),
)
plugin_specs = st.builds(
    PluginSpec,
    kind=st.sampled_from(["hook", "object", "module"]),
    impls=st.dictionaries(st.sampled_from(POINTS), impl_specs, min_size=1),
    own_priority=st.none() | priorities,
    reg_priority=st.none() | priorities,
)


def make_impl(point: str, label: str, log: Log, wrapper: bool, method: bool) -> Callable[..., Any]:
    """A function (or method, taking self) that records its calls; wrappers record enter/exit."""
    if wrapper:

        def wrap(runner: Any) -> Generator[None, Any, Any]:
            log.append((point, label, "enter"))
            result = yield
            log.append((point, label, "exit"))
            return result

        def wrap_method(self: Any, runner: Any) -> Generator[None, Any, Any]:
            return (yield from wrap(runner))

        return wrap_method if method else wrap

    def plain(runner: Any) -> None:
        log.append((point, label))

    def plain_method(self: Any, runner: Any) -> None:
        plain(runner)

    return plain_method if method else plain


def build_plugin(spec: PluginSpec, label: str, log: Log) -> Any:
    attrs: dict[str, Any] = {}
    for point, impl in spec.impls.items():
        fn = make_impl(point, label, log, impl.wrapper, method=spec.kind != "module")
        fn.__name__ = point
        # A Hook subclass's plain override needs no marker; everything else is marked.
        if spec.kind != "hook" or impl.mark != "plain" or impl.wrapper:
            fn = hookimpl(
                priority=impl.priority if impl.mark == "priority" else None,
                tryfirst=impl.mark == "tryfirst",
                trylast=impl.mark == "trylast",
                wrapper=impl.wrapper,
            )(fn)
        attrs[point] = fn
    if spec.own_priority is not None:
        attrs["priority"] = spec.own_priority
    if spec.kind == "module":
        module = types.ModuleType(label)
        vars(module).update(attrs)
        return module
    cls = type(label, (Hook,) if spec.kind == "hook" else (), attrs)
    return cls()


def impl_priority(spec: PluginSpec, impl: ImplSpec) -> int:
    """The documented rule: impl priority, else tryfirst/trylast, else registration > own > NORMAL."""
    if impl.mark == "priority":
        return get_priority(impl.priority)
    if impl.mark == "tryfirst":
        return Priority.VERY_HIGH
    if impl.mark == "trylast":
        return Priority.VERY_LOW
    for value in (spec.reg_priority, spec.own_priority):
        if value is not None:
            return get_priority(value)
    return Priority.NORMAL


def expected_calls(point: str, registered: dict[int, int], specs: list[PluginSpec]) -> tuple[Log, list[str]]:
    """Calls of ``point`` sorted by (priority, registration sequence), and its hooks_info lines."""
    entries = []
    for i, seq in registered.items():
        impl = specs[i].impls.get(point)
        if impl is not None:
            entries.append((impl_priority(specs[i], impl), seq, f"p{i}", impl.wrapper))
    entries.sort()
    wrappers = [e for e in entries if e[3]]
    plain = [e for e in entries if not e[3]]
    log: Log = [(point, e[2], "enter") for e in wrappers]
    log += [(point, e[2]) for e in plain]
    log += [(point, e[2], "exit") for e in reversed(wrappers)]
    info = [f"{e[2]} ({priority_name(e[0])})" for e in wrappers + plain]
    return log, info


@settings(max_examples=60, deadline=None)
@given(
    specs=st.lists(plugin_specs, min_size=1, max_size=8),
    toggles=st.lists(st.integers(0, 7), min_size=1, max_size=30),
    by_name=st.booleans(),
)
def test_call_order_is_sorted_by_priority_then_registration(
    specs: list[PluginSpec], toggles: list[int], by_name: bool
) -> None:
    log: Log = []
    plugins = [build_plugin(spec, f"p{i}", log) for i, spec in enumerate(specs)]
    pm = PluginManager()
    registered: dict[int, int] = {}  # plugin index -> registration sequence
    seq = 0
    for step, toggle in enumerate(toggles):
        i = toggle % len(specs)
        if i in registered:  # unregister in between, by object or by name
            if by_name and step % 2:
                pm.unregister(name=f"p{i}")
            else:
                pm.unregister(plugins[i])
            del registered[i]
        else:  # (re-)registering puts the plugin last among its equals
            pm.register(plugins[i], f"p{i}", priority=specs[i].reg_priority)
            registered[i], seq = seq, seq + 1
        info = pm.hooks_info()
        for point in POINTS:
            want_log, want_info = expected_calls(point, registered, specs)
            assert called_order(pm, point, log) == want_log
            assert info[point] == want_info


# -- the same rules, one at a time --------------------------------------------------------


def test_equal_priority_runs_in_registration_order() -> None:
    log: Log = []
    pm = PluginManager()
    names = ["c", "a", "e", "b", "d"]  # not alphabetical: order must come from registration
    for name in names:
        pm.register(
            build_plugin(PluginSpec("hook", {"before_run": ImplSpec("plain")}, None, None), name, log), name
        )
    assert called_order(pm, "before_run", log) == [("before_run", n) for n in names]


def test_equal_priority_across_plugin_styles_runs_in_registration_order() -> None:
    log: Log = []
    pm = PluginManager()
    kinds = ["module", "hook", "object", "hook", "module"]
    for i, kind in enumerate(kinds):
        spec = PluginSpec(kind, {"after_train_iter": ImplSpec("priority", "low")}, None, None)
        pm.register(build_plugin(spec, f"p{i}", log), f"p{i}")
    assert called_order(pm, "after_train_iter", log) == [("after_train_iter", f"p{i}") for i in range(5)]


def test_tryfirst_and_trylast_mean_very_high_and_very_low() -> None:
    assert TRYFIRST_PRIORITY == Priority.VERY_HIGH
    assert TRYLAST_PRIORITY == Priority.VERY_LOW
    log: Log = []
    pm = PluginManager()
    specs = {
        "last": PluginSpec("object", {"before_run": ImplSpec("trylast")}, None, None),
        "high": PluginSpec("hook", {"before_run": ImplSpec("plain")}, "HIGH", None),
        "first": PluginSpec("module", {"before_run": ImplSpec("tryfirst")}, None, None),
        "highest": PluginSpec("hook", {"before_run": ImplSpec("plain")}, None, "HIGHEST"),
        "lowest": PluginSpec("hook", {"before_run": ImplSpec("plain")}, "LOWEST", None),
    }
    for name, spec in specs.items():
        pm.register(build_plugin(spec, name, log), name, priority=spec.reg_priority)
    assert [c[1] for c in called_order(pm, "before_run", log)] == [
        "highest",
        "first",
        "high",
        "last",
        "lowest",
    ]
    assert pm.hooks_info()["before_run"] == [
        "highest (HIGHEST)",
        "first (VERY_HIGH)",
        "high (HIGH)",
        "last (VERY_LOW)",
        "lowest (LOWEST)",
    ]


def test_per_impl_priority_overrides_the_plugin_priority() -> None:
    log: Log = []

    class Mixed(Hook):
        priority = Priority.LOWEST

        @hookimpl(priority="HIGHEST")
        def before_run(self, runner: Any) -> None:
            log.append(("before_run", "mixed"))

        def after_run(self, runner: Any) -> None:
            log.append(("after_run", "mixed"))

    pm = PluginManager()
    pm.register(
        build_plugin(
            PluginSpec("hook", {p: ImplSpec("plain") for p in ("before_run", "after_run")}, None, None),
            "normal",
            log,
        ),
        "normal",
    )
    pm.register(Mixed(), "mixed")
    assert called_order(pm, "before_run", log) == [("before_run", "mixed"), ("before_run", "normal")]
    assert called_order(pm, "after_run", log) == [("after_run", "normal"), ("after_run", "mixed")]


def test_priority_precedence_registration_then_class_then_normal() -> None:
    class WithClassPriority(Hook):
        priority = "LOW"

        def before_run(self, runner: Any) -> None:
            pass

    class WithoutPriority(Hook):
        def before_run(self, runner: Any) -> None:
            pass

    pm = PluginManager()
    pm.register(WithClassPriority(), "given", priority=Priority.VERY_HIGH)
    pm.register(WithClassPriority(), "class")
    pm.register(WithoutPriority(), "default")
    instance = WithoutPriority()
    instance.priority = 45  # type: ignore[misc]  # an instance attribute counts as "own"
    pm.register(instance, "instance")
    assert pm.hooks_info()["before_run"] == [
        "given (VERY_HIGH)",
        "instance (45)",
        "default (NORMAL)",
        "class (LOW)",
    ]


def test_wrappers_wrap_the_plain_impls_in_priority_order() -> None:
    log: Log = []
    pm = PluginManager()
    spec = {  # registration order deliberately not priority order
        "plain_low": ("LOW", False),
        "wrap_lowest": ("LOWEST", True),
        "plain_highest": ("HIGHEST", False),
        "wrap_high": ("HIGH", True),
        "wrap_normal": ("NORMAL", True),
    }
    for name, (prio, wrapper) in spec.items():
        impl = ImplSpec("plain", wrapper=wrapper)
        pm.register(build_plugin(PluginSpec("hook", {"before_run": impl}, prio, None), name, log), name)
    assert called_order(pm, "before_run", log) == [
        ("before_run", "wrap_high", "enter"),
        ("before_run", "wrap_normal", "enter"),
        ("before_run", "wrap_lowest", "enter"),
        ("before_run", "plain_highest"),
        ("before_run", "plain_low"),
        ("before_run", "wrap_lowest", "exit"),
        ("before_run", "wrap_normal", "exit"),
        ("before_run", "wrap_high", "exit"),
    ]


def test_wrapper_sees_the_optimizer_step_inside_the_loop(runner_kwargs: dict[str, Any]) -> None:
    stepped_inside: list[bool] = []

    class AroundStep:
        """A pluggy-style plugin: LOWEST, yet its wrapper is around OptimizerHook (HIGH)."""

        priority = "LOWEST"

        @hookimpl(wrapper=True)
        def after_train_iter(self, runner: Runner) -> Generator[None, Any, Any]:
            before = runner.model.weight.detach().clone()
            result = yield
            stepped_inside.append(not torch.equal(before, runner.model.weight.detach()))
            return result

    runner = Runner(**runner_kwargs, custom_hooks=[AroundStep()])
    runner.train()
    assert stepped_inside == [True] * 6


def test_only_overridden_hook_methods_are_registered() -> None:
    class OneMethod(Hook):
        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            pass

    class Narrowed(Hook):
        def before_run(self, runner: Any) -> None:
            pass

        def after_run(self, runner: Any) -> None:
            pass

        def hook_points(self) -> tuple[str, ...]:
            return ("after_run",)  # before_run does not apply: it must cost nothing

    pm = PluginManager()
    pm.register(OneMethod(), "one")
    pm.register(Narrowed(), "narrowed")
    where = {
        point: [impl.plugin_name for impl in getattr(pm.hook, point).get_hookimpls()]
        for point in pluginloop.HOOK_POINTS
    }
    assert where == {
        point: (["one"] if point == "after_train_iter" else ["narrowed"] if point == "after_run" else [])
        for point in pluginloop.HOOK_POINTS
    }


def _assert_nothing_registered(pm: PluginManager, name: str, plugin: Any) -> None:
    assert not pm.has_plugin(name)
    assert not pm.is_registered(plugin)
    for point in pluginloop.HOOK_POINTS:
        assert all(impl.plugin is not plugin for impl in getattr(pm.hook, point).get_hookimpls())


def test_near_miss_method_name_is_rejected_atomically() -> None:
    class Typo(Hook):
        def before_run(self, runner: Any) -> None:  # valid, and must not stay registered
            pass

        def after_train_itr(self, runner: Any, batch_idx: int) -> None:
            pass

    pm = PluginManager()
    plugin = Typo()
    with pytest.raises(PluginValidationError, match="did you mean 'after_train_iter'") as info:
        pm.register(plugin, "my_typo_hook")
    assert "my_typo_hook" in str(info.value)
    assert "after_train_itr" in str(info.value)
    assert info.value.plugin is plugin
    _assert_nothing_registered(pm, "my_typo_hook", plugin)
    pm.register(
        build_plugin(PluginSpec("hook", {"before_run": ImplSpec("plain")}, None, None), "ok", []),
        "my_typo_hook",
    )  # the name is still free


def test_near_miss_through_runner_leaves_nothing(runner_kwargs: dict[str, Any]) -> None:
    class Typo(Hook):
        def before_run(self, runner: Any) -> None:
            pass

        def befor_train_epoch(self, runner: Any) -> None:
            pass

    runner = Runner(**runner_kwargs)
    before = runner.get_hooks_info()
    with pytest.raises(PluginValidationError, match="did you mean 'before_train_epoch'"):
        runner.register_hook(Typo())
    assert runner.get_hooks_info() == before


def test_argument_the_point_does_not_have_is_rejected() -> None:
    class WrongArg(Hook):
        def before_run(self, runner: Any) -> None:
            pass

        def after_train_iter(self, runner: Any, batch_index: int) -> None:
            pass

    pm = PluginManager()
    plugin = WrongArg()
    with pytest.raises(PluginValidationError, match="batch_index") as info:
        pm.register(plugin, "wrong_arg")
    message = str(info.value)
    assert "wrong_arg" in message and "after_train_iter" in message and "did you mean 'batch_idx'" in message
    _assert_nothing_registered(pm, "wrong_arg", plugin)


@pytest.mark.parametrize(
    "signature",
    ["runner, *, outputs=None", "runner, **kwargs", "runner, *args"],
    ids=["kwonly", "varkw", "varargs"],
)
def test_arguments_pluggy_would_never_fill_are_rejected(signature: str) -> None:
    """pluggy passes only named positional parameters: others would silently keep their default."""
    namespace: dict[str, Any] = {}
    exec(f"def after_train_iter(self, {signature}):\n    pass", namespace)
    cls = type("NeverFilled", (Hook,), {"after_train_iter": namespace["after_train_iter"]})
    pm = PluginManager()
    plugin = cls()
    with pytest.raises(PluginValidationError, match="NeverFilled"):
        pm.register(plugin, "NeverFilled")
    _assert_nothing_registered(pm, "NeverFilled", plugin)


def test_marked_impl_with_unknown_hook_name_is_rejected() -> None:
    module = types.ModuleType("typo_plugin")

    @hookimpl
    def before_run(runner: Any) -> None:
        pass

    @hookimpl
    def after_val_epok(runner: Any) -> None:
        pass

    module.before_run = before_run  # type: ignore[attr-defined]
    module.after_val_epok = after_val_epok  # type: ignore[attr-defined]
    pm = PluginManager()
    with pytest.raises(PluginValidationError, match="did you mean 'after_val_epoch'") as info:
        pm.register(module)
    assert "typo_plugin" in str(info.value)
    _assert_nothing_registered(pm, "typo_plugin", module)


def test_marked_impl_with_unknown_specname_is_rejected() -> None:
    class Plugin:
        @hookimpl(specname="after_runn")
        def finish(self, runner: Any) -> None:
            pass

    with pytest.raises(PluginValidationError, match="did you mean 'after_run'"):
        PluginManager().register(Plugin(), "specname_plugin")


def test_specname_maps_any_method_name_to_a_point() -> None:
    log: Log = []

    class Plugin:
        @hookimpl(specname="after_run")
        def finish(self, runner: Any) -> None:
            log.append(("after_run", "specname"))

    pm = PluginManager()
    pm.register(Plugin(), "specname")
    assert called_order(pm, "after_run", log) == [("after_run", "specname")]


def test_bad_priority_at_registration_names_the_plugin() -> None:
    pm = PluginManager()
    plugin = build_plugin(PluginSpec("hook", {"before_run": ImplSpec("plain")}, None, None), "bad", [])
    with pytest.raises(PluginValidationError, match=r"'bad'.*HIGHEST"):
        pm.register(plugin, "bad", priority="SUPER_HIGH")
    _assert_nothing_registered(pm, "bad", plugin)


def test_bad_per_impl_priority_fails_at_decoration() -> None:
    with pytest.raises(ValueError, match="VERY_HIGH"):
        hookimpl(priority="extreme")


def test_a_name_or_an_object_cannot_be_registered_twice() -> None:
    pm = PluginManager()
    spec = PluginSpec("hook", {"before_run": ImplSpec("plain")}, None, None)
    first = build_plugin(spec, "first", [])
    pm.register(first, "same")
    with pytest.raises(PluginValidationError, match="'same' is already registered"):
        pm.register(build_plugin(spec, "second", []), "same")
    with pytest.raises(ValueError, match="already registered"):
        pm.register(first, "other")
    assert len(pm.hook.before_run.get_hookimpls()) == 1


def test_design_document_signature_receives_real_values(runner_kwargs: dict[str, Any]) -> None:
    received: list[tuple[Any, ...]] = []

    class DocStyle(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):  # type: ignore[no-untyped-def]
            received.append((runner, batch_idx, data_batch, outputs))

    runner = Runner(**runner_kwargs, custom_hooks=DocStyle())
    runner.train()
    assert [r[1] for r in received] == [0, 1, 2] * 2
    for got_runner, _, data_batch, outputs in received:
        assert got_runner is runner
        assert data_batch is not None and len(data_batch) == 2 and torch.is_tensor(data_batch[0])
        assert outputs is not None and torch.is_tensor(outputs["loss"])
    # and by a direct call of pluggy's hook caller
    received.clear()
    pm = PluginManager()
    pm.register(DocStyle(), "doc")
    pm.hook.after_train_iter(runner="r", batch_idx=7, data_batch="batch", outputs={"loss": 1})
    assert received == [("r", 7, "batch", {"loss": 1})]


def test_direct_call_runs_in_the_loop_order(runner_kwargs: dict[str, Any], calls: Any) -> None:
    runner = Runner(**runner_kwargs, max_iters=1)
    for label, prio in [
        ("low", "LOW"),
        ("highest", "HIGHEST"),
        ("normal", None),
        ("above_normal", "ABOVE_NORMAL"),
        ("normal2", None),
    ]:
        runner.register_hook(calls.recorder(label), priority=prio, name=label)
    step = runner.optimizer.step

    def spy_step(*args: Any, **kwargs: Any) -> Any:
        calls.append(("after_train_iter", None, "OptimizerHook"))
        return step(*args, **kwargs)

    runner.optimizer.step = spy_step  # type: ignore[method-assign]
    runner.train()
    in_loop = [c[2] for c in calls if c[0] == "after_train_iter"]
    assert in_loop == ["highest", "OptimizerHook", "above_normal", "normal", "normal2", "low"]

    calls.clear()
    x, y = next(iter(runner.train_dataloader))
    loss = torch.nn.functional.mse_loss(runner.model(x), y)
    runner.hook.after_train_iter(runner=runner, batch_idx=0, data_batch=(x, y), outputs={"loss": loss})
    assert [c[2] for c in calls] == in_loop
    info = runner.get_hooks_info()["after_train_iter"]
    assert info == [
        "highest (HIGHEST)",
        "OptimizerHook (HIGH)",
        "above_normal (ABOVE_NORMAL)",
        "normal (NORMAL)",
        "normal2 (NORMAL)",
        "low (LOW)",
    ]


def test_private_method_marked_with_specname_is_validated_and_registered() -> None:
    log: Log = []

    class Good:
        @hookimpl(specname="after_run")
        def _finish(self, runner: Any) -> None:
            log.append(("after_run", "good"))

    class Bad:
        @hookimpl(specname="after_run")
        def _finish(self, runner: Any, metrics: Any) -> None:
            pass

    pm = PluginManager()
    pm.register(Good(), "good")
    assert called_order(pm, "after_run", log) == [("after_run", "good")]
    bad = Bad()
    with pytest.raises(PluginValidationError, match="takes no argument 'metrics'"):
        pm.register(bad, "bad")
    _assert_nothing_registered(pm, "bad", bad)


@pytest.mark.parametrize("thing", ["CheckInvalidLossHook", 5, types.ModuleType("empty"), Hook])
def test_a_plugin_that_implements_nothing_is_rejected(thing: Any) -> None:
    pm = PluginManager()
    with pytest.raises(PluginValidationError, match="implements no hook point"):
        pm.register(thing, "thing")
    assert not pm.has_plugin("thing")


def test_a_hook_instance_with_no_points_is_accepted() -> None:
    """A Hook that does not apply to a configuration (e.g. no CUDA) registers with no impls."""

    class Idle(Hook):
        def before_run(self, runner: Any) -> None:
            pass

        def hook_points(self) -> tuple[str, ...]:
            return ()

    pm = PluginManager()
    pm.register(Idle(), "idle")
    assert pm.has_plugin("idle") and not any(pm.hooks_info().values())


# -- registered instances keep ordinary attribute dicts ----------------------------------


class Counting(Hook):
    def __init__(self) -> None:
        self.calls, self.last = 0, -1

    def after_train_iter(self, runner: Any, batch_idx: int) -> None:
        self.calls += 1
        self.last = batch_idx


@hookimpl
def _module_after_run(runner: Any) -> None:
    pass


@dataclasses.dataclass(frozen=True)
class FrozenPlugin:
    label: str

    @hookimpl
    def after_run(self, runner: Any) -> None:
        pass


class SlottedPlugin:
    __slots__ = ("label",)

    def __init__(self) -> None:
        self.label = "slots"

    @hookimpl
    def after_run(self, runner: Any) -> None:
        pass


def test_a_registered_instance_gets_a_fresh_attribute_dict_with_the_same_attributes() -> None:
    """Registering reads ``__dict__`` (dir(), pluggy's static lookup), which on CPython 3.11-3.13
    leaves a key-sharing dict on which every ``self.x`` takes the slow path; the manager swaps in
    an ordinary copy (pluginloop._manager._plain_attribute_dict)."""
    hook = Counting()
    before = vars(hook)  # the instance's attributes, as the registration is about to see them
    pm = PluginManager()
    pm.register(hook, "counting")
    assert vars(hook) is not before and vars(hook) == {"calls": 0, "last": -1}
    pm.hook.after_train_iter.fire(None, 7, None, None)
    assert (hook.calls, hook.last) == (1, 7) and vars(hook) == {"calls": 1, "last": 7}
    hook.extra = "set after registration"
    assert vars(hook)["extra"] == "set after registration"


def test_frozen_slotted_namespace_and_module_plugins_register_as_they_are() -> None:
    module = types.ModuleType("plugin_module")
    module.after_run = _module_after_run  # type: ignore[attr-defined]
    module_dict = vars(module)
    namespace = types.SimpleNamespace(after_run=_module_after_run)  # its __dict__ is read-only
    namespace_dict = vars(namespace)
    frozen, slotted = FrozenPlugin("frozen"), SlottedPlugin()
    pm = PluginManager()
    plugins = (("module", module), ("namespace", namespace), ("frozen", frozen), ("slotted", slotted))
    for name, plugin in plugins:
        pm.register(plugin, name)
    assert vars(module) is module_dict and vars(namespace) is namespace_dict
    assert frozen.label == "frozen" and vars(frozen) == {"label": "frozen"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.label = "changed"  # type: ignore[misc]
    assert slotted.label == "slots" and not hasattr(slotted, "__dict__")
    names = sorted(impl.plugin_name for impl in pm.hook.after_run.get_hookimpls())
    assert names == ["frozen", "module", "namespace", "slotted"]

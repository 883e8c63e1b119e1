"""The planned hook call (pluginloop._manager._PlannedCaller) behaves as pluggy's own call.

Order is covered for any mix of plugins by test_manager's property test, which runs every
call three ways (by keyword, fired, through pluggy); here: results, exceptions,
registration during a call, pluggy's call monitoring and calls that leave out an argument,
which must fall back to pluggy's path, and ``fire``, the loop's call.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pluggy
import pytest

from pluginloop import Hook, Priority, hookimpl
from pluginloop._manager import PluginManager

ITER_ARGS = dict(runner=None, batch_idx=3, data_batch=("x", "y"), outputs={"loss": 1.0})
# after_train_iter with ITER_ARGS, as a plugin calls it (by keyword) and as the loop does
# (fire, taken once per epoch): both must behave alike.
CALL_STYLES: dict[str, Callable[[PluginManager], Callable[[], Any]]] = {
    "by keyword": lambda pm: functools.partial(pm.hook.after_train_iter, **ITER_ARGS),
    "fired": lambda pm: functools.partial(pm.hook.after_train_iter.fire, *ITER_ARGS.values()),
}


class Recorder(Hook):
    """Records each after_train_iter call with the arguments it received; returns ``result``."""

    def __init__(self, label: str, log: list[Any], result: Any = None) -> None:
        self.label, self.log, self.result = label, log, result

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> Any:
        self.log.append((self.label, batch_idx, data_batch, outputs))
        return self.result


class OnlyBatchIdx:
    """A pluggy-style plugin taking a subset of the arguments, in another order."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    @hookimpl
    def after_train_iter(self, batch_idx: int, runner: Any) -> str:
        self.log.append(("subset", batch_idx))
        return "subset"


class WrapsBatchIdx:
    """A new-style wrapper of after_train_iter that records ("wrap", batch_idx) on entry."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    @hookimpl(wrapper=True)
    def after_train_iter(self, runner: Any, batch_idx: int) -> Any:
        self.log.append(("wrap", batch_idx))
        return (yield)


def test_arguments_and_non_none_results_as_pluggy_gives_them() -> None:
    log: list[Any] = []
    pm = PluginManager()
    pm.register(Recorder("a", log, result="ra"), "a", priority=Priority.LOW)
    pm.register(Recorder("b", log), "b", priority=Priority.HIGH)
    pm.register(OnlyBatchIdx(log), "subset")
    results = pm.hook.after_train_iter(**ITER_ARGS)
    planned = list(log)
    log.clear()
    impls = pm.hook.after_train_iter.get_hookimpls()
    assert pm._hookexec("after_train_iter", impls, dict(ITER_ARGS), False) == results == ["subset", "ra"]
    assert planned == log == [
        ("b", 3, ("x", "y"), {"loss": 1.0}),
        ("subset", 3),
        ("a", 3, ("x", "y"), {"loss": 1.0}),
    ]


@pytest.mark.parametrize("style", CALL_STYLES)
def test_an_exception_stops_the_call_and_propagates_unchanged(style: str) -> None:
    log: list[Any] = []
    error = ValueError("boom")

    class Fails(Hook):
        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            raise error

    pm = PluginManager()
    pm.register(Recorder("first", log), "first", priority=Priority.HIGH)
    pm.register(Fails(), "fails")
    pm.register(Recorder("never", log), "never", priority=Priority.LOW)
    with pytest.raises(ValueError) as info:
        CALL_STYLES[style](pm)()
    assert info.value is error
    assert [entry[0] for entry in log] == ["first"]


@pytest.mark.parametrize("style", CALL_STYLES)
def test_a_plugin_registered_during_a_call_runs_from_the_next_call(style: str) -> None:
    log: list[Any] = []
    pm = PluginManager()
    late = Recorder("late", log)

    class Registers(Hook):
        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            log.append(("registers", batch_idx))
            if not pm.is_registered(late):
                pm.register(late, "late", priority=Priority.LOWEST)

    pm.register(Registers(), "registers")
    call = CALL_STYLES[style](pm)
    call()
    assert [entry[0] for entry in log] == ["registers"]
    log.clear()
    call()
    assert [entry[0] for entry in log] == ["registers", "late"]
    pm.unregister(late)
    log.clear()
    call()
    assert [entry[0] for entry in log] == ["registers"]


def test_call_monitoring_sees_every_call_while_it_is_on() -> None:
    log: list[Any] = []
    seen: list[str] = []
    pm = PluginManager()
    pm.register(Recorder("a", log), "a")
    undo = pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: seen.append(f"before {name}"),
        lambda outcome, name, impls, kwargs: seen.append(f"after {name}"),
    )
    pm.hook.after_train_iter(**ITER_ARGS)
    pm.register(Recorder("b", log), "b")  # registering while monitored keeps monitoring
    pm.hook.after_train_iter(**ITER_ARGS)
    assert seen == ["before after_train_iter", "after after_train_iter"] * 2
    undo()
    pm.hook.after_train_iter(**ITER_ARGS)
    assert len(seen) == 4
    assert [entry[0] for entry in log] == ["a", "a", "b", "a", "b"]


def test_tracing_through_pluggy_still_reports_calls() -> None:
    lines: list[str] = []
    pm = PluginManager()
    pm.register(Recorder("a", []), "a")
    pm.trace.root.setwriter(lines.append)
    undo = pm.enable_tracing()
    pm.hook.after_train_iter(**ITER_ARGS)
    undo()
    assert any("after_train_iter" in line for line in lines)


def test_a_call_leaving_out_an_argument_takes_pluggys_path() -> None:
    pm = PluginManager()
    pm.register(Recorder("a", []), "a")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pluggy.HookCallError, match="data_batch"):
            pm.hook.after_train_iter(runner=None, batch_idx=0)
    assert any("cannot be found in this hook call" in str(w.message) for w in caught)


def test_wrappers_and_firstresult_style_calls_keep_pluggys_semantics() -> None:
    log: list[Any] = []

    class Wraps:
        @hookimpl(wrapper=True)
        def after_train_iter(self, runner: Any) -> Any:
            log.append("enter")
            result = yield
            log.append(("exit", list(result)))
            return [*result, "wrapped"]

    pm = PluginManager()
    pm.register(Recorder("a", log, result="ra"), "a")
    pm.register(Wraps(), "wraps")
    assert pm.hook.after_train_iter(**ITER_ARGS) == ["ra", "wrapped"]
    assert log[0] == "enter" and log[-1] == ("exit", ["ra"])
    pm.unregister(name="wraps")
    assert pm.hook.after_train_iter(**ITER_ARGS) == ["ra"]


def test_positional_arguments_in_the_spec_order_are_the_same_call() -> None:
    log: list[Any] = []
    pm = PluginManager()
    pm.register(Recorder("a", log, result="ra"), "a")
    pm.register(OnlyBatchIdx(log), "subset")  # takes (batch_idx, runner): picked from the tuple
    by_keyword = pm.hook.after_train_iter(**ITER_ARGS)
    keyword_log = list(log)
    log.clear()
    assert pm.hook.after_train_iter(None, 3, ("x", "y"), {"loss": 1.0}) == by_keyword
    assert log == keyword_log == [("a", 3, ("x", "y"), {"loss": 1.0}), ("subset", 3)]
    pm.register(Recorder("b", log), "b", priority=Priority.LOWEST)  # one taking all, after a subset
    log.clear()
    pm.hook.after_train_iter(None, 4, "batch", "out")
    assert log == [("a", 4, "batch", "out"), ("subset", 4), ("b", 4, "batch", "out")]


def test_positional_calls_go_through_pluggy_when_the_plan_cannot_run_them() -> None:
    log: list[Any] = []

    pm = PluginManager()
    pm.register(Recorder("a", log), "a")
    pm.register(WrapsBatchIdx(log), "wraps")
    pm.hook.after_train_iter(None, 5, "batch", "out")
    assert log == [("wrap", 5), ("a", 5, "batch", "out")]


@pytest.mark.parametrize(
    "args, kwargs", [((None, 1, 2), {}), ((None, 1, 2, 3), {"outputs": 3}), ((None,), {})]
)
def test_positional_calls_need_every_argument_and_no_keywords(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    pm = PluginManager()
    pm.register(Recorder("a", []), "a")
    with pytest.raises(TypeError, match=r"after_train_iter\(\) takes its arguments \(runner, batch_idx"):
        pm.hook.after_train_iter(*args, **kwargs)


def test_fire_runs_the_plan_positionally_and_drops_the_results() -> None:
    log: list[Any] = []
    pm = PluginManager()
    pm.register(Recorder("a", log, result="ra"), "a")
    pm.register(OnlyBatchIdx(log), "subset")
    assert pm.hook.after_train_iter.fire(None, 3, ("x", "y"), {"loss": 1.0}) is None
    assert log == [("a", 3, ("x", "y"), {"loss": 1.0}), ("subset", 3)]
    log.clear()

    class Before(Hook):
        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            log.append(("before", batch_idx, data_batch))

    pm.register(Before(), "before")
    pm.hook.before_train_iter.fire(None, 4, "batch")
    pm.hook.before_run.fire("runner")  # other arities are fired too, through the caller
    assert log == [("before", 4, "batch")]
    with pytest.raises(TypeError):
        pm.hook.after_train_iter.fire(None, 3, "batch")  # every argument, always


def test_fire_goes_through_pluggy_for_wrappers_and_monitoring() -> None:
    log: list[Any] = []
    seen: list[str] = []

    pm = PluginManager()
    pm.register(Recorder("a", log), "a")
    fire = pm.hook.after_train_iter.fire
    pm.register(WrapsBatchIdx(log), "wraps")
    fire(None, 5, "batch", "out")
    assert log == [("wrap", 5), ("a", 5, "batch", "out")]
    pm.unregister(name="wraps")
    undo = pm.add_hookcall_monitoring(lambda name, impls, kwargs: seen.append(name), lambda *args: None)
    fire(None, 6, "batch", "out")
    undo()
    fire(None, 7, "batch", "out")
    assert seen == ["after_train_iter"]
    assert log[-2:] == [("a", 6, "batch", "out"), ("a", 7, "batch", "out")]

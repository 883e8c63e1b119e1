"""Golden sequences: every hook call of a whole run, and the default hooks' per-point order."""

from __future__ import annotations

from typing import Any

from pluginloop import Hook, Priority, Runner, get_priority
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.priority import priority_name
from pluginloop.registry import HOOKS

F, OPT, L = "first", "OptimizerHook", "last"

# 2 epochs x 2 train batches, validation (1 batch) after each epoch, then test (1 batch).
# Each entry: (hook point, batch_idx, plugins in the order they were called).
GOLDEN_RUN = [
    ("before_run", None, (F, OPT, L)),
    ("before_train_epoch", None, (F, L)),
    ("before_train_iter", 0, (F, L)),
    ("after_train_iter", 0, (F, OPT, L)),
    ("before_train_iter", 1, (F, L)),
    ("after_train_iter", 1, (F, OPT, L)),
    ("after_train_epoch", None, (F, L)),
    ("before_val_epoch", None, (F, L)),
    ("before_val_iter", 0, (F, L)),
    ("after_val_iter", 0, (F, L)),
    ("after_val_epoch", None, (F, L)),
    ("before_train_epoch", None, (F, L)),
    ("before_train_iter", 0, (F, L)),
    ("after_train_iter", 0, (F, OPT, L)),
    ("before_train_iter", 1, (F, L)),
    ("after_train_iter", 1, (F, OPT, L)),
    ("after_train_epoch", None, (F, L)),
    ("before_val_epoch", None, (F, L)),
    ("before_val_iter", 0, (F, L)),
    ("after_val_iter", 0, (F, L)),
    ("after_val_epoch", None, (F, L)),
    ("before_test_epoch", None, (F, L)),
    ("before_test_iter", 0, (F, L)),
    ("after_test_iter", 0, (F, L)),
    ("after_test_epoch", None, (F, L)),
    ("after_run", None, (F, L)),
]


def test_golden_sequence_of_a_two_epoch_run(
    runner_kwargs: dict[str, Any], make_loader: Any, calls: Any
) -> None:
    # Only the optimizer among the defaults (runner_kwargs), so that adding default hooks
    # elsewhere does not change this sequence; the OptimizerHook's own points do.
    runner = Runner(
        **{**runner_kwargs, "train_dataloader": make_loader(2), "val_dataloader": make_loader(1, seed=2)},
        test_dataloader=make_loader(1, seed=3),
    )
    # Registered in the opposite order of their priorities: the order must come from priority.
    runner.register_hook(calls.recorder(L), priority="LOWEST", name=L)
    runner.register_hook(calls.recorder(F), priority="HIGHEST", name=F)

    # What pluggy calls, per hook call, in call order (its monitoring API sees every impl)...
    monitored: list[tuple[str, int | None, tuple[str, ...]]] = []

    def before(point: str, impls: Any, kwargs: dict[str, Any]) -> None:
        names = tuple(impl.plugin_name for impl in reversed(impls))  # pluggy calls from the end
        monitored.append((point, kwargs.get("batch_idx"), names))

    runner._pm.add_hookcall_monitoring(before, lambda *args: None)
    # ... and where, among the recorders' calls, the optimizer really stepped.
    step = runner.optimizer.step

    def recorded_step(*args: Any, **kwargs: Any) -> Any:
        calls.append(("after_train_iter", calls[-1][1], OPT))
        return step(*args, **kwargs)

    runner.optimizer.step = recorded_step  # type: ignore[method-assign]

    runner.run()

    assert monitored == GOLDEN_RUN
    executed = [
        (point, idx, name)
        for point, idx, names in GOLDEN_RUN
        for name in names
        if name != OPT or point == "after_train_iter"
    ]
    assert calls == executed
    assert (runner.epoch, runner.iter) == (2, 4)


# SPEC section 4: the built-in hooks' priorities.
BUILT_IN_PRIORITIES = {
    "OptimizerHook": Priority.HIGH,
    "Fp16OptimizerHook": Priority.HIGH,
    "GradientCumulativeOptimizerHook": Priority.HIGH,
    "DistSamplerSeedHook": Priority.NORMAL,
    "SyncBuffersHook": Priority.NORMAL,
    "EmptyCacheHook": Priority.NORMAL,
    "IterTimerHook": Priority.NORMAL,
    "LoggerHook": Priority.BELOW_NORMAL,
    "TextLoggerHook": Priority.BELOW_NORMAL,
    "ParamSchedulerHook": Priority.LOW,
    "CheckpointHook": Priority.VERY_LOW,
}


def test_default_hooks_order_follows_the_priority_table(runner_kwargs: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in runner_kwargs.items() if k != "default_hooks"}
    runner = Runner(**kwargs, autoload_plugins=False)  # the full default set, nothing installed

    # Registered in DEFAULT_HOOKS order, each with the class default priority of the table.
    plugins = runner._pm.list_name_plugin()
    assert [type(p).__name__ for _, p in plugins] == [
        HOOKS.get(cfg["type"]).__name__
        for cfg in DEFAULT_HOOKS.values()  # type: ignore[union-attr]
    ]
    for name, plugin in plugins:
        assert isinstance(plugin, Hook)
        if name in BUILT_IN_PRIORITIES:
            assert get_priority(plugin.priority) == BUILT_IN_PRIORITIES[name], name

    # Per point: the hooks implementing it, by priority, ties in registration order.
    expected: dict[str, list[str]] = {}
    for point in HOOK_POINTS:
        ranked = sorted(
            (get_priority(plugin.priority), seq, name)
            for seq, (name, plugin) in enumerate(plugins)
            if point in plugin.hook_points()
        )
        expected[point] = [f"{name} ({priority_name(value)})" for value, _, name in ranked]
    assert runner.get_hooks_info() == expected
    assert expected["after_train_iter"][0] == "OptimizerHook (HIGH)"

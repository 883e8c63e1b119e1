"""HOOKS / Registry: registering, building from configs, and config errors at construction."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

from pluginloop import HOOKS, ConfigError, Hook, Priority, Registry, Runner
from pluginloop.registry import check_arguments


class IntervalHook(Hook):
    """A hook with the arguments of CheckpointHook-like hooks."""

    def __init__(self, interval: int = 1, by_epoch: bool = True, rate: float = 1.0) -> None:
        self.interval, self.by_epoch, self.rate = interval, by_epoch, rate

    def after_train_iter(self, runner: Any, batch_idx: int) -> None:
        pass


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """IntervalHook in HOOKS for this test only (the table is restored afterwards)."""
    monkeypatch.setattr(HOOKS, "_classes", dict(HOOKS._classes))
    HOOKS.register_module(module=IntervalHook)


# -- register_module ----------------------------------------------------------------------


def test_register_module_as_decorator_under_the_class_name() -> None:
    registry = Registry("THINGS")

    @registry.register_module()
    class Thing:
        pass

    assert registry.get("Thing") is Thing
    assert "Thing" in registry
    assert registry.names() == ["Thing"]


def test_register_module_with_a_name() -> None:
    registry = Registry("THINGS")

    @registry.register_module(name="thing")
    class Thing:
        pass

    assert registry.get("thing") is Thing
    assert registry.get("Thing") is None


def test_duplicate_name_is_refused_unless_forced() -> None:
    registry = Registry("THINGS")

    @registry.register_module(name="x")
    class First:
        pass

    class Second:
        pass

    with pytest.raises(KeyError, match=r"'x' is already registered in THINGS.*force=True"):
        registry.register_module(name="x")(Second)
    assert registry.get("x") is First
    registry.register_module(name="x")(First)  # the same class again is harmless
    registry.register_module(name="x", force=True)(Second)
    assert registry.get("x") is Second


def test_fallbacks_and_extra_names_serve_unregistered_names() -> None:
    registry = Registry("THINGS")

    class Installed:
        def __init__(self, size: int = 1) -> None:
            self.size = size

    registry.fallbacks.append({"installed": Installed}.get)
    registry.extra_names.append(lambda: ["installed"])
    assert registry.get("installed") is Installed
    assert registry.build({"type": "installed", "size": 3}).size == 3
    with pytest.raises(ConfigError, match="did you mean 'installed'"):
        registry.build({"type": "instaled"}, key="k")


# -- build ----------------------------------------------------------------------------------


def test_build_with_type_as_name_or_class() -> None:
    by_name = HOOKS.build(dict(type="IntervalHook", interval=3))
    by_class = HOOKS.build(dict(type=IntervalHook, interval=4))
    assert isinstance(by_name, IntervalHook) and by_name.interval == 3
    assert isinstance(by_class, IntervalHook) and by_class.interval == 4


def test_build_returns_objects_as_they_are() -> None:
    hook = IntervalHook()
    assert HOOKS.build(hook) is hook


@pytest.mark.parametrize("given, value", [("above_normal", 40), (Priority.LOW, 70), (15, 15)])
def test_priority_in_config_is_set_on_the_hook(given: Any, value: int) -> None:
    hook = HOOKS.build(dict(type="IntervalHook", priority=given))
    assert hook.priority == value
    assert IntervalHook.priority == Priority.NORMAL  # the class default is untouched


def test_unknown_type_suggests_close_names() -> None:
    with pytest.raises(
        ConfigError, match="unknown hook type 'IntervalHok'; did you mean 'IntervalHook'"
    ) as info:
        HOOKS.build(dict(type="IntervalHok"), key="custom_hooks[0]")
    assert info.value.key == "custom_hooks[0].type"


def test_unexpected_argument_answers_did_you_mean() -> None:
    """The design document's own typo: internal=5 for interval=5."""
    with pytest.raises(ConfigError, match=r"did you mean 'interval'\?") as info:
        HOOKS.build(dict(type="IntervalHook", internal=5), key="custom_hooks[0]")
    message = str(info.value)
    assert message.startswith("custom_hooks[0]: ")
    assert "unexpected argument 'internal'" in message
    assert "interval, by_epoch, rate" in message  # the valid arguments are listed


@pytest.mark.parametrize(
    "arg, value",
    [("interval", "5"), ("interval", 2.5), ("interval", True), ("by_epoch", 1), ("rate", "fast")],
)
def test_wrong_value_type_names_the_argument(arg: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"argument '{arg}' must be (int|bool|float), got ") as info:
        HOOKS.build({"type": "IntervalHook", arg: value}, key="custom_hooks[2]")
    assert info.value.key == f"custom_hooks[2].{arg}"
    assert repr(value) in str(info.value)


def test_int_is_a_valid_float() -> None:
    assert HOOKS.build(dict(type="IntervalHook", rate=2)).rate == 2


def test_missing_type_is_reported() -> None:
    with pytest.raises(ConfigError, match="needs a 'type' key") as info:
        HOOKS.build(dict(interval=5), key="default_hooks.checkpoint")
    assert info.value.key == "default_hooks.checkpoint"


def test_type_that_is_neither_name_nor_class() -> None:
    with pytest.raises(ConfigError, match="'type' must be a name or a class"):
        HOOKS.build(dict(type=5), key="custom_hooks[0]")


def test_bad_priority_in_config_lists_the_levels() -> None:
    with pytest.raises(ConfigError, match=r"unknown priority 'TOP'.*HIGHEST.*LOWEST") as info:
        HOOKS.build(dict(type="IntervalHook", priority="TOP"), key="custom_hooks[0]")
    assert info.value.key == "custom_hooks[0].priority"


def test_check_arguments_accepts_what_binds_and_leaves_given_ones_out() -> None:
    def target(params: Any, lr: float, momentum: float = 0.0) -> None:
        pass

    check_arguments(target, {"lr": 0.1}, "optimizer", given=["params"])
    with pytest.raises(ConfigError, match="did you mean 'momentum'") as info:
        check_arguments(target, {"lr": 0.1, "momentun": 0.9}, "optimizer", given=["params"])
    assert "params" not in str(info.value).split("valid arguments:")[1]


# -- every mistake fails in the Runner constructor, before any data is read ----------------

HOOK_MISTAKES = [
    (
        dict(custom_hooks=[dict(type="IntervalHook"), dict(type="IntervalHok")]),
        "custom_hooks[1].type",
        "did you mean 'IntervalHook'",
    ),
    (
        dict(custom_hooks=dict(type="IntervalHook", internal=5)),  # one dict, as the document writes
        "custom_hooks[0]",
        "did you mean 'interval'?",
    ),
    (dict(custom_hooks=[dict(type="IntervalHook", interval="5")]), "custom_hooks[0].interval", "must be"),
    (
        dict(custom_hooks=[dict(type="IntervalHook", priority="SUPER")]),
        "custom_hooks[0].priority",
        "ABOVE_NORMAL",
    ),
    (dict(custom_hooks=[dict(interval=5)]), "custom_hooks[0]", "'type'"),
    (
        dict(default_hooks=dict(extra=dict(type="IntervalHook", internal=5))),
        "default_hooks.extra",
        "did you mean 'interval'?",
    ),
    (
        dict(default_hooks=dict(optimizer=dict(type="OptimiserHook"))),
        "default_hooks.optimizer.type",
        "did you mean 'OptimizerHook'",
    ),
    (dict(default_hooks=[dict(type="IntervalHook")]), "default_hooks", "dict of name -> hook config"),
]


@pytest.mark.parametrize("mistake, key, hint", HOOK_MISTAKES)
def test_hook_config_mistakes_fail_in_the_constructor_before_data(
    mistake: dict[str, Any], key: str, hint: str, untouchable_loader: Any, tmp_path: Any
) -> None:
    with pytest.raises(ConfigError) as info:
        Runner(
            model=nn.Linear(4, 1),
            work_dir=tmp_path,
            train_dataloader=untouchable_loader,
            val_dataloader=untouchable_loader,
            optimizer=dict(type="SGD", lr=0.1),
            max_epochs=1,
            device="cpu",
            **mistake,
        )
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")
    assert hint in str(info.value)


def test_a_valid_config_builds_and_registers(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(
        **runner_kwargs,
        custom_hooks=[
            dict(type="IntervalHook", interval=2),
            dict(type=IntervalHook, interval=3, priority="VERY_HIGH"),
        ],
    )
    assert runner.get_hooks_info()["after_train_iter"] == [
        "IntervalHook-1 (VERY_HIGH)",
        "OptimizerHook (HIGH)",
        "IntervalHook (NORMAL)",
    ]

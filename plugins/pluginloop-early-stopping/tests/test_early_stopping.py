"""EarlyStoppingHook: rules, patience, thresholds, state in checkpoints."""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace
from typing import Any

import pytest
from pluginloop_early_stopping import EarlyStoppingHook, infer_rule

from pluginloop import ConfigError, HookCallError
from pluginloop.plugins import list_plugins


def _feed(hook: EarlyStoppingHook, values: list[float]) -> list[bool]:
    """should_stop after each validation value, on a stand-in runner."""
    runner = SimpleNamespace(should_stop=False, epoch=0, logger=logging.getLogger("test"))
    out = []
    for value in values:
        hook.after_val_epoch(runner, {hook.monitor: value})  # type: ignore[arg-type]
        out.append(runner.should_stop)
    return out


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("acc", "greater"),
        ("val/accuracy", "greater"),
        ("top1_acc", "greater"),
        ("f1", "greater"),
        ("precision", "greater"),
        ("recall", "greater"),
        ("auc", "greater"),
        ("mAP", "greater"),
        ("mIoU", "greater"),
        ("loss", "less"),
        ("val_loss", "less"),
        ("error", "less"),
        ("top5_err", "less"),
    ],
)
def test_the_rule_is_inferred_from_the_metric_name(name: str, rule: str) -> None:
    assert infer_rule(name) == rule


@pytest.mark.parametrize("name", ["bleu", "heatmap_loss"])
def test_an_unclear_name_asks_for_a_rule(make_runner: Any, name: str) -> None:
    with pytest.raises(ConfigError, match=f"custom_hooks\\[0\\].*monitor '{name}'.*pass rule='greater'"):
        make_runner(custom_hooks=[dict(type="early_stopping", monitor=name)])
    make_runner(custom_hooks=[dict(type="early_stopping", monitor=name, rule="greater")])


def test_patience_counts_validations_without_improvement() -> None:
    assert _feed(EarlyStoppingHook("acc", patience=2), [0.5, 0.6, 0.6, 0.7, 0.65, 0.7]) == [
        False,
        False,
        False,
        False,
        False,
        True,
    ]


def test_min_delta_is_the_smallest_improvement_that_counts() -> None:
    assert _feed(EarlyStoppingHook("loss", patience=2, min_delta=0.1), [1.0, 0.95, 0.91]) == [
        False,
        False,
        True,
    ]


def test_a_non_finite_metric_stops_at_once_unless_told_otherwise() -> None:
    assert _feed(EarlyStoppingHook("loss"), [1.0, math.nan]) == [False, True]
    assert _feed(EarlyStoppingHook("loss", check_finite=False), [1.0, math.nan]) == [False, False]


def test_the_stopping_threshold_stops_when_reached() -> None:
    assert _feed(EarlyStoppingHook("acc", stopping_threshold=0.9), [0.5, 0.9]) == [False, True]
    assert _feed(EarlyStoppingHook("loss", stopping_threshold=0.1), [0.5, 0.2, 0.05]) == [False, False, True]


def test_it_stops_a_run_through_should_stop_and_logs_the_rule(make_runner: Any) -> None:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("pluginloop").addHandler(handler)
    try:
        # lr 0: the loss never improves, so the second validation exhausts patience=1.
        runner = make_runner(
            optimizer=dict(type="SGD", lr=0.0),
            max_epochs=10,
            custom_hooks=[dict(type="early_stopping", monitor="loss", patience=1)],
        )
        runner.train()
    finally:
        logging.getLogger("pluginloop").removeHandler(handler)
    assert (runner.epoch, runner.should_stop) == (2, True)
    assert any(
        line.startswith("early stopping after epoch 2: loss has not improved") and "(patience)" in line
        for line in lines
    )


def test_its_state_is_saved_in_checkpoints_and_restored(make_runner: Any) -> None:
    runner = make_runner(
        custom_hooks=[dict(type="EarlyStoppingHook", monitor="acc", patience=3)], max_epochs=1
    )
    runner.train()
    [hook] = [h for h in runner._pm.get_plugins() if isinstance(h, EarlyStoppingHook)]
    hook.wait_count = 2
    path = runner.save_checkpoint("epoch_1.pth")
    resumed = make_runner(
        custom_hooks=[dict(type="EarlyStoppingHook", monitor="acc", patience=3)], resume=str(path)
    )
    resumed._load_or_resume()
    [again] = [h for h in resumed._pm.get_plugins() if isinstance(h, EarlyStoppingHook)]
    assert again.state_dict() == {"best": hook.best, "wait_count": 2} and hook.best is not None


def test_a_monitor_that_is_not_a_metric_fails_naming_the_metrics(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[dict(type="early_stopping", monitor="accuracy")], max_epochs=1)
    with pytest.raises(
        HookCallError, match="monitor 'accuracy' is not a validation metric; the metrics are acc, loss"
    ):
        runner.train()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rule": "bigger"}, "rule must be"),
        ({"patience": 0}, "patience must be"),
        ({"min_delta": -1}, "min_delta"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EarlyStoppingHook("acc", **kwargs)


def test_installed_it_is_available_but_not_loaded_without_configuration(monkeypatch: Any) -> None:
    monkeypatch.delenv("PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("PLUGINLOOP_PLUGINS", raising=False)
    [info] = [p for p in list_plugins() if p.name == "early_stopping"]
    assert info.status == "available" and "monitor" not in info.hook_points

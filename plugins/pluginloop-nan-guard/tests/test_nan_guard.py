"""CheckInvalidLossHook: a NaN/inf loss stops the run before the step; no non-finite checkpoint."""

from __future__ import annotations

import math
from typing import Any

import importlib_metadata
import pytest
import torch
from pluginloop_nan_guard import CheckInvalidLossHook
from torch.nn import functional

from pluginloop import HookCallError


def _loss_turning(value: float, at_call: int) -> Any:
    """cross_entropy, except that training call number ``at_call`` (from 0) returns ``value``."""
    calls = [0]

    def loss_fn(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = functional.cross_entropy(preds, targets)
        if torch.is_grad_enabled():
            calls[0] += 1
            if calls[0] - 1 == at_call:
                return loss * value
        return loss

    return loss_fn


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_loss_stops_the_run_naming_epoch_iteration_and_value(
    make_runner: Any, value: float
) -> None:
    runner = make_runner(custom_hooks=[dict(type="nan_guard")], loss_fn=_loss_turning(value, at_call=5))
    with pytest.raises(HookCallError) as info:
        runner.train()
    cause = info.value.__cause__
    assert isinstance(cause, FloatingPointError)
    assert f"the loss is {value} at epoch 1, iteration 5 (batch 1 of the epoch" in str(cause)
    assert info.value.plugin_name == "CheckInvalidLossHook"
    # It ran before OptimizerHook's step: the weights never saw the bad loss.
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_it_runs_before_the_optimizer_step(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[CheckInvalidLossHook()])
    names = [e.rsplit(" (", 1)[0] for e in runner.get_hooks_info()["after_train_iter"]]
    assert names.index("CheckInvalidLossHook") < names.index("OptimizerHook")


def test_interval_checks_every_nth_iteration_only(make_runner: Any) -> None:
    # NaN at iteration 0 is stepped into the weights; the check at iteration 1 catches it.
    runner = make_runner(custom_hooks=[CheckInvalidLossHook(interval=2)], loss_fn=_loss_turning(math.nan, 0))
    with pytest.raises(HookCallError, match="the loss is nan at epoch 0, iteration 1"):
        runner.train()


def test_a_checkpoint_with_non_finite_weights_is_not_written(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[CheckInvalidLossHook(interval=1000)])
    with torch.no_grad():
        runner.model[0].weight[0, 0] = math.nan
    with pytest.raises(FloatingPointError, match=r"weight '0\.weight' is not finite"):
        runner.save_checkpoint("bad.pth")
    assert not (runner.work_dir / "bad.pth").exists()
    assert CheckInvalidLossHook(check_weights=False).hook_points() == ("after_train_iter",)


def test_a_finite_run_is_untouched(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[CheckInvalidLossHook()])
    runner.train()
    assert runner.iter == 8


@pytest.mark.parametrize("interval", [0, -1, 1.5, True])
def test_interval_must_be_a_positive_int(interval: Any) -> None:
    with pytest.raises(ValueError, match="interval must be a positive int"):
        CheckInvalidLossHook(interval=interval)


def test_the_package_declares_its_entry_point() -> None:
    [ep] = importlib_metadata.entry_points(group="pluginloop", name="nan_guard")
    assert ep.load() is CheckInvalidLossHook

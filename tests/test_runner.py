"""The Runner loop: counters, phases, batches, metrics, configs, errors, and the document's examples."""

from __future__ import annotations

import math
import traceback
import types
from collections import namedtuple
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import pluginloop
from pluginloop import HOOKS, ConfigError, Hook, HookCallError, Runner, get_priority
from pluginloop._data import to_device
from pluginloop.hooks import DEFAULT_HOOKS

# -- counters and phases --------------------------------------------------------------------


class Positions(Hook):
    """Records (point, runner.epoch, runner.iter, batch_idx) at the train points and after val/test."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, int | None]] = []

    def before_train_epoch(self, runner: Runner) -> None:
        self.seen.append(("before_train_epoch", runner.epoch, runner.iter, None))

    def after_train_iter(self, runner: Runner, batch_idx: int) -> None:
        self.seen.append(("after_train_iter", runner.epoch, runner.iter, batch_idx))

    def after_train_epoch(self, runner: Runner) -> None:
        self.seen.append(("after_train_epoch", runner.epoch, runner.iter, None))

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.seen.append(("after_val_epoch", runner.epoch, runner.iter, None))

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.seen.append(("after_test_epoch", runner.epoch, runner.iter, None))


def test_counters_count_completed_epochs_and_iterations(runner_kwargs: dict[str, Any]) -> None:
    hook = Positions()
    runner = Runner(**runner_kwargs, custom_hooks=hook)
    runner.train()
    assert hook.seen == [
        ("before_train_epoch", 0, 0, None),
        ("after_train_iter", 0, 0, 0),
        ("after_train_iter", 0, 1, 1),
        ("after_train_iter", 0, 2, 2),
        ("after_train_epoch", 0, 3, None),
        ("after_val_epoch", 1, 3, None),
        ("before_train_epoch", 1, 3, None),
        ("after_train_iter", 1, 3, 0),
        ("after_train_iter", 1, 4, 1),
        ("after_train_iter", 1, 5, 2),
        ("after_train_epoch", 1, 6, None),
        ("after_val_epoch", 2, 6, None),
    ]
    assert (runner.epoch, runner.iter) == (2, 6)


def test_val_every_val_interval_epochs_and_after_the_last(runner_kwargs: dict[str, Any]) -> None:
    hook = Positions()
    runner = Runner(**{**runner_kwargs, "max_epochs": 5, "val_interval": 2}, custom_hooks=hook)
    runner.train()
    assert [epoch for point, epoch, _, _ in hook.seen if point == "after_val_epoch"] == [2, 4, 5]


def test_run_tests_after_training_and_train_does_not(
    runner_kwargs: dict[str, Any], loaders: dict[str, Any], calls: Any
) -> None:
    runner = Runner(**runner_kwargs, test_dataloader=loaders["test"], custom_hooks=calls.recorder("r"))
    runner.train()
    assert not [c for c in calls if "test" in c[0]]
    calls.clear()
    runner = Runner(**runner_kwargs, test_dataloader=loaders["test"], custom_hooks=calls.recorder("r"))
    runner.run()
    points = [c[0] for c in calls]
    assert points.index("after_test_epoch") > max(i for i, p in enumerate(points) if p == "after_val_epoch")
    assert points[-2:] == ["after_test_epoch", "after_run"]
    assert points.count("before_test_epoch") == 1


def test_val_and_test_alone_return_their_metrics(
    runner_kwargs: dict[str, Any], loaders: dict[str, Any]
) -> None:
    runner = Runner(**runner_kwargs, test_dataloader=loaders["test"])
    before = runner.model.weight.detach().clone()
    val, test = runner.val(), runner.test()
    assert set(val) == {"loss"} and set(test) == {"loss"}
    x, y = loaders["test"].dataset.tensors
    assert test["loss"] == pytest.approx(nn.functional.mse_loss(runner.model(x), y).item(), rel=1e-5)
    assert torch.equal(before, runner.model.weight)  # evaluation does not train
    assert runner.model.training  # and leaves the model in train mode


def test_should_stop_from_a_hook_stops_between_iterations(runner_kwargs: dict[str, Any], calls: Any) -> None:
    class StopAt(Hook):
        def after_train_iter(self, runner: Runner, batch_idx: int) -> None:
            if runner.iter == 3:
                runner.should_stop = True

    runner = Runner(**runner_kwargs, custom_hooks=[StopAt(), calls.recorder("r")])
    runner.train()
    trained = [(c[0], c[1]) for c in calls if c[0] in ("before_train_iter", "after_train_iter")]
    assert trained[-2:] == [
        ("before_train_iter", 0),
        ("after_train_iter", 0),
    ]  # iteration 3: epoch 2, batch 0
    assert len(trained) == 8
    assert runner.iter == 4 and runner.should_stop
    assert [c[0] for c in calls][-1] == "after_run"


def test_max_iters_stops_mid_epoch(runner_kwargs: dict[str, Any]) -> None:
    hook = Positions()
    kwargs = {k: v for k, v in runner_kwargs.items() if k != "max_epochs"}
    runner = Runner(**kwargs, max_iters=4, custom_hooks=hook)
    assert runner.max_epochs == 2 and runner.max_iters == 4
    runner.train()
    iters = [(epoch, it, b) for point, epoch, it, b in hook.seen if point == "after_train_iter"]
    assert iters == [(0, 0, 0), (0, 1, 1), (0, 2, 2), (1, 3, 0)]
    assert runner.iter == 4
    assert [p for p, *_ in hook.seen][-2:] == [
        "after_train_epoch",
        "after_val_epoch",
    ]  # validated after the last


def test_max_iters_smaller_than_max_epochs_wins(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(**{**runner_kwargs, "max_epochs": 10}, max_iters=5)
    runner.train()
    assert runner.iter == 5 and runner.epoch == 2


def test_max_epochs_or_max_iters_is_required_to_train(model: nn.Module, loaders: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="max_epochs= or max_iters="):
        Runner(model=model, train_dataloader=loaders["train"], device="cpu")
    with pytest.raises(ConfigError, match="positive int") as info:
        Runner(model=model, train_dataloader=loaders["train"], max_epochs=0, device="cpu")
    assert info.value.key == "max_epochs"


# -- batches, model outputs, metrics, devices -----------------------------------------------


class DictData(Dataset[dict[str, torch.Tensor]]):
    """Hugging Face style samples: ``{'x': ..., 'labels': ...}``."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(5)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class LossModel(nn.Module):
    """Computes its own loss and returns it as a scalar, a dict or an object with ``.loss``."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.fc, self.style = nn.Linear(4, 1), style
        self.losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> Any:
        logits = self.fc(x)
        loss = nn.functional.mse_loss(logits, labels)
        self.losses.append(loss.item())
        if self.style == "scalar":
            return loss
        if self.style == "dict":
            return {"loss": loss, "preds": logits}
        return types.SimpleNamespace(loss=loss, logits=logits)  # like a transformers ModelOutput


@pytest.mark.parametrize("style", ["scalar", "dict", "object"])
@pytest.mark.parametrize("batches", ["mapping", "tuple"])
def test_model_computes_its_own_loss(style: str, batches: str, make_loader: Any, tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = LossModel(style)
    loader = DataLoader(DictData(6), batch_size=2) if batches == "mapping" else make_loader(3)
    before = model.fc.weight.detach().clone()
    runner = pluginloop.train(
        model=model,
        work_dir=tmp_path,
        train_dataloader=loader,
        val_dataloader=loader,
        optimizer=dict(type="SGD", lr=0.1),
        max_epochs=1,
        device="cpu",
        metrics={"mae": lambda p, t: (p - t).abs().mean()} if style != "scalar" else None,
        default_hooks={k: None for k in DEFAULT_HOOKS if k != "optimizer"},
    )
    assert len(model.losses) == 3 + 3  # 3 train + 3 val forwards
    assert runner.outputs["loss"].item() == pytest.approx(model.losses[2])
    assert not torch.equal(before, model.fc.weight)  # the optimizer hook stepped on that loss


def test_to_device_moves_every_tensor_of_nested_batches() -> None:
    Pair = namedtuple("Pair", "a b")
    batch = {"x": torch.ones(2), "pair": Pair(torch.zeros(1), "tag"), "list": [torch.ones(1), 3], "s": "text"}
    moved = to_device(batch, torch.device("meta"))
    assert moved["x"].device.type == "meta"
    assert (
        isinstance(moved["pair"], Pair) and moved["pair"].a.device.type == "meta" and moved["pair"].b == "tag"
    )
    assert moved["list"][0].device.type == "meta" and moved["list"][1] == 3
    assert moved["s"] == "text"


@pytest.mark.parametrize("kind", [tuple, list])
def test_to_device_moves_a_pair_only_when_it_is_elsewhere(kind: type) -> None:
    pair = kind([torch.ones(2), torch.zeros(2, dtype=torch.long)])
    assert to_device(pair, torch.device("cpu")) is pair  # already there: nothing to move
    moved = to_device(pair, torch.device("meta"))
    assert type(moved) is kind and [t.device.type for t in moved] == ["meta", "meta"]
    meta = torch.empty(1, device="meta")
    for elsewhere in ([torch.ones(1), meta], [meta, torch.ones(1)]):
        # either tensor not in host memory: the pair is moved (meta cannot be, so it raises)
        with pytest.raises(NotImplementedError, match="meta tensor"):
            to_device(kind(elsewhere), torch.device("cpu"))


def test_batches_and_outputs_are_on_the_runner_device(runner_kwargs: dict[str, Any]) -> None:
    devices: set[torch.device] = set()

    class Where(Hook):
        def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any, outputs: Any) -> None:
            devices.update({data_batch[0].device, data_batch[1].device, outputs["loss"].device})

    runner = Runner(**runner_kwargs, custom_hooks=Where())
    runner.train()
    assert devices == {runner.device} == {torch.device("cpu")}


def test_callable_metric_is_weighted_by_batch_size(model: nn.Module, tmp_path: Any) -> None:
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 4, generator=g), torch.randn(4, 1, generator=g)
    loader = DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=3)  # batches of 3 and 1
    runner = Runner(
        model=model,
        work_dir=tmp_path,
        val_dataloader=loader,
        loss_fn=nn.functional.mse_loss,
        metrics={"mae": lambda p, t: (p - t).abs().mean()},
        device="cpu",
    )
    metrics = runner.val()
    with torch.no_grad():
        preds = model(x)
    assert metrics["mae"] == pytest.approx((preds - y).abs().mean().item(), rel=1e-5)
    assert metrics["loss"] == pytest.approx(nn.functional.mse_loss(preds, y).item(), rel=1e-5)


class CountingMetric:
    """torchmetrics-style: update/compute/reset; counts the samples it saw."""

    def __init__(self) -> None:
        self.n, self.resets = 0, 0

    def update(self, preds: torch.Tensor, targets: torch.Tensor) -> None:
        self.n += len(targets)

    def compute(self) -> torch.Tensor:
        return torch.tensor(float(self.n))

    def reset(self) -> None:
        self.n, self.resets = 0, self.resets + 1


def test_stateful_metric_is_reset_updated_and_computed(runner_kwargs: dict[str, Any]) -> None:
    metric = CountingMetric()
    reported: list[dict[str, float]] = []

    class Report(Hook):
        def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
            reported.append(dict(metrics))

    runner = Runner(**runner_kwargs, metrics={"count": metric}, custom_hooks=Report())
    runner.train()
    assert [m["count"] for m in reported] == [4.0, 4.0]  # 2 val batches of 2, reset in between
    assert metric.resets == 2
    assert all(set(m) == {"loss", "count"} and isinstance(m["loss"], float) for m in reported)


def test_metric_that_is_neither_callable_nor_stateful_fails_at_construction(
    runner_kwargs: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError) as info:
        Runner(**runner_kwargs, metrics={"acc": 0.5})
    assert info.value.key == "metrics.acc"


# -- optimizer, schedulers, hooks from configs ----------------------------------------------


def test_optimizer_and_scheduler_are_built_from_dicts(runner_kwargs: dict[str, Any]) -> None:
    kwargs = {**runner_kwargs, "optimizer": dict(type="SGD", lr=0.05, momentum=0.9)}
    runner = Runner(
        **kwargs,
        scheduler=[dict(type="StepLR", step_size=2), dict(type="LinearLR", by_epoch=False, total_iters=3)],
    )
    assert isinstance(runner.optimizer, torch.optim.SGD)
    assert runner.optimizer.defaults["lr"] == 0.05 and runner.optimizer.defaults["momentum"] == 0.9
    assert {id(p) for p in runner.optimizer.param_groups[0]["params"]} == {
        id(p) for p in runner.model.parameters()
    }
    first, second = runner.param_schedulers
    assert isinstance(first.scheduler, torch.optim.lr_scheduler.StepLR) and first.by_epoch
    assert isinstance(second.scheduler, torch.optim.lr_scheduler.LinearLR) and not second.by_epoch
    assert first.scheduler.optimizer is runner.optimizer


def test_param_scheduler_is_an_alias_but_not_both(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(**runner_kwargs, param_scheduler=dict(type="StepLR", step_size=1))
    assert isinstance(runner.param_schedulers[0].scheduler, torch.optim.lr_scheduler.StepLR)
    with pytest.raises(ConfigError, match="not both"):
        Runner(
            **runner_kwargs,
            scheduler=dict(type="StepLR", step_size=1),
            param_scheduler=dict(type="StepLR", step_size=1),
        )


@pytest.mark.parametrize(
    "mistake, key, hint",
    [
        (dict(optimizer=dict(type="SDG", lr=0.1)), "optimizer.type", "did you mean 'SGD'"),
        (dict(optimizer=dict(type="SGD", lr=0.1, momentun=0.9)), "optimizer", "did you mean 'momentum'"),
        (dict(optimizer=dict(type="SGD", lr=0.1, momentum="high")), "optimizer.momentum", "must be float"),
        (dict(optimizer="SGD"), "optimizer", "dict(type=..., lr=...)"),
        (dict(scheduler=dict(type="StepLR", step_sise=2)), "scheduler", "did you mean 'step_size'"),
        (
            dict(scheduler=[dict(type="StepLR", step_size=2), dict(type="CosineAnealingLR", T_max=2)]),
            "scheduler[1].type",
            "did you mean 'CosineAnnealingLR'",
        ),
        (
            dict(scheduler=dict(type="StepLR", step_size=2.5)),
            "scheduler.step_size",
            "must be int, got float 2.5",
        ),
    ],
)
def test_bad_optimizer_or_scheduler_fails_in_constructor_before_data(
    mistake: dict[str, Any], key: str, hint: str, untouchable_loader: Any, tmp_path: Any
) -> None:
    kwargs: dict[str, Any] = {"optimizer": dict(type="SGD", lr=0.1), **mistake}
    with pytest.raises(ConfigError) as info:
        Runner(
            model=nn.Linear(4, 1),
            work_dir=tmp_path,
            train_dataloader=untouchable_loader,
            max_epochs=1,
            device="cpu",
            **kwargs,
        )
    assert info.value.key == key
    assert hint in str(info.value)


def test_default_hooks_merge_and_none_removes_a_default(runner_kwargs: dict[str, Any]) -> None:
    defaults = dict(runner_kwargs["default_hooks"], optimizer=None)
    runner = Runner(**{**runner_kwargs, "default_hooks": defaults})
    assert not any(runner.get_hooks_info().values())
    before = runner.model.weight.detach().clone()
    runner.train()
    assert torch.equal(before, runner.model.weight)  # no optimizer hook: no step

    class Extra(Hook):
        def after_train_iter(self, runner: Runner) -> None:
            pass

    defaults = dict(runner_kwargs["default_hooks"], extra=dict(type=Extra, priority="LOWEST"))
    runner = Runner(**{**runner_kwargs, "default_hooks": defaults})
    assert runner.get_hooks_info()["after_train_iter"] == ["OptimizerHook (HIGH)", "Extra (LOWEST)"]


def test_a_default_can_be_replaced_by_its_key(runner_kwargs: dict[str, Any]) -> None:
    defaults = dict(runner_kwargs["default_hooks"], optimizer=dict(type="OptimizerHook", priority="LOW"))
    runner = Runner(**{**runner_kwargs, "default_hooks": defaults})
    assert runner.get_hooks_info()["after_train_iter"] == ["OptimizerHook (LOW)"]


def test_custom_hooks_as_a_single_dict(
    runner_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HOOKS, "_classes", dict(HOOKS._classes))

    @HOOKS.register_module()
    class Single(Hook):
        def __init__(self, n: int = 0) -> None:
            self.n = n

        def before_run(self, runner: Runner) -> None:
            pass

    runner = Runner(**runner_kwargs, custom_hooks=dict(type="Single", n=3))
    assert runner.get_hooks_info()["before_run"][-1] == "Single (NORMAL)"
    assert runner._pm.get_plugin("Single").n == 3


@pytest.mark.parametrize("entry", ["CheckInvalidLossHook", 5, None, nn.Linear])
def test_custom_hook_that_is_not_a_hook_fails_at_construction(
    entry: Any, runner_kwargs: dict[str, Any]
) -> None:
    with pytest.raises(pluginloop.PluginLoopError, match=r"implements no hook point|Hook"):
        Runner(**runner_kwargs, custom_hooks=[entry])


# -- errors raised in hooks -----------------------------------------------------------------


class Boom(Hook):
    """Raises ValueError at a chosen iteration when ``armed``."""

    def __init__(self, armed: bool = True, at: int = 4) -> None:
        self.armed, self.at = armed, at

    def after_train_iter(self, runner: Runner, batch_idx: int) -> None:
        if self.armed and runner.iter == self.at:
            raise ValueError("boom")


def test_exception_in_a_hook_names_plugin_point_epoch_and_iteration(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(**runner_kwargs, custom_hooks=[Boom(armed=False), Boom(armed=True)])
    with pytest.raises(HookCallError) as info:
        runner.train()
    error = info.value
    assert (error.plugin_name, error.hook_name, error.epoch, error.iter) == (
        "Boom-1",
        "after_train_iter",
        1,
        4,
    )
    assert "'Boom-1'" in str(error) and "'after_train_iter'" in str(error)
    assert "epoch 1" in str(error) and "iteration 4" in str(error) and "boom" in str(error)
    assert isinstance(error.__cause__, ValueError) and str(error.__cause__) == "boom"
    frames = [f.name for f in traceback.extract_tb(error.__cause__.__traceback__)]
    assert frames[-1] == "after_train_iter"  # the original traceback is kept


def test_exception_in_an_epoch_hook_is_blamed_too(runner_kwargs: dict[str, Any]) -> None:
    class BadVal(Hook):
        def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
            raise KeyError("acc")

    with pytest.raises(HookCallError, match="'BadVal' failed in hook point 'after_val_epoch'") as info:
        Runner(**runner_kwargs, custom_hooks=BadVal()).train()
    assert isinstance(info.value.__cause__, KeyError)


def test_exception_in_the_model_propagates_unchanged(runner_kwargs: dict[str, Any]) -> None:
    class Broken(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("shape mismatch in the model")

    runner = Runner(**{**runner_kwargs, "model": Broken(4, 1)})
    with pytest.raises(RuntimeError, match="shape mismatch in the model") as info:
        runner.train()
    assert type(info.value) is RuntimeError


def test_train_function_builds_runs_and_returns_the_runner(runner_kwargs: dict[str, Any], calls: Any) -> None:
    runner = pluginloop.train(**runner_kwargs, custom_hooks=calls.recorder("r"))
    assert isinstance(runner, Runner)
    assert (runner.epoch, runner.iter) == (2, 6)
    assert calls[0][0] == "before_run" and calls[-1][0] == "after_run"


# -- the design document's examples ---------------------------------------------------------


def _register_check_invalid_loss_hook() -> type[Hook]:
    """The design document's example, as written there (its assert-with-logging included)."""

    @HOOKS.register_module()
    class CheckInvalidLossHook(Hook):
        """Check invalid loss hook.

        This hook will regularly check whether the loss is valid during training.

        Args:
            interval (int): Checking interval (every k iterations). Defaults to 50.
        """

        def __init__(self, interval=50):  # type: ignore[no-untyped-def]
            self.interval = interval
            self.checked: list[int] = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):  # type: ignore[no-untyped-def]
            if self.every_n_iters(runner, self.interval):
                self.checked.append(runner.iter)
                assert torch.isfinite(runner.outputs["loss"]), runner.logger.info(
                    "loss become infinite or NaN!"
                )

    return CheckInvalidLossHook


@pytest.fixture
def check_invalid_loss_hook(monkeypatch: pytest.MonkeyPatch) -> type[Hook]:
    monkeypatch.setattr(HOOKS, "_classes", dict(HOOKS._classes))
    return _register_check_invalid_loss_hook()


def _plugin(runner: Runner, name: str) -> Any:
    return runner._pm.get_plugin(name)


def test_check_invalid_loss_hook_from_custom_hooks(
    runner_kwargs: dict[str, Any], check_invalid_loss_hook: type[Hook]
) -> None:
    custom_hooks = dict(dict(type="CheckInvalidLossHook", interval=2))  # the document's spelling
    runner = Runner(**runner_kwargs, custom_hooks=custom_hooks)
    runner.train()
    hook = _plugin(runner, "CheckInvalidLossHook")
    assert isinstance(hook, check_invalid_loss_hook)
    assert hook.checked == [1, 3, 5]
    assert runner.get_hooks_info()["after_train_iter"] == [
        "OptimizerHook (HIGH)",
        "CheckInvalidLossHook (NORMAL)",
    ]


def test_check_invalid_loss_hook_stops_on_nan(
    runner_kwargs: dict[str, Any], check_invalid_loss_hook: type[Hook]
) -> None:
    def nan_after_two(preds: torch.Tensor, targets: torch.Tensor, calls: list[int] = []) -> torch.Tensor:  # noqa: B006
        calls.append(1)
        loss = nn.functional.mse_loss(preds, targets)
        return loss * math.nan if len(calls) > 2 else loss

    runner = Runner(
        **{**runner_kwargs, "loss_fn": nan_after_two},
        custom_hooks=dict(type="CheckInvalidLossHook", interval=1, priority="VERY_HIGH"),
    )
    with pytest.raises(HookCallError, match="CheckInvalidLossHook") as info:
        runner.train()
    assert info.value.iter == 2 and isinstance(info.value.__cause__, AssertionError)


def test_check_invalid_loss_hook_above_normal_sits_after_high_before_normal(
    runner_kwargs: dict[str, Any], check_invalid_loss_hook: type[Hook]
) -> None:
    # With the full default set: whatever defaults exist, it runs after every default of
    # priority <= ABOVE_NORMAL and before every later one.
    kwargs = {k: v for k, v in runner_kwargs.items() if k != "default_hooks"}
    runner = Runner(
        **kwargs, custom_hooks=dict(type="CheckInvalidLossHook", interval=50, priority="ABOVE_NORMAL")
    )
    info = runner.get_hooks_info()["after_train_iter"]
    assert "OptimizerHook (HIGH)" in info
    position = info.index("CheckInvalidLossHook (ABOVE_NORMAL)")
    value = {entry: get_priority(entry.split("(")[1].rstrip(")")) for entry in info}
    assert all(value[e] <= 40 for e in info[:position])
    assert all(value[e] > 40 for e in info[position + 1 :])
    assert info.index("OptimizerHook (HIGH)") < position


def test_hook_helpers_truth_tables_over_a_run(runner_kwargs: dict[str, Any]) -> None:
    rows: list[tuple[Any, ...]] = []

    class Helpers(Hook):
        def after_train_iter(self, runner: Runner, batch_idx: int) -> None:
            rows.append(
                (
                    "iter",
                    runner.iter,
                    batch_idx,
                    self.every_n_iters(runner, 2),
                    self.every_n_inner_iters(batch_idx, 2),
                    self.end_of_epoch(runner.train_dataloader, batch_idx),
                    self.is_last_iter(runner),
                    self.is_last_epoch(runner),
                )
            )

        def after_train_epoch(self, runner: Runner) -> None:
            rows.append(("epoch", runner.epoch, self.every_n_epochs(runner, 2), self.is_last_epoch(runner)))

    runner = Runner(**{**runner_kwargs, "max_epochs": 3}, custom_hooks=Helpers())
    runner.train()
    T, F = True, False
    assert rows == [
        # kind    iter b  n_iters(2) inner(2) end_epoch last_iter last_epoch
        ("iter", 0, 0, F, F, F, F, F),
        ("iter", 1, 1, T, T, F, F, F),
        ("iter", 2, 2, F, F, T, F, F),
        ("epoch", 0, F, F),  # epoch, every_n_epochs(2), is_last_epoch
        ("iter", 3, 0, T, F, F, F, F),
        ("iter", 4, 1, F, T, F, F, F),
        ("iter", 5, 2, T, F, T, F, F),
        ("epoch", 1, T, F),
        ("iter", 6, 0, F, F, F, F, T),
        ("iter", 7, 1, T, T, F, F, T),
        ("iter", 8, 2, F, F, T, T, T),
        ("epoch", 2, F, T),
    ]


def test_last_iter_and_epoch_when_max_iters_ends_the_run(runner_kwargs: dict[str, Any]) -> None:
    rows: list[tuple[int, bool, bool]] = []

    class Last(Hook):
        def after_train_iter(self, runner: Runner, batch_idx: int) -> None:
            rows.append((runner.iter, self.is_last_iter(runner), self.is_last_epoch(runner)))

    runner = Runner(**{**runner_kwargs, "max_epochs": 5}, max_iters=4, custom_hooks=Last())
    runner.train()
    assert rows == [(0, False, False), (1, False, False), (2, False, False), (3, True, True)]


@pytest.mark.parametrize("n", [0, -1])
def test_every_n_helpers_are_false_for_non_positive_n(n: int) -> None:
    hook = Hook()
    runner = types.SimpleNamespace(epoch=3, iter=3)
    assert not hook.every_n_epochs(runner, n)  # type: ignore[arg-type]
    assert not hook.every_n_iters(runner, n)  # type: ignore[arg-type]
    assert not hook.every_n_inner_iters(3, n)


# -- the run's length ----------------------------------------------------------------------


def test_max_iters_is_the_planned_length_when_only_max_epochs_is_given(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(**runner_kwargs)  # 2 epochs of 3 batches
    assert (runner.max_epochs, runner.max_iters) == (2, 6)


def test_max_epochs_follows_from_max_iters_and_the_shorter_limit_wins(runner_kwargs: dict[str, Any]) -> None:
    del runner_kwargs["max_epochs"]
    assert (lambda r: (r.max_epochs, r.max_iters))(Runner(**runner_kwargs, max_iters=4)) == (2, 4)
    runner_kwargs["max_epochs"] = 1
    assert (lambda r: (r.max_epochs, r.max_iters))(Runner(**runner_kwargs, max_iters=100)) == (1, 3)


def test_an_empty_train_loader_fails_at_construction(runner_kwargs: dict[str, Any]) -> None:
    runner_kwargs["train_dataloader"] = DataLoader(torch.zeros(1, 4), batch_size=2, drop_last=True)
    with pytest.raises(ConfigError, match=r"train_dataloader: the train loader yields no batch"):
        Runner(**runner_kwargs)


def test_a_custom_hook_that_implements_nothing_names_its_config_entry(runner_kwargs: dict[str, Any]) -> None:
    expected = r"^custom_hooks\[1\]: .*implements no hook point"
    with pytest.raises(pluginloop.PluginValidationError, match=expected):
        Runner(**runner_kwargs, custom_hooks=[Hook(), types.SimpleNamespace()])

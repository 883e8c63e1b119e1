"""ParamSchedulerHook and scheduler configs: by epoch, by iteration, sequences, plateau."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as sched
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import SCHEDULERS, ConfigError, Hook, HookCallError, Runner
from pluginloop.hooks import DEFAULT_HOOKS

LR = 0.01


def _loader(batches: int) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    n = 2 * batches
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)),
                      batch_size=2)


class _LrLog(Hook):
    """The lr of group 0 that each training epoch / iteration runs with."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self.iters: list[float] = []

    def before_train_epoch(self, runner: Any) -> None:
        self.epochs.append(runner.optimizer.param_groups[0]["lr"])

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self.iters.append(runner.optimizer.param_groups[0]["lr"])


def _run(
    tmp_path: Any, scheduler: Any, epochs: int, batches: int = 1, **kwargs: Any
) -> tuple[Runner, _LrLog]:
    keep = ("optimizer", "param_scheduler")
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS if key not in keep}
    runner = Runner(
        model=nn.Linear(4, 1), work_dir=tmp_path, train_dataloader=_loader(batches),
        loss_fn=nn.functional.mse_loss, optimizer=dict(type="SGD", lr=LR), scheduler=scheduler,
        max_epochs=epochs, device="cpu", seed=0, default_hooks=hooks, **kwargs,
    )
    lrs = _LrLog()
    runner.register_hook(lrs)
    runner.train()
    return runner, lrs


def _by_hand(make: Callable[[torch.optim.Optimizer], Any], steps: int) -> list[float]:
    """The lr of each of ``steps`` steps of torch's scheduler, stepped after each one."""
    opt = torch.optim.SGD(nn.Linear(4, 1).parameters(), lr=LR)
    scheduler = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def test_the_seeds_multistep_example(tmp_path: Any) -> None:
    cfg = dict(type="MultiStepLR", by_epoch=True, milestones=[8, 11], gamma=0.1)
    _, lrs = _run(tmp_path, cfg, epochs=12)
    assert lrs.epochs == pytest.approx([0.01] * 8 + [0.001] * 3 + [0.0001])


def test_by_epoch_equals_torch_stepped_by_hand(tmp_path: Any) -> None:
    _, lrs = _run(tmp_path, dict(type="StepLR", step_size=2, gamma=0.5), epochs=6, batches=3)
    assert lrs.epochs == _by_hand(lambda o: sched.StepLR(o, step_size=2, gamma=0.5), 6)
    assert lrs.iters == [lr for lr in lrs.epochs for _ in range(3)]  # constant within an epoch


def test_by_iteration_equals_torch_stepped_by_hand(tmp_path: Any) -> None:
    _, lrs = _run(tmp_path, dict(type="ExponentialLR", gamma=0.9, by_epoch=False), epochs=3, batches=4)
    assert lrs.iters == _by_hand(lambda o: sched.ExponentialLR(o, gamma=0.9), 12)


@pytest.mark.parametrize("end_factor", [1.0, 0.5])
@pytest.mark.parametrize("by_epoch", [False, True])
def test_warmup_then_cosine_equals_sequential_lr(tmp_path: Any, by_epoch: bool, end_factor: float) -> None:
    warmup: dict[str, Any] = dict(start_factor=0.1, end_factor=end_factor, total_iters=5)
    cfg = [
        dict(type="LinearLR", by_epoch=by_epoch, end=5, **warmup),
        dict(type="CosineAnnealingLR", by_epoch=by_epoch, begin=5, T_max=10, eta_min=1e-4),
    ]
    _, lrs = _run(tmp_path, cfg, epochs=15 if by_epoch else 3, batches=1 if by_epoch else 5)
    expected = _by_hand(lambda o: sched.SequentialLR(
        o, [sched.LinearLR(o, **warmup), sched.CosineAnnealingLR(o, T_max=10, eta_min=1e-4)], milestones=[5]
    ), 15)
    assert (lrs.epochs if by_epoch else lrs.iters) == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(LR * 0.1) and min(expected) < LR * 0.1  # it warmed up, then decayed


def test_a_later_scheduler_does_not_move_the_lr_at_construction(tmp_path: Any) -> None:
    cfg = dict(type="LinearLR", start_factor=0.5, total_iters=2, begin=3)
    _, lrs = _run(tmp_path, cfg, epochs=7)
    assert lrs.epochs == pytest.approx([LR] * 3 + [LR * 0.5, LR * 0.75, LR, LR])


def test_schedulers_active_together_compose(tmp_path: Any) -> None:
    cfg = [  # an iteration warmup under an epoch schedule, as in MMEngine configs
        dict(type="LinearLR", by_epoch=False, start_factor=0.5, total_iters=2, end=2),
        dict(type="StepLR", step_size=1, gamma=0.1),
    ]
    _, lrs = _run(tmp_path, cfg, epochs=2, batches=3)
    assert lrs.iters == pytest.approx([LR * 0.5, LR * 0.75, LR, LR * 0.1, LR * 0.1, LR * 0.1])


def test_reduce_on_plateau_steps_with_the_monitored_metric(tmp_path: Any) -> None:
    scores = iter([1.0] + [2.0] * 7)  # the last two for the standalone val() calls
    cfg = dict(type="ReduceLROnPlateau", mode="max", patience=1, factor=0.5, monitor="score")
    runner, lrs = _run(tmp_path, cfg, epochs=6, val_dataloader=_loader(1),
                       metrics={"score": lambda preds, targets: next(scores)})
    by_hand = _by_hand(lambda o: _FeedScores(o, [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]), 6)
    assert lrs.epochs == by_hand == pytest.approx([LR, LR, LR, LR, LR / 2, LR / 2])
    runner.val()  # standalone validations do not step the schedule (two would reduce the lr)
    runner.val()
    assert runner.optimizer is not None and runner.optimizer.param_groups[0]["lr"] == pytest.approx(LR / 4)


class _FeedScores:
    """ReduceLROnPlateau stepped with a fixed score sequence, for _by_hand."""

    def __init__(self, opt: torch.optim.Optimizer, scores: list[float]) -> None:
        self.inner = sched.ReduceLROnPlateau(opt, mode="max", patience=1, factor=0.5)
        self.scores = iter(scores)

    def step(self) -> None:
        self.inner.step(next(self.scores))


def test_reduce_on_plateau_names_the_metrics_it_could_use(tmp_path: Any) -> None:
    cfg = dict(type="ReduceLROnPlateau", monitor="acc")
    with pytest.raises(HookCallError) as info:
        _run(tmp_path, cfg, epochs=1, val_dataloader=_loader(1), metrics={"accuracy": lambda p, t: 1.0})
    assert "monitors 'acc', but validation reported only accuracy, loss" in str(info.value.__cause__)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (dict(type="MultiStepLR", milestone=[8]), r"scheduler: .*did you mean 'milestones'"),
        (dict(type="MultiStepRL", milestones=[8]), r"scheduler\.type: .*did you mean 'MultiStepLR'"),
        (dict(type="StepLR", step_size=1, by_epoch="yes"), r"scheduler\.by_epoch"),
        (dict(type="StepLR", step_size=1, begin=-1), r"scheduler\.begin: .*non-negative"),
        (dict(type="StepLR", step_size=1, begin=5, end=5), r"scheduler\.end: .*greater than begin"),
        (dict(type="StepLR", step_size=1, end=2.5), r"scheduler\.end"),
        (dict(type="StepLR", step_size=1, monitor="acc"), r"scheduler\.monitor: .*only used by ReduceLROnP"),
        ([dict(type="StepLR", step_size=1), dict(type="LinearLR", total_iter=3)], r"scheduler\[1\]"),
    ],
)
def test_scheduler_config_mistakes_fail_at_construction(tmp_path: Any, cfg: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Runner(model=nn.Linear(4, 1), work_dir=tmp_path, optimizer=dict(type="SGD", lr=LR), scheduler=cfg,
               device="cpu")


def test_a_registered_scheduler_is_usable_by_name(tmp_path: Any) -> None:
    @SCHEDULERS.register_module()
    class HalveEveryEpochLR(sched.LambdaLR):
        def __init__(self, optimizer: torch.optim.Optimizer, floor: float = 0.0) -> None:
            super().__init__(optimizer, lambda epoch: max(floor, 0.5**epoch))

    try:
        _, lrs = _run(tmp_path, dict(type="HalveEveryEpochLR", floor=0.2), epochs=4)
        assert lrs.epochs == pytest.approx([LR, LR / 2, LR / 4, LR * 0.2])
        with pytest.raises(ConfigError, match="did you mean 'floor'"):
            _run(tmp_path, dict(type="HalveEveryEpochLR", flor=0.2), epochs=1)
    finally:
        SCHEDULERS._classes.pop("HalveEveryEpochLR")


def test_the_hook_is_a_default_and_runs_after_the_optimizer(tmp_path: Any) -> None:
    runner = Runner(model=nn.Linear(4, 1), work_dir=tmp_path, device="cpu")
    order = runner.get_hooks_info()["after_train_iter"]
    assert order.index("ParamSchedulerHook (LOW)") > order.index("OptimizerHook (HIGH)")
    assert math.isinf(runner.max_iters)

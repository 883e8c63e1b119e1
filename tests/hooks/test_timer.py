"""IterTimerHook: data_time, time and ETA from a fake clock the data and the model advance."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pluginloop import Hook, Priority, Runner, get_priority
from pluginloop.hooks import DEFAULT_HOOKS, IterTimerHook
from pluginloop.hooks import timer as timer_module

LOAD = 0.25  # fake seconds to read one sample (batches of 2: 0.5 s of data_time)
STEP = 1.0  # fake seconds of one forward


@pytest.fixture
def runner_kwargs(runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shared tiny run without installed plugins: these tests pin exact hooks, lines and files."""
    return {**runner_kwargs, "autoload_plugins": False}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class SlowDataset(Dataset[Any]):
    def __init__(self, clock: Clock, n: int) -> None:
        self.clock, self.n = clock, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        self.clock.now += LOAD
        return torch.zeros(4), torch.zeros(1)


class Probe(Hook):
    """Copies what the timer published at each iteration (runs after it: LOWEST)."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.train: list[dict[str, Any]] = []
        self.val: list[Any] = []

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        hub = runner.message_hub
        self.train.append({k: hub.latest[k] for k in ("data_time", "time", "eta")})

    def after_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.val.append(runner.message_hub.latest.get("val/eta", -1.0))


@pytest.fixture
def clock(monkeypatch: Any) -> Clock:
    clock = Clock()
    monkeypatch.setattr(timer_module, "perf_counter", clock)
    return clock


def make_runner(runner_kwargs: dict[str, Any], clock: Clock, probe: Probe, **kwargs: Any) -> Runner:
    def loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        clock.now += STEP
        return nn.functional.mse_loss(preds, targets)

    return Runner(
        **{
            **runner_kwargs,
            "train_dataloader": DataLoader(SlowDataset(clock, 6), batch_size=2),  # 3 iterations per epoch
            "val_dataloader": DataLoader(SlowDataset(clock, 4), batch_size=2),
            "loss_fn": loss,
            "default_hooks": {k: None for k in DEFAULT_HOOKS if k not in ("optimizer", "timer")},
            "custom_hooks": [probe],
            **kwargs,
        }
    )


def test_data_time_and_time_are_published_per_iteration(runner_kwargs: dict[str, Any], clock: Clock) -> None:
    probe = Probe()
    runner = make_runner(runner_kwargs, clock, probe)
    runner.run()
    assert len(probe.train) == 6
    for published in probe.train:
        assert published["data_time"] == pytest.approx(2 * LOAD)
        assert published["time"] == pytest.approx(2 * LOAD + STEP)  # data included
        assert type(published["time"]) is float and type(published["data_time"]) is float
    # Averaged by the hub's window (nobody read it: it spans the run).
    assert runner.message_hub.means("train") == {"data_time": pytest.approx(0.5), "time": pytest.approx(1.5)}


def test_eta_is_the_remaining_iterations_times_the_mean_time(
    runner_kwargs: dict[str, Any], clock: Clock
) -> None:
    probe = Probe()
    make_runner(runner_kwargs, clock, probe).run()
    etas = [p["eta"] for p in probe.train]
    assert etas == pytest.approx([1.5 * remaining for remaining in (5, 4, 3, 2, 1, 0)])


def test_eta_after_a_resume_counts_remaining_iterations_and_this_process_times(
    runner_kwargs: dict[str, Any], clock: Clock
) -> None:
    probe = Probe()
    runner = make_runner(runner_kwargs, clock, probe, max_epochs=4)
    runner.epoch, runner.iter = 2, 6  # as a resume from the end of epoch 2 leaves them
    runner.run()
    etas = [p["eta"] for p in probe.train]
    # 12 iterations in all, 6 left: the 6 done before the resume take no time of this process.
    assert etas == pytest.approx([1.5 * remaining for remaining in (5, 4, 3, 2, 1, 0)])


def test_eta_follows_max_iters_when_it_ends_training_early(
    runner_kwargs: dict[str, Any], clock: Clock
) -> None:
    probe = Probe()
    runner = make_runner(runner_kwargs, clock, probe, max_epochs=None, max_iters=4)
    runner.run()
    assert [p["eta"] for p in probe.train] == pytest.approx([4.5, 3.0, 1.5, 0.0])


def test_val_loop_time_and_eta_are_published_under_val(runner_kwargs: dict[str, Any], clock: Clock) -> None:
    probe = Probe()
    runner = make_runner(runner_kwargs, clock, probe, max_epochs=1)
    runner.run()
    assert probe.val == pytest.approx([1.5, 0.0])  # 2 validation batches of 1.5 s
    hub = runner.message_hub
    assert hub.means("val") == {"data_time": pytest.approx(0.5), "time": pytest.approx(1.5)}
    assert set(hub.means("train")) == {"data_time", "time"}  # the val loop's windows are apart


def test_test_loop_is_timed_under_test(runner_kwargs: dict[str, Any], clock: Clock) -> None:
    runner = make_runner(runner_kwargs, clock, Probe(), test_dataloader=DataLoader(SlowDataset(clock, 6), 2))
    runner.test()
    hub = runner.message_hub
    assert hub.means("test") == {"data_time": pytest.approx(0.5), "time": pytest.approx(1.5)}
    assert hub.latest["test/eta"] == 0.0


def test_without_a_loader_length_there_is_no_eta(runner_kwargs: dict[str, Any], clock: Clock) -> None:
    class Stream(torch.utils.data.IterableDataset[Any]):
        def __iter__(self) -> Any:
            return iter([(torch.zeros(4), torch.zeros(1))] * 4)

    probe = Probe()
    runner = make_runner(runner_kwargs, clock, probe, val_dataloader=DataLoader(Stream(), batch_size=2))
    runner.val()
    assert probe.val == [-1.0, -1.0] and "val/time" in runner.message_hub.latest


def test_it_is_a_normal_priority_hook_of_the_train_val_and_test_iterations() -> None:
    points = IterTimerHook().hook_points()
    assert get_priority(IterTimerHook.priority) == Priority.NORMAL
    assert {"before_train_iter", "after_train_iter", "after_val_iter", "after_test_iter"} <= set(points)


def test_a_timer_reused_by_a_second_runner_leaves_the_first_runners_hub(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    timer = IterTimerHook()
    hooks = {key: None for key in DEFAULT_HOOKS}
    first = Runner(**{**runner_kwargs, "default_hooks": {**hooks, "timer": timer}, "max_epochs": 1})
    first.train()
    assert set(first.message_hub.means()) >= {"time", "data_time"}  # handed over at the end of the run
    read_from_first: list[dict[str, float]] = []

    class ReadsTheFirstHub(Hook):
        priority = "LOWEST"  # after the timer has timed the iteration

        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            read_from_first.append(first.message_hub.means())

    second = Runner(**{**runner_kwargs, "default_hooks": {**hooks, "timer": timer}, "max_epochs": 1,
                       "work_dir": runner_kwargs["work_dir"] / "second",
                       "custom_hooks": [ReadsTheFirstHub()]})
    second.train()
    assert read_from_first, "the probe ran"
    assert all(m == {} for m in read_from_first), "the first hub took the second run's times"
    assert second.message_hub.means()["time"] > 0

"""DistSamplerSeedHook: set_epoch(runner.epoch) on the train sampler before every epoch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, TensorDataset

from pluginloop import Runner
from pluginloop.hooks import DEFAULT_HOOKS, DistSamplerSeedHook


@pytest.fixture
def runner_kwargs(runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shared tiny run without installed plugins: these tests pin exact hooks, lines and files."""
    return {**runner_kwargs, "autoload_plugins": False}


class EpochRecordingSampler(Sampler[int]):
    """Sequential indices; records every set_epoch call."""

    def __init__(self, n: int) -> None:
        self.n, self.epochs = n, []

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def run(
    runner_kwargs: dict[str, Any],
    loader: Any,
    max_epochs: int = 3,
    start_epoch: int = 0,
    seed_hook: bool = True,
) -> Runner:
    only = {"optimizer", "sampler_seed"} if seed_hook else {"optimizer"}
    runner = Runner(
        **{
            **runner_kwargs,
            "train_dataloader": loader,
            "val_dataloader": None,
            "max_epochs": max_epochs,
            "default_hooks": {k: None for k in DEFAULT_HOOKS if k not in only},
        }
    )
    runner.epoch = start_epoch  # as a resume leaves it
    runner.run()
    return runner


def dataset(n: int = 4) -> TensorDataset:
    return TensorDataset(torch.randn(n, 4), torch.randn(n, 1))


def test_set_epoch_is_called_with_each_epoch_on_the_loader_sampler(runner_kwargs: dict[str, Any]) -> None:
    sampler = EpochRecordingSampler(4)
    run(runner_kwargs, DataLoader(dataset(), sampler=sampler, batch_size=2))
    assert sampler.epochs == [0, 1, 2]


def test_set_epoch_reaches_the_sampler_inside_a_batch_sampler(runner_kwargs: dict[str, Any]) -> None:
    sampler = EpochRecordingSampler(4)
    batch_sampler = BatchSampler(sampler, batch_size=2, drop_last=False)
    run(runner_kwargs, DataLoader(dataset(), batch_sampler=batch_sampler))
    assert sampler.epochs == [0, 1, 2]


def test_a_resumed_run_continues_with_the_resumed_epoch(runner_kwargs: dict[str, Any]) -> None:
    sampler = EpochRecordingSampler(4)
    run(runner_kwargs, DataLoader(dataset(), sampler=sampler, batch_size=2), start_epoch=1)
    assert sampler.epochs == [1, 2]


def test_loaders_without_set_epoch_train_unchanged(runner_kwargs: dict[str, Any]) -> None:
    batches = [(torch.randn(2, 4), torch.randn(2, 1))] * 2  # a list has no sampler at all
    for loader in (DataLoader(dataset(), batch_size=2), batches):
        assert run(runner_kwargs, loader, max_epochs=2).iter == 4


class IndexDataset(Dataset[Any]):
    """Records the order in which samples are read."""

    def __init__(self, n: int) -> None:
        self.n, self.order = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        self.order.append(i)
        return torch.zeros(4), torch.zeros(1)


class MyDistributedSampler(DistributedSampler[Any]):
    """A user's own sampler (the Runner makes plain DistributedSamplers resumable and seeds those)."""


def epoch_orders(runner_kwargs: dict[str, Any], seed_hook: bool) -> list[list[int]]:
    data = IndexDataset(16)
    sampler = MyDistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    run(runner_kwargs, DataLoader(data, sampler=sampler, batch_size=4), max_epochs=2, seed_hook=seed_hook)
    return [data.order[:16], data.order[16:]]


def test_a_distributed_sampler_of_the_users_shuffles_differently_each_epoch_only_with_the_hook(
    runner_kwargs: dict[str, Any],
) -> None:
    first, second = epoch_orders(runner_kwargs, seed_hook=True)
    assert sorted(first) == sorted(second) == list(range(16)) and first != second
    first, second = epoch_orders(runner_kwargs, seed_hook=False)
    assert first == second  # what happens without it: every epoch repeats the first


def test_it_registers_at_before_train_epoch_with_normal_priority(runner_kwargs: dict[str, Any]) -> None:
    runner = Runner(**runner_kwargs)
    runner.register_hook(DistSamplerSeedHook())
    info = runner.get_hooks_info()
    assert [p for p, hooks in info.items() if "DistSamplerSeedHook (NORMAL)" in hooks] == [
        "before_train_epoch"
    ]

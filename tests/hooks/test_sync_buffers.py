"""SyncBuffersHook: buffers averaged after each train epoch when distributed, else nothing.

The real two-process averaging is tested with pluginloop.dist (tests/test_dist.py); here the
hook's decision and its call point.
"""

from __future__ import annotations

import types
from typing import Any

import pytest
from torch import nn

import pluginloop.dist
from pluginloop import Runner
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.hooks import sync_buffers as sync_buffers_module


@pytest.fixture
def runner_kwargs(runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shared tiny run without installed plugins: these tests pin exact hooks, lines and files."""
    return {**runner_kwargs, "autoload_plugins": False}


def make_runner(runner_kwargs: dict[str, Any], calls: Any) -> Runner:
    hooks = {k: None for k in DEFAULT_HOOKS if k not in ("optimizer", "sync_buffers")}
    return Runner(
        **{
            **runner_kwargs,
            "default_hooks": hooks,
            "val_dataloader": None,
            "custom_hooks": [calls.recorder("probe", "LOWEST")],
        }
    )


def test_buffers_are_synced_after_each_train_epoch_when_distributed(
    runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any
) -> None:
    runner = make_runner(runner_kwargs, calls)

    def sync(module: nn.Module) -> None:
        calls.append(("sync_buffers", None, "hook"))
        assert module is runner.model

    # Only the hook's view of torch.distributed: the rest of the loop stays single-process.
    fake = types.SimpleNamespace(is_distributed=lambda: True, sync_buffers=sync)
    monkeypatch.setattr(sync_buffers_module, "dist", fake)
    runner.run()
    synced_before = [calls[i + 1][0] for i, call in enumerate(calls) if call[0] == "sync_buffers"]
    assert synced_before == ["after_train_epoch", "after_train_epoch"]  # max_epochs=2


def test_a_single_process_syncs_nothing(runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any) -> None:
    synced: list[Any] = []
    monkeypatch.setattr(pluginloop.dist, "sync_buffers", synced.append)
    runner = make_runner(runner_kwargs, calls)
    runner.run()
    assert runner.epoch == 2 and synced == []


def test_it_registers_at_after_train_epoch_only(runner_kwargs: dict[str, Any], calls: Any) -> None:
    info = make_runner(runner_kwargs, calls).get_hooks_info()
    assert [p for p, hooks in info.items() if "SyncBuffersHook (NORMAL)" in hooks] == ["after_train_epoch"]

"""EmptyCacheHook: torch.cuda.empty_cache() at exactly the chosen points, nothing without CUDA."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch

from pluginloop import Runner
from pluginloop.hooks import DEFAULT_HOOKS, EmptyCacheHook

EPOCH_POINTS = ("after_train_epoch", "after_val_epoch", "after_test_epoch")


@pytest.fixture
def runner_kwargs(runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shared tiny run without installed plugins: these tests pin exact hooks, lines and files."""
    return {**runner_kwargs, "autoload_plugins": False}


def run(runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any, cuda: bool, **options: Any) -> Runner:
    """A run (2 epochs x 3 batches, val after each, then test) with an EmptyCacheHook and a probe
    registered after it at the same priority; each empty_cache() call is logged as 'EMPTY'."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("EMPTY", None, "cuda")))
    hooks: dict[str, Any] = {k: None for k in DEFAULT_HOOKS if k != "optimizer"}
    hooks["empty_cache"] = dict(type="EmptyCacheHook", **options)
    runner = Runner(
        **{
            **runner_kwargs,
            "test_dataloader": runner_kwargs["val_dataloader"],
            "default_hooks": hooks,
            "custom_hooks": [calls.recorder("probe", "NORMAL")],
        }
    )
    runner.run()
    return runner


def emptied_at(calls: list[Any]) -> list[str]:
    """The hook point of each empty_cache() call: the probe's next entry (it runs right after)."""
    return [calls[i + 1][0] for i, call in enumerate(calls) if call[0] == "EMPTY"]


def test_default_empties_after_every_train_val_and_test_epoch(
    runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any
) -> None:
    run(runner_kwargs, calls, monkeypatch, cuda=True)
    assert emptied_at(calls) == ["after_train_epoch", "after_val_epoch"] * 2 + ["after_test_epoch"]


def test_every_option_adds_its_points_of_all_three_loops(
    runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any
) -> None:
    run(runner_kwargs, calls, monkeypatch, cuda=True, before_epoch=True, after_iter=True, after_epoch=False)
    chosen = {
        f"{when}_{mode}_{what}"
        for when, what in (("before", "epoch"), ("after", "iter"))
        for mode in ("train", "val", "test")
    }
    fired = Counter(point for point, _, label in calls if label == "probe")
    assert Counter(emptied_at(calls)) == {p: n for p, n in fired.items() if p in chosen}
    assert sum(Counter(emptied_at(calls)).values()) == 2 + 2 + 1 + 6 + 4 + 2  # epochs, then iterations


def test_nothing_is_registered_or_called_without_cuda(
    runner_kwargs: dict[str, Any], calls: Any, monkeypatch: Any
) -> None:
    runner = run(runner_kwargs, calls, monkeypatch, cuda=False, before_epoch=True, after_iter=True)
    assert emptied_at(calls) == []
    assert not any("EmptyCacheHook" in h for hooks in runner.get_hooks_info().values() for h in hooks)
    assert EmptyCacheHook(before_epoch=True).hook_points() == ()


def test_all_options_off_register_nothing(monkeypatch: Any) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert EmptyCacheHook(after_epoch=False).hook_points() == ()
    assert EmptyCacheHook().hook_points() == EPOCH_POINTS


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_real_empty_cache_runs(runner_kwargs: dict[str, Any]) -> None:
    hooks = {k: None for k in DEFAULT_HOOKS if k not in ("optimizer", "empty_cache")}
    runner = Runner(**{**runner_kwargs, "device": "cuda", "default_hooks": hooks})
    runner.run()
    assert any("EmptyCacheHook (NORMAL)" in h for h in runner.get_hooks_info()["after_train_epoch"])

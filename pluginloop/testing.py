"""pytest fixtures for testing pluginloop plugins (a pytest plugin, loaded through ``pytest11``).

Installed with pluginloop, so a plugin package's tests can use these fixtures directly:

- ``tiny_model``: a fresh two-layer classifier of 4 features into 2 classes (a few hundred weights).
- ``tiny_loaders``: ``TinyLoaders(train, val)``, 32 random samples each, batches of 8.
- ``make_runner``: ``make_runner(**overrides) -> Runner`` on CPU with a fresh tiny model and
  loaders, SGD, cross-entropy, an ``acc`` metric, two epochs, a work dir in ``tmp_path``
  and installed plugins **not** loaded (pass ``autoload_plugins=True`` to load them), so a
  test sees only the hooks it registers.
- ``hook_recorder``: a plugin that records every hook call as ``(point, summary)``; register
  it (``make_runner(custom_hooks=[hook_recorder])``) and read ``hook_recorder.calls``.

Heavy imports (torch, pluginloop) happen inside the fixtures: pytest imports this module at
start-up in every session of an environment where pluginloop is installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import DataLoader

    from pluginloop import Runner

__all__ = ["HookRecorder", "TinyLoaders", "hook_recorder", "make_runner", "tiny_loaders", "tiny_model"]


class TinyLoaders(NamedTuple):
    """The ``tiny_loaders`` fixture's value: train and val loaders of ``(inputs, targets)``."""

    train: DataLoader[Any]
    val: DataLoader[Any]


def _tiny_model() -> nn.Module:
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _tiny_loaders(seed: int = 0) -> TinyLoaders:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    gen = torch.Generator().manual_seed(seed)

    def dataset() -> TensorDataset:
        x = torch.randn(32, 4, generator=gen)
        return TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long())  # learnable: a linear boundary

    return TinyLoaders(DataLoader(dataset(), batch_size=8), DataLoader(dataset(), batch_size=8))


def _accuracy(preds: Any, targets: Any) -> float:
    return float((preds.argmax(dim=1) == targets).float().mean())


@pytest.fixture
def tiny_model() -> nn.Module:
    """A fresh, seeded ``Linear(4, 8) - ReLU - Linear(8, 2)`` classifier."""
    return _tiny_model()


@pytest.fixture
def tiny_loaders() -> TinyLoaders:
    """Train and val loaders: 32 seeded random samples each, 4 batches of 8, two classes."""
    return _tiny_loaders()


@pytest.fixture
def make_runner(tmp_path: Path) -> Callable[..., Runner]:
    """A factory of small CPU Runners; keyword arguments override the defaults.

    Installed plugins are not loaded unless ``autoload_plugins=True`` is passed; each call
    gets its own work dir under ``tmp_path`` (``work_dir=`` overrides it).
    """
    from torch.nn import functional

    from pluginloop import Runner

    counter = itertools.count()

    def make(**overrides: Any) -> Runner:
        loaders = _tiny_loaders()
        kwargs: dict[str, Any] = dict(
            model=_tiny_model(),
            work_dir=tmp_path / f"work_dir_{next(counter)}",
            train_dataloader=loaders.train,
            val_dataloader=loaders.val,
            optimizer=dict(type="SGD", lr=0.1),
            loss_fn=functional.cross_entropy,
            metrics={"acc": _accuracy},
            max_epochs=2,
            device="cpu",
            seed=0,
            autoload_plugins=False,
        )
        kwargs.update(overrides)
        return Runner(**kwargs)

    return make


class HookRecorder:
    """A pluggy-style plugin (priority HIGHEST) that records every hook call, in order.

    ``calls`` holds ``(point, summary)``; the summary keeps what the loop decides and no
    object identities: ``epoch`` and ``iter`` of the runner, ``batch_idx``, and the sorted
    keys of ``outputs``, ``metrics`` or ``checkpoint``.
    """

    priority = 0  # HIGHEST: recorded before any other plugin of the point runs

    def __init__(self) -> None:
        from pluginloop import HOOK_POINTS, hookimpl

        self.calls: list[tuple[str, dict[str, Any]]] = []
        for point in HOOK_POINTS:
            setattr(self, point, hookimpl(_recording_impl(self.calls, point)))

    @property
    def points(self) -> list[str]:
        """The hook points called, in order."""
        return [point for point, _ in self.calls]

    def clear(self) -> None:
        """Forget the calls recorded so far."""
        self.calls.clear()


def _recording_impl(calls: list[tuple[str, dict[str, Any]]], point: str) -> Callable[..., None]:
    """An impl of ``point`` taking exactly its arguments (pluggy passes them by name)."""

    def record(runner: Any, **args: Any) -> None:
        summary: dict[str, Any] = {"epoch": runner.epoch, "iter": runner.iter}
        for name, value in args.items():
            summary[name] = sorted(value) if isinstance(value, Mapping) else value
        calls.append((point, summary))

    # pluggy reads argument names from the function's code, so each shape is spelled out.
    if point in ("after_load_checkpoint", "before_save_checkpoint"):
        return lambda runner, checkpoint: record(runner, checkpoint=checkpoint)
    if point in ("after_val_epoch", "after_test_epoch"):
        return lambda runner, metrics: record(runner, metrics=metrics)
    if point.startswith("before_") and point.endswith("_iter"):
        return lambda runner, batch_idx, data_batch: record(runner, batch_idx=batch_idx)
    if point.endswith("_iter"):
        return lambda runner, batch_idx, data_batch, outputs: record(
            runner, batch_idx=batch_idx, outputs=outputs
        )
    return lambda runner: record(runner)


@pytest.fixture
def hook_recorder() -> HookRecorder:
    """A fresh ``HookRecorder``: pass it in ``custom_hooks`` or to ``runner.register_hook``."""
    return HookRecorder()

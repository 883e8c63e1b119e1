"""Shared tiny fixtures: a model, TensorDataset loaders and a hook-call recorder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pluginloop import Hook
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.priority import PriorityLike

Call = tuple[str, "int | None", str]  # (hook point, batch_idx or None, plugin label)


def _make_loader(n_batches: int, batch_size: int = 2, seed: int = 0) -> DataLoader[Any]:
    """``n_batches`` batches of ``(inputs (B, 4), targets (B, 1))``, not shuffled."""
    g = torch.Generator().manual_seed(seed)
    n = n_batches * batch_size
    dataset = TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    return DataLoader(dataset, batch_size=batch_size)


@pytest.fixture
def model() -> nn.Module:
    """A 4 -> 1 linear regression model, seeded."""
    torch.manual_seed(0)
    return nn.Linear(4, 1)


@pytest.fixture
def loaders() -> dict[str, DataLoader[Any]]:
    """Train (3 batches), val (2) and test (1) loaders for ``model``."""
    return {"train": _make_loader(3, seed=1), "val": _make_loader(2, seed=2), "test": _make_loader(1, seed=3)}


@pytest.fixture
def make_loader() -> Any:
    """``make_loader(n_batches, batch_size=2, seed=0)``: a loader of (inputs (B, 4), targets (B, 1))."""
    return _make_loader


class _Untouchable(Dataset[Any]):
    """A dataset that fails the test when read: configuration must fail before data is."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Any:
        pytest.fail("a sample was read: the configuration error must come first")


@pytest.fixture
def untouchable_loader() -> DataLoader[Any]:
    """A loader whose dataset fails the test if any sample is read."""
    return DataLoader(_Untouchable(), batch_size=2)


@pytest.fixture
def runner_kwargs(model: nn.Module, loaders: dict[str, DataLoader[Any]], tmp_path: Any) -> dict[str, Any]:
    """The arguments of a tiny regression run on CPU with only the optimizer default hook."""
    return dict(
        model=model,
        work_dir=tmp_path,
        train_dataloader=loaders["train"],
        val_dataloader=loaders["val"],
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.01),
        max_epochs=2,
        device="cpu",
        seed=0,
        # Only the optimizer: these tests must not change as built-in defaults are added.
        default_hooks={key: None for key in DEFAULT_HOOKS if key != "optimizer"},
    )


class Recorder(Hook):
    """Appends ``(point, batch_idx, label)`` to ``log`` at each of the 16 hook points."""

    def __init__(self, log: list[Call], label: str, priority: PriorityLike | None = None) -> None:
        self.log, self.label = log, label
        if priority is not None:
            self.priority = priority  # type: ignore[misc]  # an instance's own priority

    def _add(self, point: str, batch_idx: int | None = None) -> None:
        self.log.append((point, batch_idx, self.label))

    def before_run(self, runner: Any) -> None:
        self._add("before_run")

    def after_load_checkpoint(self, runner: Any, checkpoint: Any) -> None:
        self._add("after_load_checkpoint")

    def before_train_epoch(self, runner: Any) -> None:
        self._add("before_train_epoch")

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._add("before_train_iter", batch_idx)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self._add("after_train_iter", batch_idx)

    def after_train_epoch(self, runner: Any) -> None:
        self._add("after_train_epoch")

    def before_val_epoch(self, runner: Any) -> None:
        self._add("before_val_epoch")

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._add("before_val_iter", batch_idx)

    def after_val_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self._add("after_val_iter", batch_idx)

    def after_val_epoch(self, runner: Any, metrics: Any) -> None:
        self._add("after_val_epoch")

    def before_test_epoch(self, runner: Any) -> None:
        self._add("before_test_epoch")

    def before_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._add("before_test_iter", batch_idx)

    def after_test_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self._add("after_test_iter", batch_idx)

    def after_test_epoch(self, runner: Any, metrics: Any) -> None:
        self._add("after_test_epoch")

    def after_run(self, runner: Any) -> None:
        self._add("after_run")

    def before_save_checkpoint(self, runner: Any, checkpoint: Any) -> None:
        self._add("before_save_checkpoint")


class CallLog(list[Call]):
    """The calls recorded by the recorders it makes, in call order."""

    def recorder(self, label: str, priority: PriorityLike | None = None) -> Recorder:
        """A new Recorder appending to this log."""
        return Recorder(self, label, priority)


@pytest.fixture
def calls() -> CallLog:
    """An empty CallLog: ``calls.recorder('first', 'HIGHEST')`` makes a recording hook."""
    return CallLog()


@pytest.fixture(autouse=True)
def _no_installed_plugins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep installed entry-point plugins out of every Runner, except in tests marked ``autoload``.

    CI installs every package under plugins/, and their hooks would otherwise join each run.
    """
    if request.node.get_closest_marker("autoload") is None:
        monkeypatch.setenv("PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD", "1")
        monkeypatch.delenv("PLUGINLOOP_PLUGINS", raising=False)


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog that sees the 'pluginloop' logger (which does not propagate to the root)."""
    logger = logging.getLogger("pluginloop")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


class _DeviceScalar(torch.Tensor):
    """A CPU tensor that poses as a device tensor (``is_cpu`` False) and counts reads of its value."""

    reads: ClassVar[int] = 0

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False

    def item(self) -> Any:
        _DeviceScalar.reads += 1
        return super().item()

    def __float__(self) -> float:
        _DeviceScalar.reads += 1
        return super().__float__()

    def tolist(self) -> Any:
        _DeviceScalar.reads += 1
        return super().tolist()


class DeviceScalars:
    """Tensors the hub and the logger treat like CUDA ones, counting every copy to the host
    (each would synchronise with a real device); the count starts at 0 with the test."""

    def __init__(self) -> None:
        _DeviceScalar.reads = 0

    def of(self, value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A scalar ``value`` posing as a device tensor."""
        return torch.tensor(value, dtype=dtype).as_subclass(_DeviceScalar)

    def wrap(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (autograd history kept) posing as a device tensor."""
        return tensor.as_subclass(_DeviceScalar)

    def reads(self) -> int:
        """Reads of any such tensor's value since the test began."""
        return _DeviceScalar.reads


@pytest.fixture
def device_scalars() -> DeviceScalars:
    """See :class:`DeviceScalars`."""
    return DeviceScalars()

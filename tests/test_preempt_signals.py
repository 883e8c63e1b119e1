"""Preemption in one process: a signal during training saves, exits 128 + signum, and resumes exactly.

The signals are real (``os.kill`` of this process from inside a hook). Each test first
installs a recording handler of its own, so that a Runner that failed to catch the signal
fails the test instead of stopping pytest, and so that restoring handlers is observable.
The 2-process agreement on a signal is in tests/test_distributed.py.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import Hook, Runner, checkpoint
from pluginloop import dist as pldist
from pluginloop._preempt import Preemption, exit_code


class Signal(Hook):
    """Sends this process ``signum`` ``times`` times during training iteration ``at`` (from 0)."""

    def __init__(self, at: int, signum: int, times: int = 1) -> None:
        self.at, self.signum, self.times = at, signum, times

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter == self.at:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


@pytest.fixture
def fallback() -> Iterator[list[int]]:
    """Signals that reached the test's own SIGINT/SIGTERM handlers (i.e. not the Runner's)."""
    seen: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: seen.append(signum)) for sig in
                (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
    yield seen
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _kwargs(work_dir: Path, **overrides: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    torch.manual_seed(0)
    kwargs: dict[str, Any] = dict(
        # Dropout and shuffling: an exact resume needs the RNG and the sample order back.
        model=nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1)),
        work_dir=work_dir,
        train_dataloader=DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4, shuffle=True),
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.05, momentum=0.9),
        max_epochs=2,
        seed=0,
        device="cpu",
        autoload_plugins=False,
    )
    kwargs.update(overrides)
    return kwargs


def _params(runner: Runner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in runner.model.parameters()]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_iteration_saves_exits_128_plus_signum_and_resumes_exactly(
    tmp_path: Path, fallback: list[int], signum: int, caplog: pytest.LogCaptureFixture
) -> None:
    straight = Runner(**_kwargs(tmp_path / "straight"))
    straight.run()

    work_dir = tmp_path / "stopped"
    stopped = Runner(**_kwargs(work_dir, custom_hooks=[Signal(at=7, signum=signum)]))
    with pytest.raises(SystemExit) as exit_info:
        stopped.run()
    assert exit_info.value.code == exit_code(signum) == 128 + signum
    assert fallback == [] and stopped.iter == 8  # iteration 8 (7 from 0) was finished
    path = work_dir / "preempt_iter_8.pth"
    checkpoint.verify_checkpoint(path)
    assert checkpoint.read_pointer(work_dir) == path.absolute()
    assert signal.getsignal(signum) is not stopped._preempt._handle  # handlers restored

    resumed = Runner(**_kwargs(work_dir, resume=True))
    resumed.run()
    assert resumed.iter == straight.iter == 12
    for a, b in zip(_params(resumed), _params(straight), strict=True):
        assert torch.equal(a, b)


def test_a_second_sigint_interrupts_at_once(tmp_path: Path, fallback: list[int]) -> None:
    runner = Runner(**_kwargs(tmp_path, custom_hooks=[Signal(at=1, signum=signal.SIGINT, times=2)]))
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    assert runner.iter == 1 and not list(tmp_path.glob("preempt_*"))
    assert fallback == []
    os.kill(os.getpid(), signal.SIGINT)  # the test's own handler is back
    assert fallback == [signal.SIGINT]


def test_signals_outside_training_are_not_caught(tmp_path: Path, fallback: list[int]) -> None:
    class SignalInVal(Hook):
        def before_val_epoch(self, runner: Any) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    g = torch.Generator().manual_seed(1)
    val = DataLoader(TensorDataset(torch.randn(4, 4, generator=g), torch.randn(4, 1, generator=g)))
    runner = Runner(**_kwargs(tmp_path, val_dataloader=val, custom_hooks=[SignalInVal()]))
    runner.val()  # a val() on its own installs nothing
    assert fallback == [signal.SIGTERM]


def test_a_single_process_never_reduces_the_flag(
    tmp_path: Path, fallback: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(value: int) -> int:
        raise AssertionError("a single process must not pay a reduction per iteration")

    monkeypatch.setattr(pldist, "max_over_ranks", forbidden)
    runner = Runner(**_kwargs(tmp_path, default_hooks={"checkpoint": None}))
    runner.run()
    assert runner.iter == 12


def test_off_the_main_thread_nothing_is_installed(fallback: list[int]) -> None:
    seen: list[Any] = []

    def enter() -> None:
        with Preemption() as flag:
            seen.append((flag.signum, signal.getsignal(signal.SIGTERM)))

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen and seen[0][0] == 0
    assert seen[0][1] is not None and not isinstance(getattr(seen[0][1], "__self__", None), Preemption)

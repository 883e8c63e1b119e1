"""Preemption with checkpoints: a real SIGTERM'd child resumes exactly; preemption files are rotated.

The in-process signal mechanics (exit codes, a second SIGINT, handlers outside training, threads)
are in tests/test_preempt_signals.py.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import Hook, Runner
from pluginloop import checkpoint as ckpt
from pluginloop.hooks import DEFAULT_HOOKS

REPO = Path(__file__).resolve().parents[1]

# The training job, shared by the child that gets the signal and the in-process comparison runs.
_JOB = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from pluginloop import Hook, Runner
    from pluginloop.hooks import DEFAULT_HOOKS

    class Losses(Hook):
        def __init__(self):
            self.by_iter = {}

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.by_iter[runner.iter + 1] = float(outputs["loss"].detach())
            print("loss", runner.iter + 1, self.by_iter[runner.iter + 1].hex(), flush=True)

    class WaitForSignal(Hook):
        # Holds iteration `at` until the signal arrived, so the test knows where it lands.
        def __init__(self, at):
            self.at = at

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter + 1 == self.at:
                print("ready", flush=True)
                deadline = time.monotonic() + 60
                while not runner._preempt.signum and time.monotonic() < deadline:
                    time.sleep(0.01)

    def make(work_dir, custom_hooks=(), resume=False, checkpoint=None):
        hooks = {key: None for key in DEFAULT_HOOKS}
        hooks.update(optimizer=dict(type="OptimizerHook"),
                     checkpoint=checkpoint or dict(type="CheckpointHook", interval=1))
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(20, 4, generator=g), torch.randn(20, 1, generator=g))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.Linear(16, 1))
        loader = DataLoader(data, batch_size=4, shuffle=True)
        return Runner(model=model, work_dir=work_dir, train_dataloader=loader, loss_fn=nn.functional.mse_loss,
                      optimizer=dict(type="Adam", lr=0.01), max_epochs=4, device="cpu", seed=5,
                      default_hooks=hooks, custom_hooks=list(custom_hooks), resume=resume)

    if __name__ == "__main__":
        make(sys.argv[1], [Losses(), WaitForSignal(int(sys.argv[2]))]).train()
    """
)


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, ModuleType]:
    """The job's script file, and the same code imported here."""
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    spec = importlib.util.spec_from_file_location("preempt_job", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return script, module


@pytest.mark.slow
def test_sigterm_to_a_training_process_saves_exits_143_and_resume_is_exact(
    tmp_path: Path, job: tuple[Path, ModuleType]
) -> None:
    script, module = job
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(work), "8"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    watchdog = threading.Timer(90, child.kill)  # a hung child fails the test, not CI
    watchdog.start()
    lines: list[str] = []
    try:
        assert child.stdout is not None
        while line := child.stdout.readline().decode():
            lines.append(line)
            if line.startswith("ready"):
                child.send_signal(signal.SIGTERM)  # during iteration 8, 3 into epoch 2
        code = child.wait()
    finally:
        watchdog.cancel()
        child.kill()
        child.wait()
    output = "".join(lines)
    assert code == 143, output
    assert "SIGTERM received: stopped after iteration 8 (epoch 2, 3 iterations into it)" in output
    assert str(work.absolute() / "preempt_iter_8.pth") in output
    assert "resume=True" in output and "--resume" in output
    assert ckpt.verify_checkpoint(work / "preempt_iter_8.pth")["iter"] == 8
    assert ckpt.read_pointer(work) == (work / "preempt_iter_8.pth").absolute()
    child_losses = {
        int(i): float.fromhex(v) for _, i, v in (ln.split() for ln in lines if ln.startswith("loss "))
    }
    assert sorted(child_losses) == list(range(1, 9))  # the 8th iteration finished, no 9th began

    straight_losses, resumed_losses = module.Losses(), module.Losses()
    straight = module.make(tmp_path / "straight", [straight_losses])
    straight.train()
    resumed = module.make(work, [resumed_losses], resume=True)
    resumed.train()
    assert min(resumed_losses.by_iter) == 9
    assert {**child_losses, **resumed_losses.by_iter} == straight_losses.by_iter
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    adam_a, adam_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(adam_a[k][n], adam_b[k][n]) for k in adam_a for n in adam_a[k])


class _Signal(Hook):
    """Sends this process ``signum`` during training iteration ``at`` (from 1)."""

    def __init__(self, at: int, signum: int = signal.SIGINT) -> None:
        self.at, self.signum = at, signum

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter + 1 == self.at:
            signal.raise_signal(self.signum)


def test_the_preemption_checkpoint_is_rotated_with_the_others(
    tmp_path: Path, job: tuple[Path, ModuleType]
) -> None:
    _, module = job
    keep_one = dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)
    with pytest.raises(SystemExit) as info:
        module.make(tmp_path, [_Signal(at=7)], checkpoint=keep_one).train()  # 2 into epoch 2
    assert info.value.code == 130
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["preempt_iter_7.pth"]  # epoch_1 retired
    module.make(tmp_path, checkpoint=keep_one, resume=True).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_4.pth"]  # and retired in turn


def test_the_preemption_checkpoint_goes_to_the_checkpoint_hooks_out_dir(
    tmp_path: Path, job: tuple[Path, ModuleType]
) -> None:
    _, module = job
    elsewhere = dict(type="CheckpointHook", interval=1, out_dir=str(tmp_path / "ckpt"))
    with pytest.raises(SystemExit):
        module.make(tmp_path / "work", [_Signal(at=3, signum=signal.SIGTERM)], checkpoint=elsewhere).train()
    assert ckpt.read_pointer(tmp_path / "work") == (tmp_path / "ckpt" / "preempt_iter_3.pth").absolute()
    resumed = module.make(tmp_path / "work", checkpoint=elsewhere, resume=True)
    resumed.train()
    assert resumed.iter == 20


def test_a_position_just_saved_is_not_saved_again(tmp_path: Path, job: tuple[Path, ModuleType]) -> None:
    _, module = job
    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    with pytest.raises(SystemExit):
        module.make(tmp_path, [_Signal(at=6)], checkpoint=every_3).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["iter_3.pth", "iter_6.pth"]
    assert ckpt.read_pointer(tmp_path) == (tmp_path / "iter_6.pth").absolute()


def test_without_a_checkpoint_hook_the_runner_saves_into_the_work_dir(tmp_path: Path) -> None:
    data = TensorDataset(torch.randn(8, 4), torch.randn(8, 1))
    runner = Runner(
        model=nn.Linear(4, 1),
        work_dir=tmp_path,
        train_dataloader=DataLoader(data, batch_size=2),
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.1),
        max_epochs=2,
        device="cpu",
        default_hooks={**{k: None for k in DEFAULT_HOOKS}, "optimizer": dict(type="OptimizerHook")},
        custom_hooks=[_Signal(at=5, signum=signal.SIGTERM)],
    )
    with pytest.raises(SystemExit) as info:
        runner.train()
    assert info.value.code == 143
    assert ckpt.verify_checkpoint(tmp_path / "preempt_iter_5.pth")["iter"] == 5

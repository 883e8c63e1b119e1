"""Faults during training never cost the last good checkpoint: kill -9, full disk, damage, bad hooks, NaN."""

from __future__ import annotations

import errno
import io
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import Hook, HookCallError, Runner
from pluginloop import checkpoint as ckpt
from pluginloop.checkpoint import CheckpointWarning
from pluginloop.errors import CheckpointError
from pluginloop.hooks import DEFAULT_HOOKS

REPO = Path(__file__).resolve().parents[1]


def _runner(
    work_dir: Path, epochs: int = 3, custom_hooks: Any = (), data: Any = None, **checkpoint: Any
) -> Runner:
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks.update(optimizer=dict(type="OptimizerHook"), checkpoint=dict(type="CheckpointHook", **checkpoint))
    g = torch.Generator().manual_seed(0)
    data = data or TensorDataset(torch.randn(12, 4, generator=g), torch.randn(12, 1, generator=g))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1))
    return Runner(
        model=model,
        work_dir=work_dir,
        train_dataloader=DataLoader(data, batch_size=3, shuffle=True),
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.05, momentum=0.9),
        max_epochs=epochs,
        device="cpu",
        seed=1,
        default_hooks=hooks,
        custom_hooks=list(custom_hooks),
    )


def _debris(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _same_params(a: Runner, b: Runner) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values())
    )


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


# -- full disk ----------------------------------------------------------------------------------


class _FullDisk:
    """Writes to a path containing ``only`` fail with ENOSPC once ``budget`` bytes are used."""

    def __init__(self, budget: int, only: str) -> None:
        self.budget, self.only = budget, only

    def open(self, file: Path, mode: str = "r") -> io.FileIO:
        if "w" not in mode or self.only not in str(file):
            return io.FileIO(file, mode.replace("b", ""))
        disk = self

        class Full(io.FileIO):
            def write(self, data: Any) -> int:
                size = len(memoryview(data).cast("B"))
                if size > disk.budget:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
                disk.budget -= size
                return super().write(data)

        return Full(file, "w")


def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ckpt, "open", _FullDisk(budget=200, only="epoch_2.pth").open, raising=False)
    with pytest.raises(HookCallError) as info:
        _runner(tmp_path).run()
    cause = info.value.__cause__
    assert isinstance(cause, CheckpointError)
    message = str(cause)
    assert "no space left on device" in message and str(tmp_path / "epoch_2.pth") in message
    assert "bytes" in message and "previous checkpoint is untouched" in message
    assert _debris(tmp_path) == [] and not (tmp_path / "epoch_2.pth").exists()
    assert ckpt.read_pointer(tmp_path) == (tmp_path / "epoch_1.pth").absolute()
    ckpt.verify_checkpoint(tmp_path / "epoch_1.pth")

    monkeypatch.delattr(ckpt, "open")  # space freed: resuming finishes the run as if nothing happened
    resumed = _runner(tmp_path)
    resumed.resume = True
    resumed.run()
    straight = _runner(tmp_path / "straight")
    straight.run()
    assert resumed.iter == straight.iter and _same_params(resumed, straight)


def test_keep_one_with_a_failing_save_keeps_one_verified_checkpoint_and_its_pointer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ckpt, "open", _FullDisk(budget=0, only="epoch_3.pth").open, raising=False)
    with pytest.raises(HookCallError, match="no space left on device"):
        _runner(tmp_path, epochs=4, max_keep_ckpts=1).run()
    assert ckpt.list_checkpoints(tmp_path) == [tmp_path / "epoch_2.pth"]
    assert ckpt.read_pointer(tmp_path) == (tmp_path / "epoch_2.pth").absolute()
    ckpt.verify_checkpoint(tmp_path / "epoch_2.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        assert ckpt.find_resumable(tmp_path) == (tmp_path / "epoch_2.pth").absolute()
    assert _debris(tmp_path) == []


# -- damaged newest checkpoint --------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [_truncate, _empty, _flip_a_bit], ids=["truncated", "empty", "bit-flipped"]
)
def test_a_damaged_newest_checkpoint_is_detected_and_resume_falls_back(tmp_path: Path, damage: Any) -> None:
    crashed = _runner(tmp_path, epochs=4)
    crashed.max_epochs = 2
    crashed.run()
    damage(tmp_path / "epoch_2.pth")
    resumed = _runner(tmp_path, epochs=4)
    resumed.resume = True
    with pytest.warns(
        CheckpointWarning, match=r"not resuming from damaged checkpoint .*epoch_2\.pth"
    ) as record:
        resumed.run()
    assert any(
        ("truncated" in str(w.message))
        or ("empty" in str(w.message))
        or ("content altered" in str(w.message))
        for w in record
    )
    straight = _runner(tmp_path / "straight", epochs=4)
    straight.run()
    assert _same_params(resumed, straight)  # resumed from epoch 1, and continued bit for bit
    ckpt.verify_checkpoint(tmp_path / "epoch_2.pth")  # rewritten whole


# -- hooks that raise -----------------------------------------------------------------------------


class _RaiseAt(Hook):
    """Raises at ``point`` during epoch ``epoch`` (from 0)."""

    def __init__(self, point: str, epoch: int) -> None:
        self.point, self.epoch = point, epoch

    def hook_points(self) -> tuple[str, ...]:
        return (self.point,)

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        if runner.epoch == self.epoch:
            raise RuntimeError("hook failed during the save")

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.epoch == self.epoch and batch_idx == 2:
            raise RuntimeError("hook failed mid-epoch")


@pytest.mark.parametrize("point", ["before_save_checkpoint", "after_train_iter"])
def test_a_hook_raising_leaves_the_previous_checkpoint_and_pointer_untouched(
    tmp_path: Path, point: str
) -> None:
    runner = _runner(tmp_path, epochs=3, custom_hooks=[_RaiseAt(point, 1)])
    before: dict[str, tuple[bytes, int]] = {}

    class Snapshot(Hook):
        def after_train_epoch(self, runner: Runner) -> None:
            if runner.epoch == 0:
                before.update(_snapshot(tmp_path))

    runner.register_hook(Snapshot(), priority="LOWEST")
    with pytest.raises(HookCallError, match=f"'_RaiseAt' failed in hook point '{point}' at epoch 1") as info:
        runner.run()
    assert "hook failed" in str(info.value)
    assert set(before) == {"epoch_1.pth", "epoch_1.pth.meta.json", "last_checkpoint"}
    assert _snapshot(tmp_path) == before


# -- NaN loss -------------------------------------------------------------------------------------


class _FiniteLossGuard(Hook):
    """Stops the run on a non-finite loss, before the optimizer step and the checkpoint (VERY_HIGH)."""

    priority = "VERY_HIGH"

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        loss = float(outputs["loss"].detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {runner.iter + 1}")


@pytest.mark.parametrize("guarded", [True, False])
def test_with_a_loss_guard_no_non_finite_weights_are_checkpointed(tmp_path: Path, guarded: bool) -> None:
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(12, 4, generator=g)
    inputs[7] = float("nan")  # one poisoned sample, met in the first epoch
    data = TensorDataset(inputs, torch.randn(12, 1, generator=g))
    runner = _runner(
        tmp_path, epochs=2, data=data, by_epoch=False, custom_hooks=[_FiniteLossGuard()] if guarded else []
    )
    if guarded:
        with pytest.raises(HookCallError, match=r"_FiniteLossGuard.*loss is nan"):
            runner.run()
    else:
        runner.run()
    saved = ckpt.list_checkpoints(tmp_path)
    assert saved
    finite = [
        all(torch.isfinite(t).all() for t in ckpt.load_checkpoint(p)["state_dict"].values()) for p in saved
    ]
    # The control run shows that without the guard non-finite weights do get checkpointed.
    assert all(finite) if guarded else not all(finite)


# -- kill -9 during a save, in a real training process --------------------------------------------

_TRAIN = textwrap.dedent(
    """
    import sys, time, torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from pluginloop import Hook, Runner
    from pluginloop.hooks import DEFAULT_HOOKS

    class Big(nn.Module):  # 100 MB of weights, cheap to train: a save takes a while
        def __init__(self):
            super().__init__()
            self.inp, self.big = nn.Linear(4, 5000), nn.Linear(5000, 5000)

        def forward(self, x):
            return self.big(self.inp(x)).mean(dim=1, keepdim=True)

    class Report(Hook):
        def after_load_checkpoint(self, runner, checkpoint):
            print("resumed", runner.iter, flush=True)

        def before_save_checkpoint(self, runner, checkpoint):
            self.start = time.monotonic()
            print("saving", runner.iter + 1, flush=True)

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            print("saved", runner.iter + 1, time.monotonic() - self.start, flush=True)

    def make(work_dir, max_iters=1000):
        hooks = {key: None for key in DEFAULT_HOOKS}
        hooks.update(optimizer=dict(type="OptimizerHook"),
                     checkpoint=dict(type="CheckpointHook", interval=1, by_epoch=False, max_keep_ckpts=2))
        g = torch.Generator().manual_seed(0)
        data = TensorDataset(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g))
        torch.manual_seed(0)
        return Runner(model=Big(), work_dir=work_dir, train_dataloader=DataLoader(data, batch_size=2),
                      loss_fn=nn.functional.mse_loss, optimizer=dict(type="SGD", lr=1e-3),
                      max_iters=max_iters,
                      device="cpu", seed=0, default_hooks=hooks, resume=True,
                      custom_hooks=[dict(type=Report, priority="LOWEST")])

    if __name__ == "__main__":
        make(sys.argv[1]).train()
    """
)


def _read_until(child: subprocess.Popen[bytes], word: str, stderr: Path) -> list[str]:
    assert child.stdout is not None
    while line := child.stdout.readline().decode():
        if line.startswith(word + " "):
            return line.split()
    pytest.fail(f"the training process exited before printing {word!r}:\n{stderr.read_text()[-3000:]}")


@pytest.mark.slow
def test_kill_9_during_saves_in_training_always_resumes_the_previous_or_the_new_checkpoint(
    tmp_path: Path,
) -> None:
    script, work = tmp_path / "train_big.py", tmp_path / "work"
    script.write_text(_TRAIN)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    debris_seen, resumed_at = 0, None
    for round_, fraction in enumerate([0.1, 0.5, 0.9]):  # early, middle and late in a save
        stderr = tmp_path / f"stderr-{round_}.txt"
        with stderr.open("wb") as stderr_file:
            child = subprocess.Popen(
                [sys.executable, str(script), str(work)],
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                bufsize=0,
                env=env,
            )
        watchdog = threading.Timer(120, child.kill)  # a hung child fails the test, not CI
        watchdog.start()
        try:
            if resumed_at is not None:  # the previous round's survivor is where training goes on
                assert int(_read_until(child, "resumed", stderr)[1]) == resumed_at
            seconds = float(_read_until(child, "saved", stderr)[2])  # one complete save first
            killed_while_saving = int(_read_until(child, "saving", stderr)[1])
            time.sleep(fraction * seconds)
            child.send_signal(signal.SIGKILL)
            assert child.wait() == -signal.SIGKILL, stderr.read_text()
        finally:
            watchdog.cancel()
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()

        debris_seen += bool(_debris(work))
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # nothing may look torn
            found = ckpt.find_resumable(work)
        assert found is not None
        step = ckpt.verify_checkpoint(found)["step"]
        assert step in (killed_while_saving - 1, killed_while_saving), (fraction, step, killed_while_saving)
        for path in ckpt.list_checkpoints(work):
            ckpt.verify_checkpoint(path)
        resumed_at = step

    # A last resume in this process: it cleans up and its next save replaces any half-renamed file.
    namespace: dict[str, Any] = {}
    exec(compile(_TRAIN, str(script), "exec"), namespace)  # the child's own definitions
    runner = namespace["make"](work, max_iters=resumed_at + 1)
    runner.train()
    assert runner.iter == resumed_at + 1
    assert _debris(work) == []
    names = sorted(p.name for p in work.iterdir())
    assert all(name.endswith((".pth", ".meta.json")) or name == "last_checkpoint" for name in names)
    assert sorted(p.name for p in work.glob("*.pth")) == sorted(p.name for p in ckpt.list_checkpoints(work))
    assert debris_seen, "no kill landed in the middle of a write; the test proved nothing"

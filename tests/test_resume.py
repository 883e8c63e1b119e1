"""Resume continues bit for bit: N epochs straight equal k epochs, a crash, and a resume.

Shuffling, dropout and a dataset drawing from Python's, NumPy's and torch's global RNGs are
on in every run; equality is torch.equal on parameters and optimizer state, and the same
loss at every iteration.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

import pluginloop.hooks.param_scheduler  # noqa: F401  # registers ParamSchedulerHook
from pluginloop import Hook, HookCallError, Runner
from pluginloop import checkpoint as ckpt
from pluginloop._resume import ResumableSampler
from pluginloop.errors import CheckpointError
from pluginloop.hooks import DEFAULT_HOOKS


class NoisyData(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """20 regression samples; each read draws from the global RNGs and is recorded in ``loaded``."""

    def __init__(self, n: int = 20, noisy: bool = True) -> None:
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)
        self.noisy = noisy
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.loaded.append(i)
        if not self.noisy:
            return self.x[i], self.y[i]
        noise = random.random() + float(np.random.rand()) + float(torch.rand(()))
        return self.x[i] + 0.01 * noise, self.y[i]


class Losses(Hook):
    """Records ``{iteration (from 1): loss}``."""

    def __init__(self) -> None:
        self.by_iter: dict[int, float] = {}

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.by_iter[runner.iter + 1] = float(outputs["loss"].detach())


class Crash(Hook):
    """Raises before training iteration ``at`` (from 1): a crash after the checkpoints before it."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        if runner.iter + 1 == self.at:
            raise RuntimeError("simulated crash")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))


def _run(
    work_dir: Path,
    *,
    crash_at: int | None = None,
    resume: Any = False,
    checkpoint: Any = None,
    optimizer_hook: Any = None,
    loader: Any = None,
    val: bool = True,
    epochs: int = 4,
    custom_hooks: tuple[Hook, ...] | list[Hook] = (),
    **kwargs: Any,
) -> tuple[Runner, Losses]:
    """4 epochs x 5 iterations; Adam with a MultiStepLR; checkpoints every epoch unless told."""
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks.update(
        optimizer=optimizer_hook or dict(type="OptimizerHook"),
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=checkpoint or dict(type="CheckpointHook", interval=1),
    )
    losses = Losses()
    custom: list[Hook] = [losses, *custom_hooks] + ([Crash(crash_at)] if crash_at else [])
    runner = Runner(
        model=_model(),
        work_dir=work_dir,
        train_dataloader=loader
        if loader is not None
        else DataLoader(NoisyData(), batch_size=4, shuffle=True),
        val_dataloader=DataLoader(NoisyData(8), batch_size=4, shuffle=True) if val else None,
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="Adam", lr=0.01),
        max_epochs=epochs,
        device="cpu",
        seed=7,
        default_hooks=hooks,
        custom_hooks=custom,
        resume=resume,
        **{"scheduler": dict(type="MultiStepLR", milestones=[2], gamma=0.5), **kwargs},
    )
    if crash_at is None:
        runner.run()
    else:
        with pytest.raises(HookCallError, match="simulated crash"):
            runner.run()
    return runner, losses


def _same(a: Any, b: Any) -> bool:
    """Bitwise equality of nested state dicts."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _assert_resumed_bitwise(
    straight: tuple[Runner, Losses], crashed: Losses, resumed: tuple[Runner, Losses], resumed_from: int
) -> None:
    (a, la), (b, lb) = straight, resumed
    assert b.iter == a.iter and b.epoch == a.epoch
    assert _same(a.model.state_dict(), b.model.state_dict())
    assert _same(a.optimizer.state_dict(), b.optimizer.state_dict())
    assert _same(
        [s.scheduler.state_dict() for s in a.param_schedulers],
        [s.scheduler.state_dict() for s in b.param_schedulers],
    )
    assert min(lb.by_iter) == resumed_from + 1  # it continued right after the checkpoint
    assert {**crashed.by_iter, **lb.by_iter} == la.by_iter
    assert {i: crashed.by_iter[i] for i in range(1, resumed_from + 1)} == {
        i: la.by_iter[i] for i in range(1, resumed_from + 1)
    }


def test_epoch_checkpoint_resume_is_bitwise(tmp_path: Path) -> None:
    straight = _run(tmp_path / "straight")
    _, crashed = _run(tmp_path / "resumed", crash_at=13)  # in epoch 3: epoch_2.pth is the newest
    resumed = _run(tmp_path / "resumed", resume=True)
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=10)


def test_mid_epoch_iteration_checkpoint_resume_is_bitwise(tmp_path: Path) -> None:
    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    straight = _run(tmp_path / "straight", checkpoint=every_3)
    _, crashed = _run(tmp_path / "resumed", checkpoint=every_3, crash_at=14)
    assert ckpt.verify_checkpoint(ckpt.read_pointer(tmp_path / "resumed"))["iter"] == 12  # 2 into epoch 3
    resumed = _run(tmp_path / "resumed", checkpoint=every_3, resume=True)
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=12)


def test_resume_inside_an_accumulation_window_is_bitwise(tmp_path: Path) -> None:
    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    accumulate = dict(type="GradientCumulativeOptimizerHook", cumulative_iters=4)
    straight = _run(tmp_path / "straight", checkpoint=every_3, optimizer_hook=accumulate)
    _, crashed = _run(tmp_path / "resumed", checkpoint=every_3, optimizer_hook=accumulate, crash_at=8)
    with pytest.warns(UserWarning, match="2 iteration\\(s\\) into a gradient-accumulation window"):
        resumed = _run(tmp_path / "resumed", checkpoint=every_3, optimizer_hook=accumulate, resume=True)
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=6)


def test_resume_keeps_the_loss_scaler_state_bitwise(tmp_path: Path) -> None:
    # A scale that moves every 2 steps: a resume that lost the scaler's state would diverge.
    fp16 = dict(
        type="Fp16OptimizerHook", dtype="bfloat16", loss_scale=dict(init_scale=2.0**8, growth_interval=2)
    )
    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    straight = _run(tmp_path / "straight", checkpoint=every_3, optimizer_hook=fp16)
    _, crashed = _run(tmp_path / "resumed", checkpoint=every_3, optimizer_hook=fp16, crash_at=11)
    resumed = _run(tmp_path / "resumed", checkpoint=every_3, optimizer_hook=fp16, resume=True)
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=9)
    assert straight[0].grad_scaler is not None and resumed[0].grad_scaler is not None
    assert straight[0].grad_scaler.get_scale() == resumed[0].grad_scaler.get_scale() > 2.0**8


def test_resumed_epoch_loads_only_the_samples_not_yet_trained(tmp_path: Path) -> None:
    every_2 = dict(type="CheckpointHook", interval=2, by_epoch=False)
    straight_data = NoisyData()
    _run(
        tmp_path / "straight",
        checkpoint=every_2,
        val=False,
        epochs=2,
        loader=DataLoader(straight_data, batch_size=4, shuffle=True),
    )
    _run(
        tmp_path / "resumed",
        checkpoint=every_2,
        val=False,
        epochs=2,
        crash_at=8,
        loader=DataLoader(NoisyData(), batch_size=4, shuffle=True),
    )
    resumed_data = NoisyData()
    _run(
        tmp_path / "resumed",
        checkpoint=every_2,
        val=False,
        epochs=2,
        resume=True,
        loader=DataLoader(resumed_data, batch_size=4, shuffle=True),
    )
    # iter_6 is 1 batch into epoch 2: the resumed run reads the other 4 batches, nothing more.
    assert resumed_data.loaded == straight_data.loaded[24:]
    assert len(resumed_data.loaded) == 16
    assert sorted(straight_data.loaded[:20]) == sorted(straight_data.loaded[20:]) == list(range(20))
    assert straight_data.loaded[:20] != straight_data.loaded[20:]  # reshuffled each epoch


def test_resume_with_two_workers_is_bitwise(tmp_path: Path) -> None:
    def loader() -> DataLoader[Any]:
        return DataLoader(NoisyData(noisy=False), batch_size=4, shuffle=True, num_workers=2)

    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    straight = _run(tmp_path / "straight", checkpoint=every_3, loader=loader(), val=False, epochs=3)
    _, crashed = _run(
        tmp_path / "resumed", checkpoint=every_3, loader=loader(), val=False, epochs=3, crash_at=8
    )
    resumed = _run(
        tmp_path / "resumed", checkpoint=every_3, loader=loader(), val=False, epochs=3, resume=True
    )
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=6)


def test_a_distributed_sampler_is_skipped_in_the_sampler(tmp_path: Path) -> None:
    def loader(data: NoisyData) -> DataLoader[Any]:
        # This process reads rank 1's half of a 2-rank run; no process group is needed.
        return DataLoader(data, batch_size=2, sampler=DistributedSampler(data, 2, 1, shuffle=True, seed=3))

    every_2 = dict(type="CheckpointHook", interval=2, by_epoch=False)
    straight_data, resumed_data = NoisyData(), NoisyData()
    straight = _run(tmp_path / "s", checkpoint=every_2, val=False, epochs=2, loader=loader(straight_data))
    assert isinstance(straight[0].train_dataloader.sampler, ResumableSampler)
    _, crashed = _run(
        tmp_path / "r", checkpoint=every_2, val=False, epochs=2, crash_at=9, loader=loader(NoisyData())
    )
    resumed = _run(
        tmp_path / "r", checkpoint=every_2, val=False, epochs=2, resume=True, loader=loader(resumed_data)
    )
    _assert_resumed_bitwise(straight, crashed, resumed, resumed_from=8)
    assert resumed_data.loaded == straight_data.loaded[16:]  # 3 batches of epoch 2 skipped unread


def test_a_loader_that_cannot_skip_reads_the_trained_batches_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Reversed(Sampler[int]):
        def __init__(self, n: int) -> None:
            self.n = n

        def __iter__(self) -> Iterator[int]:
            return iter(range(self.n - 1, -1, -1))

        def __len__(self) -> int:
            return self.n

    every_2 = dict(type="CheckpointHook", interval=2, by_epoch=False)
    _run(
        tmp_path,
        checkpoint=every_2,
        val=False,
        epochs=2,
        crash_at=8,
        loader=DataLoader(NoisyData(), batch_size=4, sampler=Reversed(20)),
    )
    data = NoisyData()
    logging.getLogger("pluginloop").addHandler(caplog.handler)
    try:
        runner, _ = _run(
            tmp_path,
            checkpoint=every_2,
            val=False,
            epochs=2,
            resume=True,
            loader=DataLoader(data, batch_size=4, sampler=Reversed(20)),
        )
    finally:
        logging.getLogger("pluginloop").removeHandler(caplog.handler)
    assert not isinstance(runner.train_dataloader.sampler, ResumableSampler)
    assert "cannot skip batches, so its first 1 batches are read and discarded" in caplog.text
    assert data.loaded == list(range(19, -1, -1))  # the trained batch was read again, then dropped


def test_validation_does_not_move_the_training_random_stream(tmp_path: Path) -> None:
    _, with_val = _run(tmp_path / "a", val=True)
    _, without_val = _run(tmp_path / "b", val=False)
    assert with_val.by_iter == without_val.by_iter


class ValLosses(Hook):
    """Records ``(epoch, validation loss)`` after each validation."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float]] = []

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.seen.append((runner.epoch, metrics["loss"]))


class CrashInValidation(Hook):
    priority = "HIGHEST"

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        if runner.epoch == 2:
            raise RuntimeError("simulated crash")


def test_a_checkpoint_taken_before_its_epochs_validation_validates_first_on_resume(tmp_path: Path) -> None:
    straight_val, resumed_val = ValLosses(), ValLosses()
    straight, _ = _run(tmp_path / "straight", custom_hooks=[straight_val])
    # epoch_2.pth is written after train epoch 2, then its validation crashes.
    with pytest.raises(HookCallError, match="simulated crash"):
        _run(tmp_path / "resumed", custom_hooks=[CrashInValidation()])
    assert ckpt.load_checkpoint(tmp_path / "resumed" / "epoch_2.pth")["meta"]["val_pending"] is True
    resumed, _ = _run(tmp_path / "resumed", custom_hooks=[resumed_val], resume=True)
    assert [epoch for epoch, _ in resumed_val.seen] == [2, 3, 4]  # epoch 2's validation first
    assert resumed_val.seen == straight_val.seen[1:]
    assert _same(straight.model.state_dict(), resumed.model.state_dict())


# -- resume / load_from semantics -----------------------------------------------------------------


def test_load_from_loads_the_weights_only(tmp_path: Path) -> None:
    trained, _ = _run(tmp_path / "a", epochs=1, val=False)
    fresh, losses = _run(tmp_path / "b", epochs=1, val=False, load_from=tmp_path / "a" / "epoch_1.pth")
    assert min(losses.by_iter) == 1  # counters start at 0: a new run from those weights
    assert fresh.epoch == 1
    state = ckpt.load_checkpoint(tmp_path / "b" / "epoch_1.pth")
    assert state["optimizer"]["state"][0]["step"] == 5  # a fresh optimizer: only this run's steps
    loaded = Runner(
        model=_model(),
        work_dir=tmp_path / "c",
        load_from=tmp_path / "a" / "epoch_1.pth",
        device="cpu",
        default_hooks={key: None for key in DEFAULT_HOOKS},
    )
    loaded.val_dataloader = None
    loaded._load_or_resume()
    assert _same(loaded.model.state_dict(), trained.model.state_dict())


def test_load_from_accepts_a_foreign_torch_save_file_unverified(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = _model()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    foreign = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), foreign)  # a bare state dict, no record
    runner = Runner(
        model=_model(),
        work_dir=tmp_path,
        load_from=foreign,
        device="cpu",
        default_hooks={key: None for key in DEFAULT_HOOKS},
    )
    logging.getLogger("pluginloop").addHandler(caplog.handler)
    try:
        runner._load_or_resume()
    finally:
        logging.getLogger("pluginloop").removeHandler(caplog.handler)
    assert _same(runner.model.state_dict(), source.state_dict())
    assert "has no pluginloop record, so it was not verified" in caplog.text


def test_resume_refuses_a_foreign_file_and_points_to_load_from(tmp_path: Path) -> None:
    foreign = tmp_path / "pretrained.pt"
    torch.save(_model().state_dict(), foreign)
    with pytest.raises(CheckpointError, match=r"no pluginloop record.*load_from="):
        _run(tmp_path, resume=str(foreign))


def test_resume_path_resumes_that_file(tmp_path: Path) -> None:
    _run(tmp_path, epochs=3)
    runner, losses = _run(tmp_path, epochs=3, resume=str(tmp_path / "epoch_1.pth"))
    assert min(losses.by_iter) == 6 and runner.iter == 15


def test_resume_true_without_a_checkpoint_starts_from_load_from(tmp_path: Path) -> None:
    _run(tmp_path / "pre", epochs=1, val=False)
    _, losses = _run(
        tmp_path / "run", epochs=1, val=False, resume=True, load_from=tmp_path / "pre" / "epoch_1.pth"
    )
    assert min(losses.by_iter) == 1
    pre = ckpt.load_checkpoint(tmp_path / "pre" / "epoch_1.pth")["state_dict"]
    first = ckpt.load_checkpoint(tmp_path / "run" / "epoch_1.pth")["state_dict"]
    assert not _same(pre, first)  # trained on from the loaded weights
    assert ckpt.load_checkpoint(tmp_path / "run" / "epoch_1.pth")["meta"]["epoch"] == 1


def test_after_load_checkpoint_sees_the_resumed_counters_and_the_dict(tmp_path: Path) -> None:
    class Sees(Hook):
        seen: tuple[int, int, int] | None = None

        def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
            self.seen = (runner.epoch, runner.iter, checkpoint["meta"]["iter"])

    _run(tmp_path, epochs=2)
    sees = Sees()
    _run(tmp_path, epochs=3, resume=True, custom_hooks=[sees])
    assert sees.seen == (2, 10, 10)


class Stateful(Hook):
    def __init__(self, value: Any = 1) -> None:
        self.value = value

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = state["value"]


def test_hook_state_is_restored_by_name_and_mismatches_are_reported(tmp_path: Path) -> None:
    _run(tmp_path, epochs=1, val=False, custom_hooks=[Stateful(41)])
    restored = Stateful(0)
    with pytest.warns(UserWarning) as record:
        _run(tmp_path, epochs=2, val=False, resume=True, custom_hooks=[restored, Stateful2()])
    assert restored.value == 41
    messages = [str(w.message) for w in record]
    assert any("no state for hook 'Stateful2'" in m for m in messages)
    _run(tmp_path / "x", epochs=1, val=False, custom_hooks=[Stateful(1)])
    with pytest.warns(UserWarning, match="holds state of hook 'Stateful', which is not registered"):
        _run(tmp_path / "x", epochs=2, val=False, resume=True)


class Stateful2(Stateful):
    pass


def test_a_hook_state_that_could_not_be_loaded_fails_the_save_with_its_key(tmp_path: Path) -> None:
    with pytest.raises(
        HookCallError, match=r"\['hooks'\]\['Stateful'\]\['value'\] is a numpy.ndarray"
    ) as info:
        _run(tmp_path, epochs=1, val=False, custom_hooks=[Stateful(np.zeros(3))])
    assert isinstance(info.value.__cause__, CheckpointError)
    assert "weights_only=True" in str(info.value)
    assert list(tmp_path.glob("*.pth")) == []


def test_a_checkpoint_holds_random_and_sampler_state_as_plain_values(tmp_path: Path) -> None:
    every_3 = dict(type="CheckpointHook", interval=3, by_epoch=False)
    _run(tmp_path, checkpoint=every_3, epochs=1, val=False)
    state = ckpt.load_checkpoint(tmp_path / "iter_3.pth")  # weights_only: plain values only
    assert state["meta"] | {"torch_version": None} == {
        "epoch": 0,
        "iter": 3,
        "inner_iter": 3,
        "val_pending": False,
        "seed": 7,
        "world_size": 1,
        "torch_version": None,
    }
    assert state["sampler"] == {
        "resumable": True,
        "seed": 7,
        "epoch": 0,
        "batches_done": 3,
        "batch_size": 4,
        "dataset_size": 20,
    }
    cuda = {"cuda"} if torch.cuda.is_available() else set()
    assert set(state["rng"][0]) == {"python", "numpy", "torch", *cuda}


def test_stale_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".epoch_3.pth.tmp-4242", tmp_path / ".last_checkpoint.tmp-17"]
    for path in stale:
        path.write_bytes(b"partial")
    _run(tmp_path, epochs=1, val=False)
    assert not any(path.exists() for path in stale)


def test_a_plateau_scheduler_steps_in_the_validation_a_resume_runs_first(tmp_path: Path) -> None:
    plateau = dict(type="ReduceLROnPlateau", monitor="loss", patience=0, factor=0.5, threshold=10.0)
    straight, _ = _run(tmp_path / "straight", scheduler=plateau)
    with pytest.raises(HookCallError, match="simulated crash"):
        _run(tmp_path / "resumed", scheduler=plateau, custom_hooks=[CrashInValidation()])
    resumed, _ = _run(tmp_path / "resumed", scheduler=plateau, resume=True)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert _same(straight.model.state_dict(), resumed.model.state_dict())


class _OnDevice(torch.Tensor):
    """A tensor as a checkpoint loaded with map_location='cuda' hands it over: not readable as numpy."""

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        return self.as_subclass(torch.Tensor)


def test_random_state_loaded_onto_a_gpu_is_applied() -> None:
    """Found on an H100: a resume on CUDA failed, the checkpoint's RNG tensors being on the GPU."""
    from pluginloop._state import apply_rng, capture_rng

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    saved = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    kind, keys, *rest = saved["numpy"]
    on_device = {
        **saved,
        "numpy": (kind, keys.as_subclass(_OnDevice), *rest),
        "torch": saved["torch"].as_subclass(_OnDevice),
    }
    apply_rng(on_device)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_run_on_cuda_resumes_where_it_stopped(tmp_path: Path, make_loader: Any) -> None:
    trained: list[int] = []

    class Iterations(Hook):
        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            trained.append(runner.iter)

    def run(work_dir: str, epochs: int) -> Runner:
        torch.manual_seed(0)
        runner = Runner(
            nn.Linear(4, 1), work_dir=tmp_path / work_dir, train_dataloader=make_loader(4), seed=3,
            optimizer=dict(type="SGD", lr=0.1), loss_fn=nn.MSELoss(), max_epochs=epochs, device="cuda",
            launcher="none", autoload_plugins=False, custom_hooks=[Iterations()], resume=True,
        )
        runner.train()
        return runner

    whole = run("whole", 2)
    first = run("stopped", 1)  # nothing to resume yet: starts fresh, saves at the end of its epoch
    trained.clear()
    resumed = run("stopped", 2)
    assert first.iter == 4 and trained == [4, 5, 6, 7] and resumed.iter == whole.iter == 8
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)

"""Fp16OptimizerHook: autocast (bfloat16 on CPU, float16 on CUDA), fp32 weights, loss scaling, overflow.

The scaling tests run on the CPU and, where CUDA is available, on the GPU too (GradScaler's
CUDA kernels, float16 autocast): CI has no GPU, benchmarks/gpu.sh runs them on one.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import ConfigError, Hook, Runner
from pluginloop.hooks import DEFAULT_HOOKS, Fp16OptimizerHook


def _loader(n: int = 8) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)),
                      batch_size=2)


#: Where the scaling tests run: the CPU, and the GPU where there is one.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))
]


class _Probe(nn.Module):
    """Records the autocast state of each forward; makes the loss infinite on call ``overflow_at``."""

    def __init__(self, overflow_at: int | None = None, device: str = "cpu") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        self.overflow_at = overflow_at
        self.device_type = device
        self.seen: list[tuple[bool, torch.dtype, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        kind = self.device_type
        self.seen.append((torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind), out.dtype))
        if self.training and len(self.seen) - 1 == self.overflow_at:
            out = out * float("inf")
        return out


def _loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(preds.float(), targets)


def _runner(tmp_path: Any, model: nn.Module, hook: Any, device: str = "cpu", **kwargs: Any) -> Runner:
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks["optimizer"] = hook
    args: dict[str, Any] = dict(
        model=model, work_dir=tmp_path, train_dataloader=_loader(), loss_fn=_loss,
        optimizer=dict(type="SGD", lr=0.1), max_epochs=1, device=device, seed=0, default_hooks=hooks,
    )
    return Runner(**{**args, **kwargs})


class _Snapshots(Hook):
    """Parameters after each training iteration (after the optimizer hook's step)."""

    priority = "LOW"

    def __init__(self) -> None:
        self.params: list[list[torch.Tensor]] = []
        self.scales: list[float] = []

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self.params.append([p.detach().clone() for p in runner.model.parameters()])
        self.scales.append(runner.message_hub.get("loss_scale"))


def test_forward_runs_under_bfloat16_autocast_and_weights_stay_float32(tmp_path: Any) -> None:
    model = _Probe()
    val_loader = _loader(4)
    runner = _runner(tmp_path, model, dict(type="Fp16OptimizerHook"), val_dataloader=val_loader)
    before = [p.detach().clone() for p in model.parameters()]
    runner.train()
    assert model.seen == [(True, torch.bfloat16, torch.bfloat16)] * (4 + 2)  # train and val forwards
    assert all(p.dtype is torch.float32 for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    assert runner.grad_scaler is None  # bfloat16 has float32's range: 'dynamic' needs no scaler
    with torch.no_grad():  # autocast is the runner's, not left on in the caller
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_default_is_float16_autocast_with_a_dynamic_scaler(tmp_path: Any) -> None:
    model = _Probe(device="cuda")
    runner = _runner(tmp_path, model, dict(type="Fp16OptimizerHook"), device="cuda")
    before = [p.detach().clone() for p in model.parameters()]
    runner.train()
    assert model.seen == [(True, torch.float16, torch.float16)] * 4
    assert all(p.dtype is torch.float32 and p.is_cuda for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it trained
    assert isinstance(runner.grad_scaler, torch.amp.GradScaler) and runner.grad_scaler.is_enabled()
    # From GradScaler's 2**16, halved on each overflowing step (two, on an H100): a power of two.
    scale = runner.grad_scaler.get_scale()
    assert scale <= 2.0**16 and math.log2(scale).is_integer()
    assert runner.message_hub.get("loss_scale") == scale


def test_dtype_chooses_float16(tmp_path: Any) -> None:
    model = _Probe()
    runner = _runner(tmp_path, model, dict(type="Fp16OptimizerHook", dtype="float16"))
    runner.train()
    assert model.seen[0] == (True, torch.float16, torch.float16)
    assert isinstance(runner.grad_scaler, torch.amp.GradScaler)  # float16 always scales


@pytest.mark.parametrize("device", DEVICES)
def test_overflow_skips_the_step_lowers_the_scale_and_is_logged(
    tmp_path: Any, log: pytest.LogCaptureFixture, device: str
) -> None:
    model = _Probe(overflow_at=2, device=device)
    runner = _runner(tmp_path, model, dict(type="Fp16OptimizerHook", loss_scale=dict(init_scale=1024.0)),
                     device=device)
    snaps = _Snapshots()
    runner.register_hook(snaps)
    before = [p.detach().clone() for p in model.parameters()]
    runner.train()
    history = [before, *snaps.params]
    changed = [not all(torch.equal(a, b) for a, b in zip(history[i], history[i + 1])) for i in range(4)]
    assert changed == [True, True, False, True]  # the third iteration's step was skipped
    assert snaps.scales == [1024.0, 1024.0, 512.0, 512.0]
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert warnings == ["iteration 3: gradients overflowed (inf/NaN) under loss scaling; the optimizer "
                        "step was skipped and the loss scale is now 512"]


@pytest.mark.parametrize("device", DEVICES)
def test_an_int_static_scale_stays_fixed_through_an_overflow(tmp_path: Any, device: str) -> None:
    model = _Probe(overflow_at=1, device=device)
    runner = _runner(tmp_path, model, dict(type="Fp16OptimizerHook", loss_scale=512), device=device)
    snaps = _Snapshots()
    runner.register_hook(snaps)
    runner.train()
    assert runner.grad_scaler is not None
    assert snaps.scales == [512.0] * 4
    assert all(torch.equal(a, b) for a, b in zip(snaps.params[0], snaps.params[1]))  # skipped
    assert not all(torch.equal(a, b) for a, b in zip(snaps.params[1], snaps.params[2]))


def test_gradients_are_unscaled_before_clipping(tmp_path: Any) -> None:
    model = _Probe()
    reference = _Probe()
    hook = dict(type="Fp16OptimizerHook", loss_scale=2.0**16, grad_clip=dict(max_norm=1e6))
    runner = _runner(tmp_path, model, hook, max_iters=1, max_epochs=None)
    runner.train()
    x, y = next(iter(_loader()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _loss(reference(x), y).backward()  # type: ignore[no-untyped-call]
    expected = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.parameters()
                                                     if p.grad is not None]))
    # The scale is a power of two, so unscaling is exact: the norm is the true one, not 65536x.
    assert runner.message_hub.get("grad_norm") == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_scaler_state_goes_into_checkpoints_and_comes_back_on_resume(tmp_path: Any, device: str) -> None:
    hook = dict(type="Fp16OptimizerHook", loss_scale=dict(init_scale=1024.0, growth_interval=2))
    runner = _runner(tmp_path, _Probe(overflow_at=0, device=device), hook, device=device)
    runner.train()
    assert runner.grad_scaler is not None
    saved = runner.grad_scaler.state_dict()
    assert saved["scale"] == 1024.0  # halved by the overflow, then doubled after 2 good steps, once
    assert saved["_growth_tracker"] == 1
    path = runner.save_checkpoint("fp16.pth")

    resumed = _runner(tmp_path, _Probe(device=device), hook, device=device, resume=str(path), max_epochs=1)
    resumed.train()  # nothing left to train: before_run, then the resume
    assert resumed.grad_scaler is not None
    assert resumed.grad_scaler.state_dict() == saved


def test_hook_state_round_trips_before_and_after_the_scaler_exists(tmp_path: Any) -> None:
    runner = _runner(tmp_path, _Probe(), dict(type="Fp16OptimizerHook", loss_scale=64))
    runner.train()
    fresh = Fp16OptimizerHook(loss_scale=64)
    assert fresh.state_dict() == {}  # no scaler before before_run
    state = {"scaler": {**runner.grad_scaler.state_dict(), "scale": 8.0}}  # type: ignore[union-attr]
    fresh.load_state_dict(state)  # before before_run: kept for the scaler it will make
    other = _runner(Path(tmp_path) / "other", _Probe(), fresh)
    other.hook.before_run(runner=other)
    assert other.grad_scaler is not None and other.grad_scaler.get_scale() == 8.0
    assert fresh.state_dict()["scaler"]["scale"] == 8.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(loss_scale="dynamc"), "loss_scale.*'dynamic', a number"),
        (dict(loss_scale=-1), "loss_scale.*positive"),
        (dict(loss_scale=True), "loss_scale"),
        (dict(loss_scale=dict(init_scal=8.0)), "did you mean 'init_scale'"),
        (dict(loss_scale=dict(growth_factor=0.5)), "loss_scale.*growth factor"),
        (dict(dtype="fp8"), "dtype.*'float16' or 'bfloat16'"),
        (dict(dtype=torch.float32), "dtype"),
    ],
)
def test_config_mistakes_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Fp16OptimizerHook(**kwargs)


def test_config_mistakes_fail_in_the_runner_constructor(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"default_hooks\.optimizer.*loss_scale"):
        _runner(tmp_path, _Probe(), dict(type="Fp16OptimizerHook", loss_scale="static"))

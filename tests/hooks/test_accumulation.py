"""GradientCumulativeOptimizerHook (and OptimizerHook's cumulative_iters): gradient accumulation."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import ConfigError, Hook, Runner
from pluginloop.hooks import DEFAULT_HOOKS, GradientCumulativeOptimizerHook


def _data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def _runner(tmp_path: Any, model: nn.Module, loader: DataLoader[Any], optimizer_hook: Any,
            **kwargs: Any) -> Runner:
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks["optimizer"] = optimizer_hook
    args: dict[str, Any] = dict(
        model=model, work_dir=tmp_path, train_dataloader=loader, loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.1), max_epochs=1, device="cpu", seed=0, default_hooks=hooks,
    )
    return Runner(**{**args, **kwargs})


def _accumulate(n: int) -> dict[str, Any]:
    return dict(type="GradientCumulativeOptimizerHook", cumulative_iters=n)


@pytest.mark.parametrize(
    ("samples", "epochs"),
    [(16, 2), (20, 1)],  # 8 iterations per epoch (a multiple of 4); 10 in all (a remainder of 2)
    ids=["multiple", "remainder"],
)
def test_micro_batches_train_like_one_large_batch(tmp_path: Any, samples: int, epochs: int) -> None:
    micro, n = 2, 4
    accumulated = _mlp()
    _runner(tmp_path, accumulated, DataLoader(_data(samples), batch_size=micro), _accumulate(n),
            max_epochs=epochs).train()
    # Plain training on batches of n * micro: with 20 samples they are 8, 8 and a last 4,
    # which is what the remainder window (divided by 2, not 4) must match.
    large = _mlp()
    _runner(tmp_path, large, DataLoader(_data(samples), batch_size=n * micro), dict(type="OptimizerHook"),
            max_epochs=epochs).train()
    for p, q in zip(accumulated.parameters(), large.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert all(p.grad is None for p in accumulated.parameters())  # the last window was stepped


@pytest.mark.parametrize(
    "hook",
    [_accumulate(3), dict(type="Fp16OptimizerHook", cumulative_iters=3, loss_scale=512),
     dict(type="OptimizerHook", cumulative_iters=3)],
    ids=["accumulation", "fp16", "optimizer"],
)
@pytest.mark.parametrize("length", [dict(max_epochs=2), dict(max_epochs=None, max_iters=10)],
                         ids=["epochs", "iters"])
def test_steps_every_n_iterations_and_at_the_last(tmp_path: Any, hook: dict[str, Any],
                                                  length: dict[str, int | None]) -> None:
    batches = 4 if "max_iters" in length else 5  # 10 iterations in all, either way
    runner = _runner(tmp_path, _mlp(), DataLoader(_data(2 * batches), batch_size=2), hook, **length)
    steps: list[int] = []
    assert runner.optimizer is not None
    runner.optimizer.register_step_post_hook(lambda *_: steps.append(runner.iter + 1))
    runner.train()
    assert steps == [3, 6, 9, 10]


@pytest.mark.parametrize("bad", [0, -2, "x", True, 1.5])
def test_cumulative_iters_must_be_a_positive_int(tmp_path: Any, bad: Any) -> None:
    with pytest.raises(ConfigError, match="cumulative_iters"):
        GradientCumulativeOptimizerHook(bad)
    with pytest.raises(ConfigError, match=r"default_hooks\.optimizer.*cumulative_iters"):
        _runner(tmp_path, _mlp(), DataLoader(_data(4)), _accumulate(bad))


def test_cumulative_iters_is_required(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="cumulative_iters"):
        _runner(tmp_path, _mlp(), DataLoader(_data(4)), dict(type="GradientCumulativeOptimizerHook"))


def _bn_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def test_warns_once_when_the_model_has_batchnorm(tmp_path: Any) -> None:
    runner = _runner(tmp_path, _bn_model(), DataLoader(_data(8), batch_size=2), _accumulate(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.train()
        runner.train()  # before_run again: still one warning
    assert len([w for w in caught if "BatchNorm" in str(w.message)]) == 1


def test_no_batchnorm_warning_without_accumulation_or_batchnorm(tmp_path: Any) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _runner(tmp_path, _bn_model(), DataLoader(_data(8), batch_size=2), dict(type="OptimizerHook")).train()
        _runner(tmp_path, _mlp(), DataLoader(_data(8), batch_size=2), _accumulate(2)).train()
    assert not [w for w in caught if "BatchNorm" in str(w.message)]


class _SaveAndStop(Hook):
    """Saves a checkpoint after iteration ``at`` (counted from 1) and stops the run."""

    priority = "VERY_LOW"

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if runner.iter + 1 == self.at:
            runner.save_checkpoint("mid_window.pth")
            runner.should_stop = True


def test_resume_inside_a_window_restores_its_gradients_exactly(tmp_path: Any) -> None:
    def run(work_dir: Path, **kwargs: Any) -> nn.Module:
        work_dir.mkdir(exist_ok=True)
        model = _mlp()
        runner = _runner(work_dir, model, DataLoader(_data(16), batch_size=2), _accumulate(4),
                         max_epochs=2, **kwargs)
        if "resume" not in kwargs:
            runner.register_hook(_SaveAndStop(6))  # 2 iterations into the second window
        runner.train()
        return model

    straight = _mlp()
    _runner(tmp_path, straight, DataLoader(_data(16), batch_size=2), _accumulate(4), max_epochs=2).train()
    run(tmp_path / "a")
    with pytest.warns(UserWarning, match=r"iteration 6, 2 iteration\(s\) into .* window of 4: .*restored"):
        resumed = run(tmp_path / "b", resume=str(tmp_path / "a" / "mid_window.pth"))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_resume_inside_a_window_without_its_gradients_warns_what_to_do() -> None:
    hook = GradientCumulativeOptimizerHook(4)
    hook.load_state_dict({})  # a checkpoint saved between windows, or by another hook
    with pytest.warns(UserWarning, match="could not be restored.*multiples of 4"):
        hook.after_load_checkpoint(SimpleNamespace(iter=6, world_size=1), {})  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hook.after_load_checkpoint(SimpleNamespace(iter=8, world_size=1), {})  # type: ignore[arg-type]


# ------------------------------------------ DDP: no all-reduce on non-step iterations (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    model = _mlp()
    runner = _runner(out_dir, model, DataLoader(_data(16), batch_size=2), _accumulate(2))
    synced_at: list[int] = []

    # A lambda: DDP refuses a hook whose bucket annotation is not dist.GradBucket, and
    # this module's annotations are strings.
    count = lambda state, bucket: (  # noqa: E731
        synced_at.append(runner.iter) or default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type, func-returns-value]
    )
    runner.wrapped_model.register_comm_hook(None, count)  # type: ignore[operator]
    runner.train()
    torch.save({"synced_at": synced_at, "params": [p.detach() for p in model.parameters()]},
               Path(out_dir, f"rank{rank}.pt"))
    # The runner made the group (launcher='auto' reads the env above); close() destroys it
    # in the normal flow, which gloo needs to exit cleanly (see pluginloop.dist.teardown).
    runner.close()


@pytest.mark.slow
def test_ddp_all_reduces_only_on_step_iterations_and_matches_one_large_batch(tmp_path: Any) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OMP_NUM_THREADS", "1")
        mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2)  # type: ignore[attr-defined, no-untyped-call]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    # 16 samples, 2 ranks x batch 2: 4 iterations each; windows of 2 step after iterations 1 and 3.
    assert [r["synced_at"] for r in ranks] == [[1, 3], [1, 3]]
    # Each step averages 2 ranks x 2 micro-batches x 2 samples: plain training with batch 8.
    large = _mlp()
    _runner(tmp_path, large, DataLoader(_data(16), batch_size=8), dict(type="OptimizerHook"),
            launcher="none").train()
    for p, q0, q1 in zip(large.parameters(), ranks[0]["params"], ranks[1]["params"]):
        assert torch.equal(q0, q1)
        torch.testing.assert_close(q0, p.detach(), atol=1e-6, rtol=0)

"""Runner runs under torchrun for tests/test_distributed.py, and the builders both share.

Launched as ``python -m torch.distributed.run --nproc-per-node=2 ddp_runs.py MODE OUT``;
each rank writes what it observed to ``OUT/<mode>_rank<r>.json`` (never into a work dir:
those must hold only what pluginloop wrote). The test process imports this module to
build the same data, model and Runner arguments for its single-process reference runs.

Modes:
  train     five Runners in one process: a Linear regression, train() then test() (shards,
            equivalence, exact evaluation metrics); joining its process group, a BatchNorm
            model with and without SyncBuffersHook, gradient accumulation counting DDP's
            all-reduces, and should_stop set on one rank; then the first runner's close().
  sigterm   the Linear run in a shared work dir; rank 1 sends itself SIGTERM mid-epoch.
  sigterm_all  the same, every rank signalled (at different iterations).
  resume    the Linear run resumed (resume=True) from what ``sigterm`` left in ``shared``.
  nodes     the Linear run launched as two 1-process "nodes" (c10d rendezvous).
  hook_error  rank 1's hook raises; rank 1 then stays alive without taking part, so that
            rank 0 can only learn of it through the process-group timeout.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import Hook, Runner

N_TRAIN, BATCH, EPOCHS, SEED = 24, 3, 3, 7  # per rank: 12 samples, 4 iterations an epoch
N_VAL, N_TEST = 7, 5  # odd: padding shards would count a sample twice
TIMEOUT_S = 10  # dist_timeout of hook_error


def data(n: int, seed: int) -> TensorDataset:
    """``n`` float64 samples of (x (4,), y (1,)); the x rows are distinct, so they name their index."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]], dtype=torch.float64))


def linear_model() -> nn.Module:
    """The same float64 4 -> 1 regression model on every rank (no BatchNorm)."""
    torch.manual_seed(0)
    return nn.Linear(4, 1).double()


def mae(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of a batch."""
    return (preds - targets).abs().mean()


def linear_kwargs(work_dir: Path, batch: int = BATCH, **overrides: Any) -> dict[str, Any]:
    """Runner arguments of the Linear run; ``batch`` per process."""
    kwargs: dict[str, Any] = dict(
        model=linear_model(),
        work_dir=work_dir,
        train_dataloader=DataLoader(data(N_TRAIN, 1), batch_size=batch, shuffle=True),
        val_dataloader=DataLoader(data(N_VAL, 2), batch_size=2),
        test_dataloader=DataLoader(data(N_TEST, 3), batch_size=2),
        loss_fn=nn.functional.mse_loss,
        metrics={"mae": mae},
        optimizer=dict(type="SGD", lr=0.05, momentum=0.9),
        max_epochs=EPOCHS,
        seed=SEED,
        device="cpu",
        autoload_plugins=False,  # installed plugins must not change these runs
    )
    kwargs.update(overrides)
    return kwargs


def params(model: nn.Module) -> list[list[float]]:
    """Every parameter and buffer of ``model`` as nested lists, in state_dict order."""
    return [t.double().flatten().tolist() for t in model.state_dict().values()]


class Probe(Hook):
    """Records what each rank trains on and sees; LOW, so after the built-ins of a point.

    ``epochs``: per train epoch, the dataset index of every sample read (from the batches
    themselves, matched to the dataset's rows); ``val``/``test``: the reduced metrics.
    """

    priority = "LOW"

    def __init__(self, dataset: TensorDataset | None = None) -> None:
        self.rows = dataset.tensors[0] if dataset is not None else None
        self.epochs: list[list[int]] = []
        self.val: list[dict[str, float]] = []
        self.test: list[dict[str, float]] = []
        self.iters = 0

    def before_train_epoch(self, runner: Any) -> None:
        self.epochs.append([])

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self.iters += 1
        if self.rows is not None:
            x = data_batch[0]
            self.epochs[-1] += [int((self.rows == row).all(1).nonzero()) for row in x]

    def after_val_epoch(self, runner: Any, metrics: dict[str, float]) -> None:
        self.val.append(dict(metrics))

    def after_test_epoch(self, runner: Any, metrics: dict[str, float]) -> None:
        self.test.append(dict(metrics))


class EpochSaver(Hook):
    """Saves ``ddp_epoch_{n}.pth`` after each epoch through runner.save_checkpoint, on every rank."""

    priority = "LOWEST"

    def after_train_epoch(self, runner: Any) -> None:
        runner.save_checkpoint(f"ddp_epoch_{runner.epoch + 1}.pth")


class SelfSignal(Hook):
    """Sends this process ``signum`` during training iteration ``at`` (0-based, whole run)."""

    def __init__(self, at: int, signum: int = signal.SIGTERM) -> None:
        self.at, self.signum = at, signum

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)


class StopAt(Hook):
    """Sets ``runner.should_stop`` during training iteration ``at`` (0-based, whole run)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter == self.at:
            runner.should_stop = True


class Boom(Hook):
    """Raises during training iteration ``at``, before the optimizer's backward (HIGHEST)."""

    priority = "HIGHEST"

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if runner.iter == self.at:
            raise RuntimeError(f"boom on rank {runner.rank}")


class GradLog(Hook):
    """After the optimizer hook of each iteration: the weight's gradient (None once zeroed).

    ``steps`` gets the gradient the optimizer steps with (a step pre-hook; see ``watch``).
    """

    priority = "LOW"

    def __init__(self) -> None:
        self.after_iter: list[list[float] | None] = []
        self.steps: list[list[float]] = []

    def watch(self, runner: Any) -> None:
        """Record the weight's gradient at every optimizer step of ``runner``."""
        weight = runner.model.weight

        def record(*args: Any) -> None:
            self.steps.append(weight.grad.flatten().tolist())

        runner.optimizer.register_step_pre_hook(record)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        grad = runner.model.weight.grad
        self.after_iter.append(None if grad is None else grad.flatten().tolist())


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 1)).double()


def _train(out: Path, rank: int) -> dict[str, Any]:
    obs: dict[str, Any] = {}
    # 1. Linear: each rank's own work dir, so that what rank 1 wrote (nothing) is visible.
    probe = Probe(data(N_TRAIN, 1))
    runner = Runner(**linear_kwargs(out / f"work_rank{rank}", custom_hooks=[probe, EpochSaver()]))
    # Phases, not run(): run() would end the process group that the runners below join.
    runner.train()
    runner.test()
    obs["linear"] = {
        "epochs": probe.epochs,
        "val": probe.val,
        "test": list(probe.test),  # a copy: the test() below appends to probe.test
        "params": params(runner.model),
        "is_main": runner.is_main_process,
        "rank_ws": [runner.rank, runner.world_size],
        "wrapped": type(runner.wrapped_model).__name__,
        "samplers": [
            type(getattr(loader, "sampler", None)).__name__
            for loader in (runner.train_dataloader, runner.val_dataloader, runner.test_dataloader)
        ],
        "shard_sizes": [len(loader.sampler) for loader in (runner.val_dataloader, runner.test_dataloader)],
    }
    obs["test_again"] = runner.test()  # a later phase: the same numbers
    first = runner

    # 2. BatchNorm, without DDP's buffer broadcast (ddp_kwargs), with and without sync_buffers.
    obs["bn"] = {}
    for key, hooks in (("synced", {}), ("unsynced", {"sync_buffers": None})):
        bn = Runner(
            **linear_kwargs(
                out / f"work_rank{rank}_bn_{key}",
                model=_bn_model(),
                max_epochs=2,
                test_dataloader=None,
                default_hooks=hooks,
                ddp_kwargs=dict(broadcast_buffers=False),
            )
        )
        ddp: Any = bn.wrapped_model  # before run(): its close() lets go of DDP
        bn.run()  # joined the group: leaves it up
        obs["bn"][key] = {
            "buffers": params(bn.model.get_submodule("1")),
            "broadcast_buffers": ddp.broadcast_buffers,
        }

    # 3. Accumulation over 2 iterations: DDP all-reduces only on the step iterations. (Not
    # counted with a Python comm hook: the futures it leaves make gloo abort at exit.)
    grads = GradLog()
    acc = Runner(
        **linear_kwargs(
            out / f"work_rank{rank}_acc",
            max_epochs=1,
            val_dataloader=None,
            test_dataloader=None,
            custom_hooks=[grads],
            default_hooks={"optimizer": dict(type="GradientCumulativeOptimizerHook", cumulative_iters=2)},
        )
    )
    grads.watch(acc)
    acc.run()
    obs["acc"] = {"after_iter": grads.after_iter, "steps": grads.steps, "params": params(acc.model)}
    # 4. should_stop set on rank 1 only: every rank stops at the same boundary.
    stop = Runner(**linear_kwargs(out / f"work_rank{rank}_stop", val_dataloader=None, test_dataloader=None,
                                  custom_hooks=[StopAt(2)] if rank == 1 else []))  # fmt: skip
    stop.run()
    obs["stopped"] = [stop.iter, stop.epoch]
    obs["group_after_joined_runs"] = torch.distributed.is_initialized()

    first.close()
    obs["group_after_close"] = torch.distributed.is_initialized()
    try:
        first.train()
        obs["train_after_close"] = None
    except Exception as exc:
        obs["train_after_close"] = f"{type(exc).__name__}: {exc}"
    return obs


def _interrupted(work_dir: Path, hooks: list[Any], **overrides: Any) -> dict[str, Any]:
    """Run the Linear run in ``work_dir`` (shared by the ranks), recording how it ended."""
    probe = Probe(data(N_TRAIN, 1))
    runner = Runner(**linear_kwargs(work_dir, custom_hooks=[probe, EpochSaver(), *hooks], **overrides))
    obs: dict[str, Any] = {"exit": None, "error": None}
    try:
        runner.run()
    except SystemExit as exc:
        obs["exit"] = exc.code
    except Exception as exc:
        obs["error"] = [type(exc).__name__, str(exc)]
    # run() and a preemption end the group the runner made.
    obs["group_after_run"] = torch.distributed.is_initialized()
    obs.update(
        iter=runner.iter,
        epoch=runner.epoch,
        epochs=probe.epochs,
        params=params(runner.model),
        val=probe.val,
        iters_run=probe.iters,
    )
    return obs


def main(mode: str, out: Path) -> None:
    """Run ``mode`` on this rank and write its observations; exit as the run did."""
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    exit_code = 0
    if mode == "train":
        obs = _train(out, rank)
    elif mode == "sigterm":
        # One rank: rank 1 only, during iteration 5 (0-based) of the run.
        obs = _interrupted(out / "shared", [SelfSignal(at=5)] if rank == 1 else [])
    elif mode == "sigterm_all":
        # Every rank, at different iterations (1 and 2): the first signal decides for all.
        obs = _interrupted(out / "shared_all", [SelfSignal(at=1 + rank)])
    elif mode == "resume":
        obs = _interrupted(out / "shared", [], resume=True)
    elif mode == "nodes":
        obs = _interrupted(out / "nodes", [])
        obs["env"] = {name: os.environ[name] for name in ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE")}
    elif mode == "hook_error":
        obs = _interrupted(out / "hook_error", [Boom(at=2)] if rank == 1 else [], dist_timeout=TIMEOUT_S)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    exit_code = obs.get("exit") or (1 if obs.get("error") else 0)
    (out / f"{mode}_rank{rank}.json").write_text(json.dumps(obs))
    if mode == "hook_error" and rank == 1:
        # Stay alive without taking part (a hung rank): rank 0 must fail by its timeout.
        other = out / f"{mode}_rank0.json"
        deadline = time.monotonic() + 6 * TIMEOUT_S
        while not other.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    sys.exit(exit_code)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))

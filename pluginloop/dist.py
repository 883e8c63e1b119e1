"""torch.distributed helpers for the Runner and the built-in hooks.

pluginloop has no distributed engine of its own: it runs on the process group that
``torchrun`` describes in the environment, with DistributedDataParallel. Every helper is
safe in a single process, where it does nothing or returns its input. Every rank must call
the collectives in the same order: one inside ``if is_main_process():`` hangs the job.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, final

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from pluginloop.errors import DistributedError

_T = TypeVar("_T")
# Markers of gloo's plain RuntimeErrors for a dead or silent peer (NCCL raises DistError).
_PEER_FAILURE_MARKERS = ("gloo", "Connection closed by peer", "Connection reset by peer", "Timed out")
# The gloo side group of max_over_ranks under a backend that cannot reduce CPU tensors.
_control_groups: dict[int, Any] = {}
# Set by teardown: a second group in one process rendezvouses unreliably (stale store keys).
_destroyed: list[bool] = []
_LAUNCHERS = ("auto", "none")
# What torchrun exports to each worker; init_process_group's env:// reads all but LOCAL_RANK.
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# DataLoader settings that shard_dataloader carries over unchanged.
_LOADER_ATTRS = ("num_workers", "collate_fn", "pin_memory", "timeout", "worker_init_fn",
                 "multiprocessing_context", "generator", "persistent_workers",
                 "pin_memory_device", "in_order")  # fmt: skip


@final
@dataclass(frozen=True, slots=True)
class DistInfo:
    """Where this process stands in the run.

    ``initialized_here``: ``setup`` created the process group, so ``teardown`` destroys it
    (a group the caller made is theirs to destroy).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool


def setup(
    launcher: str = "auto",
    backend: str | None = None,
    device: str | torch.device | None = None,
    timeout: datetime.timedelta | float | None = None,
) -> DistInfo:
    """Join the run described by ``launcher`` and return this process's ``DistInfo``.

    ``'auto'`` reuses an existing process group, else reads torchrun's environment and,
    when ``WORLD_SIZE > 1``, creates the group (NCCL for a CUDA device, gloo otherwise;
    ``backend`` overrides). ``'none'`` is a single process even under torchrun.
    ``device`` wins when given; else ``cuda:LOCAL_RANK`` when CUDA is available, else cpu.
    ``timeout`` (a timedelta or seconds) bounds every collective: a rank that waits longer
    for the others (one of them raised, hangs or was killed) fails instead of hanging.
    A group created here lives until ``teardown`` (or the process's exit: see ``teardown``).
    """
    if launcher not in _LAUNCHERS:
        raise DistributedError(
            f"unknown launcher {launcher!r}; valid launchers: 'auto' (torchrun's environment, "
            "or a single process without it) and 'none' (always a single process)"
        )
    if launcher == "none":
        return DistInfo(0, 1, 0, _resolve_device(device, 0), initialized_here=False)
    if _group_exists():
        # A test harness or the user's script made the group: join it, leave teardown to them.
        local_rank = _env_int("LOCAL_RANK")
        dev = _resolve_device(device, local_rank)
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, False)
    env = _read_torchrun_env()
    if env is None or env[1] == 1:
        local_rank = env[2] if env else 0
        return DistInfo(0, 1, local_rank, _resolve_device(device, local_rank), False)
    rank, world_size, local_rank = env
    if _destroyed:
        raise DistributedError(
            "this process already created and destroyed a process group (runner.close(), or "
            "the end of runner.run()), and a second one cannot be set up reliably in the same "
            "worker; build every Runner before the first one closes (they share its group), or "
            "use train()/val()/test() and close() once at the end"
        )
    if not dist.is_available():
        raise DistributedError(
            f"WORLD_SIZE={world_size} but this torch build has no torch.distributed; "
            "install a build with distributed support or pass launcher='none'"
        )
    dev = _resolve_device(device, local_rank)  # before the group: NCCL binds the current GPU
    # Pick by device, not by "CUDA exists": NCCL cannot reduce the CPU tensors of device='cpu'.
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if isinstance(timeout, (int, float)):
        timeout = datetime.timedelta(seconds=timeout)
    # env:// (the default) takes rank, world size and rendezvous from torchrun's variables.
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(rank, world_size, local_rank, dev, initialized_here=True)


def teardown(info: DistInfo) -> None:
    """Destroy the process group iff ``setup`` created it (again: a no-op).

    Call it on every rank at the end of the run, in the normal flow, before the process
    exits. A gloo worker thread that frees an all-reduce's tensors while the interpreter
    shuts down needs the GIL and aborts the process ("terminate called without an active
    exception"; pytorch/pytorch#179291). Measured with torch 2.13, 2 gloo ranks with DDP:
    exiting without destroying aborted 3 runs in 8, destroying from an atexit handler 4 in
    8, destroying before exit 0 in 8. Without the short pause below, a loaded CPU still
    aborted 1 run in 10 (0 in 20 with it), and a DDP model with a Python comm hook 3 in 10
    (0 in 10). Under torchrun a destroyed group cannot be reliably created again in the
    same worker.
    """
    if info.initialized_here and _group_exists():
        _control_groups.clear()
        dist.destroy_process_group()
        _destroyed.append(True)
        # A gloo worker thread may still be waiting for the GIL to free the last collective's
        # tensors (DDP keeps the group and its threads alive): let it, before any shutdown.
        time.sleep(0.05)


def _group_exists() -> bool:
    # is_initialized does not exist on builds without distributed support.
    return dist.is_available() and dist.is_initialized()


def _env_int(name: str) -> int:
    value = os.environ.get(name, "0")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(
            f"environment variable {name}={value!r} is not an integer; launch with torchrun "
            "(which sets it) or unset it"
        ) from None


def _read_torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world_size, local_rank) from torchrun's variables; None if it did not launch us."""
    # RANK or WORLD_SIZE marks a launch; a stray MASTER_ADDR or LOCAL_RANK alone does not.
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise DistributedError(
            f"incomplete torchrun environment: {', '.join(missing)} not set (torchrun sets "
            f"all of {', '.join(_TORCHRUN_VARS)}); launch with `torchrun --nproc-per-node=N "
            "script.py`, set the missing variables, or pass launcher='none' for one process"
        )
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    if not 0 <= rank < world_size:
        raise DistributedError(
            f"RANK={rank} is out of range for WORLD_SIZE={world_size}; each of the "
            "WORLD_SIZE processes needs a distinct RANK in [0, WORLD_SIZE)"
        )
    return rank, world_size, _env_int("LOCAL_RANK")


def _resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is not None:
        dev = torch.device(device)
        # Plain 'cuda' under torchrun means "this rank's GPU", not GPU 0 on every rank.
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if dev.type == "cuda":
        if dev.index is None or dev.index >= torch.cuda.device_count():
            raise DistributedError(
                f"device {dev} does not exist: this node has {torch.cuda.device_count()} CUDA "
                "device(s); start at most one process per GPU or pass device="
            )
        torch.cuda.set_device(dev)
    return dev


def is_distributed() -> bool:
    """True when a process group of more than one process is running."""
    return _group_exists() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's global rank; 0 without a process group."""
    return dist.get_rank() if _group_exists() else 0


def get_world_size() -> int:
    """The number of processes; 1 without a process group."""
    return dist.get_world_size() if _group_exists() else 1


def is_main_process() -> bool:
    """True on rank 0, the one that writes logs and checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    """Wait until every rank gets here; a no-op in a single process."""
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks in place and return it; unchanged in a single process."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average a floating-point ``t`` over ranks in place and return it."""
    if not (t.is_floating_point() or t.is_complex()):
        raise DistributedError(
            f"all_reduce_mean needs a floating-point tensor, got {t.dtype}; "
            "convert it first (t.double()) or use all_reduce_sum"
        )
    return all_reduce_sum(t).div_(get_world_size())  # gloo has no ReduceOp.AVG


def any_rank(flag: bool, device: str | torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank.

    A SIGTERM reaches one rank; this makes all ranks stop at the same iteration boundary
    instead of the others waiting forever in the next collective.
    """
    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_ranks(value: int) -> int:
    """The largest ``value`` over all ranks, on every rank; ``value`` itself in a single process.

    Reduced on the CPU, so a check every iteration (the preemption flag) costs one tiny
    message and no GPU synchronisation. Under NCCL alone this needs a gloo side group,
    created by the first call: every rank must make its first call at the same point.
    """
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_cpu_group())
    return int(t.item())


def _cpu_group() -> Any:
    """None (the default group) if it reduces CPU tensors, else a cached gloo group."""
    backend = str(dist.get_backend())  # 'gloo', 'nccl', or per device: 'cpu:gloo,cuda:nccl'
    if "gloo" in backend or "mpi" in backend:
        return None
    if not _control_groups:
        _control_groups[0] = dist.new_group(backend="gloo")
    return _control_groups[0]


def is_peer_failure(exc: BaseException) -> bool:
    """True if ``exc`` is what a collective raises when another rank died, left or went silent.

    NCCL raises ``torch.distributed.DistError``; gloo a plain RuntimeError that names gloo
    ("Timed out waiting ...ms", "Connection closed by peer").
    """
    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in _PEER_FAILURE_MARKERS)


def peer_failure_error(
    exc: BaseException, where: str, timeout: datetime.timedelta | None
) -> DistributedError:
    """The error a healthy rank raises when a collective failed under it (see ``is_peer_failure``)."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    limit = f"{timeout.total_seconds():g} s" if timeout is not None else "torch's default"
    return DistributedError(
        f"rank {get_rank()} of {get_world_size()}: a collective failed {where}: "
        f"{type(exc).__name__}: {detail}. Another rank most likely raised an error, was killed "
        "or stopped responding: its own traceback names the cause. A rank that stops "
        f"responding fails the others after the process-group timeout ({limit}; set it with "
        "Runner(dist_timeout=seconds))"
    )


def check_resume_world_size(meta: dict[str, Any], world_size: int, path: str | os.PathLike[str]) -> None:
    """Refuse to resume ``path`` mid-epoch under another world size; warn at an epoch boundary.

    Model and optimizer state are the same on every rank, so they load under any world
    size, and the next epoch's shards are drawn for the new one. A position inside an epoch
    counts this rank's batches, which mean other samples under another world size.
    """
    saved = meta.get("world_size")
    if not isinstance(saved, int) or saved == world_size:
        return
    inner = meta.get("inner_iter", 0)
    if inner:
        raise DistributedError(
            f"cannot resume {Path(path)} with world size {world_size}: it was saved by a run of "
            f"world size {saved} in the middle of an epoch ({inner} iterations into epoch "
            f"{meta.get('epoch', 0) + 1}), and that position means other samples under another "
            f"world size; resume it with {saved} processes (torchrun --nproc-per-node={saved}), "
            "or from a checkpoint taken at the end of an epoch"
        )
    warnings.warn(
        f"resuming {Path(path)}, saved by a run of world size {saved}, with world size {world_size}: "
        f"the global batch size changes by a factor {world_size}/{saved}; scale the learning rate "
        "if the schedule depends on it",
        UserWarning,
        stacklevel=3,
    )


def reduce_weighted_means(
    values: dict[str, float], weight: float, device: str | torch.device
) -> dict[str, float]:
    """Global means from each rank's means over ``weight`` samples, identical on every rank.

    One all_reduce of one float64 tensor. Every rank must pass the same names: other names
    raise DistributedError; another number of names may instead fail (gloo) or hang (NCCL)
    in the collective. A total weight of zero gives NaN.
    """
    if not is_distributed():
        return {name: float(v) for name, v in values.items()}
    names = sorted(values)  # dict order may differ between ranks; the packing must not
    # A rank that saw no samples may hold NaN means (0/0): it must add 0, not NaN * 0.
    packed = [float(values[n]) * weight if weight else 0.0 for n in names]
    # The names' checksum rides along: summed, it is world * own checksum iff all agree.
    checksum = float(zlib.crc32("\0".join(names).encode()))
    t = torch.tensor([*packed, float(weight), checksum], dtype=torch.float64, device=device)
    sums = all_reduce_sum(t).tolist()
    if sums[-1] != checksum * get_world_size():
        raise DistributedError(
            f"ranks reported different metric names (rank {get_rank()} has {names}); "
            "every rank must compute the same metrics"
        )
    total = sums[-2]
    return {n: sums[i] / total if total else float("nan") for i, n in enumerate(names)}


def broadcast_object(obj: _T, src: int = 0) -> _T:
    """Rank ``src``'s picklable ``obj`` on every rank; ``obj`` itself in a single process."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    result: _T = box[0]
    return result


def sync_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running stats) across ranks, in place.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are copied from rank 0 instead:
    an average of counters is not a counter. A no-op in a single process.
    """
    if not is_distributed():
        return
    # One collective per buffer is fine once an epoch; buffers() has the same order on
    # every rank because the model is the same.
    with torch.no_grad():
        for buf in unwrap_model(module).buffers():
            if buf.is_floating_point() or buf.is_complex():
                all_reduce_mean(buf)
            else:
                dist.broadcast(buf, src=0)


def wrap_model(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, else ``model`` unchanged.

    The model must already be on ``info.device``. On CUDA ``device_ids`` defaults to that
    device (``cuda:LOCAL_RANK`` unless ``setup`` got another); on CPU DDP takes none.
    """
    if isinstance(model, DDP) or info.world_size == 1 or not is_distributed():
        return model
    if info.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [info.device.index])
    return DDP(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module: ``model.module`` for DDP, else ``model``."""
    inner: nn.Module = model.module if isinstance(model, DDP) else model
    return inner


def no_sync(model: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce inside the block (accumulation's non-step iterations).

    Gradients accumulate locally and are synced by the first backward outside the block.
    A null context for a model that is not DDP.
    """
    return model.no_sync() if isinstance(model, DDP) else contextlib.nullcontext()


def loader_shuffles(loader: DataLoader[Any]) -> bool:
    """True iff ``loader`` draws samples in random order (its sampler is a RandomSampler)."""
    sampler = _base_sampler(loader)
    if isinstance(sampler, DistributedSampler):
        return bool(sampler.shuffle)
    return isinstance(sampler, RandomSampler)


def _base_sampler(loader: DataLoader[Any]) -> object:
    # With batch_sampler= given, loader.sampler is an unused default SequentialSampler.
    return getattr(loader.batch_sampler, "sampler", loader.sampler)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + num_replicas, ...`` of ``range(size)``: each index on exactly one rank.

    DistributedSampler repeats samples so that every rank gets as many, which counts them
    twice in evaluation metrics. This one does not: ranks may hold one sample (so one batch)
    fewer, which only a loop without per-iteration collectives (evaluation) can take.
    """

    def __init__(self, size: int, num_replicas: int, rank: int) -> None:
        self.size, self.num_replicas, self.rank = size, num_replicas, rank
        self._indices = range(rank, size, num_replicas)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


def shard_dataloader(
    loader: DataLoader[Any], *, shuffle: bool, seed: int, drop_last: bool = False, exact: bool = False
) -> DataLoader[Any]:
    """A copy of ``loader`` that reads only this rank's share, through a DistributedSampler.

    ``shuffle`` is normally ``loader_shuffles(loader)``; ``drop_last`` is the sampler's
    (drop the tail rather than repeat samples to give every rank as many). ``exact=True``
    (evaluation) uses a :class:`ShardSampler` instead: every sample read exactly once over
    all ranks, in order. Returned unchanged when not distributed, already sharded, or over
    an IterableDataset (with a warning). Call ``loader.sampler.set_epoch(epoch)`` each
    epoch or every epoch repeats.
    """
    if exact and (shuffle or drop_last):
        raise ValueError("exact=True shards in order and drops nothing: pass shuffle=False, drop_last=False")
    if not is_distributed():
        return loader
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset):
        warnings.warn(
            "shard_dataloader cannot shard an IterableDataset, so every rank reads all of it; "
            "split the stream in its __iter__ by torch.distributed.get_rank()/get_world_size() "
            "(and torch.utils.data.get_worker_info())",
            stacklevel=2,
        )
        return loader
    sampler, batch_sampler = _base_sampler(loader), loader.batch_sampler
    if isinstance(sampler, (DistributedSampler, ShardSampler)):
        return loader
    # Only "every index once, in order or shuffled" survives the swap to a DistributedSampler;
    # silently replacing a weighted sampler or a bucketing batch sampler would change training.
    size = len(dataset)  # type: ignore[arg-type]  # not iterable, so map-style: sized
    plain = type(sampler) is SequentialSampler or (
        type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == size
    )
    if not plain or (batch_sampler is not None and type(batch_sampler) is not BatchSampler):
        raise DistributedError(
            f"cannot shard a DataLoader with batch_sampler {type(batch_sampler).__name__} over "
            f"sampler {type(sampler).__name__}: replacing them would change which samples are "
            "drawn; shard it yourself by building it on a torch.utils.data.DistributedSampler"
        )
    if type(loader) is not DataLoader:
        warnings.warn(
            f"shard_dataloader returns a plain DataLoader in place of {type(loader).__name__}; "
            "pass one built on a DistributedSampler to keep your subclass",
            stacklevel=2,
        )
    if exact and size < get_world_size():
        raise DistributedError(
            f"cannot shard an evaluation set of {size} samples over {get_world_size()} ranks "
            "without giving a rank none; use at least as many samples as processes"
        )
    return _rebuild_loader(
        loader,
        ShardSampler(size, get_world_size(), get_rank()) if exact else DistributedSampler(
            dataset, get_world_size(), get_rank(), shuffle=shuffle, seed=seed, drop_last=drop_last
        ),
    )


def _rebuild_loader(loader: DataLoader[Any], sampler: Sampler[Any], **overrides: Any) -> DataLoader[Any]:
    """A plain DataLoader with every setting of ``loader`` but drawing indices from ``sampler``.

    Batch size and drop_last come from ``loader``'s BatchSampler (``loader.batch_size`` is None
    when ``batch_sampler=`` was given); ``overrides`` replace settings (e.g. ``generator``).
    Used by ``shard_dataloader`` and by resumable sampling (``pluginloop._resume``).
    """
    same = {name: getattr(loader, name) for name in _LOADER_ATTRS}
    if loader.num_workers > 0:  # DataLoader refuses a prefetch_factor without workers
        same["prefetch_factor"] = loader.prefetch_factor
    same.update(overrides)
    batch_sampler = loader.batch_sampler
    return DataLoader(
        loader.dataset,
        batch_size=getattr(batch_sampler, "batch_size", None),
        drop_last=bool(getattr(batch_sampler, "drop_last", False)),
        sampler=sampler,
        **same,
    )

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
import warnings
import zlib
from dataclasses import dataclass
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
    SequentialSampler,
)

from pluginloop.errors import DistributedError

_T = TypeVar("_T")
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
    timeout: datetime.timedelta | None = None,
) -> DistInfo:
    """Join the run described by ``launcher`` and return this process's ``DistInfo``.

    ``'auto'`` reuses an existing process group, else reads torchrun's environment and,
    when ``WORLD_SIZE > 1``, creates the group (NCCL for a CUDA device, gloo otherwise;
    ``backend`` overrides). ``'none'`` is a single process even under torchrun.
    ``device`` wins when given; else ``cuda:LOCAL_RANK`` when CUDA is available, else cpu.
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
    if not dist.is_available():
        raise DistributedError(
            f"WORLD_SIZE={world_size} but this torch build has no torch.distributed; "
            "install a build with distributed support or pass launcher='none'"
        )
    dev = _resolve_device(device, local_rank)  # before the group: NCCL binds the current GPU
    # Pick by device, not by "CUDA exists": NCCL cannot reduce the CPU tensors of device='cpu'.
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    # env:// (the default) takes rank, world size and rendezvous from torchrun's variables.
    dist.init_process_group(backend=backend, timeout=timeout)
    return DistInfo(rank, world_size, local_rank, dev, initialized_here=True)


def teardown(info: DistInfo) -> None:
    """Destroy the process group iff ``setup`` created it."""
    if info.initialized_here and _group_exists():
        dist.destroy_process_group()


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


def shard_dataloader(
    loader: DataLoader[Any], *, shuffle: bool, seed: int, drop_last: bool = False
) -> DataLoader[Any]:
    """A copy of ``loader`` that reads only this rank's share, through a DistributedSampler.

    ``shuffle`` is normally ``loader_shuffles(loader)``; ``drop_last`` is the sampler's
    (drop the tail rather than repeat samples to give every rank as many). Returned
    unchanged when not distributed, already sharded, or over an IterableDataset (with a
    warning). Call ``loader.sampler.set_epoch(epoch)`` each epoch or every epoch repeats.
    """
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
    if isinstance(sampler, DistributedSampler):
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
    same = {name: getattr(loader, name) for name in _LOADER_ATTRS}
    if loader.num_workers > 0:  # DataLoader refuses a prefetch_factor without workers
        same["prefetch_factor"] = loader.prefetch_factor
    return DataLoader(
        dataset,
        # From the BatchSampler: loader.batch_size is None when batch_sampler= was given.
        batch_size=getattr(batch_sampler, "batch_size", None),
        drop_last=bool(getattr(batch_sampler, "drop_last", False)),
        sampler=DistributedSampler(
            dataset, get_world_size(), get_rank(), shuffle=shuffle, seed=seed, drop_last=drop_last
        ),
        **same,
    )

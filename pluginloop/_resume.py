"""Resumable sampling: the rest of an epoch, in the same order, without loading what was trained.

A plain ``RandomSampler`` draws each epoch's order from the global torch RNG when its iterator
starts, so after a resume nobody can say which order the interrupted epoch had; skipping
trained batches by reading and discarding them is slow and, with workers, shifts every random
stream. Instead the Runner rebuilds the train loader once, at construction, around a
:class:`ResumableSampler`: each epoch's order comes from a generator seeded by
``(runner.seed, epoch)``, and a resumed epoch skips the first ``k * batch_size`` *indices*,
so the skipped samples are never loaded. The loader's own generator (the workers' base seed)
is re-seeded the same way, so iterating a loader never touches the global RNG that dropout
draws from.

Wrapped: ``RandomSampler``, ``SequentialSampler`` and ``DistributedSampler`` (exact types,
under a plain ``BatchSampler`` or none). Other samplers, batch samplers, IterableDatasets and
non-DataLoader iterables are left alone; a mid-epoch resume then reads and discards the
trained batches, with a warning that the order may differ.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from pluginloop.dist import _base_sampler, _rebuild_loader

__all__ = ["ResumableSampler", "epoch_batches", "epoch_seed", "make_resumable", "restore", "sampler_state"]

_SAMPLER_STREAM, _WORKER_STREAM = 0, 1


def epoch_seed(seed: int, epoch: int, stream: int = _SAMPLER_STREAM) -> int:
    """A 64-bit seed for ``epoch`` of a run seeded ``seed``, well mixed (no seed+1 == epoch+1 clash)."""
    mixed = np.random.SeedSequence([seed & (2**64 - 1), epoch, stream]).generate_state(1, np.uint64)
    return int(mixed[0])


class ResumableSampler(Sampler[int]):
    """Wraps a sampler so that epoch ``e``'s order depends only on ``(seed, e)`` and can start at ``skip``.

    ``set_epoch(e)`` picks the epoch (the Runner calls it before each epoch; DistSamplerSeedHook's
    call with the same number is harmless); ``skip_next(n)`` makes the next iteration start
    after its first ``n`` indices. ``len()`` stays the whole epoch's, as hooks expect.
    """

    def __init__(self, base: Sampler[int], seed: int) -> None:
        self.base = base
        self.seed = seed
        self.epoch = 0
        self._skip = 0
        self.generator = torch.Generator()
        if type(base) is RandomSampler:
            # The same sampler settings, drawing from our per-epoch generator instead of the
            # global RNG (or the user's generator, whose state a checkpoint could not place).
            self.base = RandomSampler(base.data_source, replacement=base.replacement,
                                      num_samples=base.num_samples, generator=self.generator)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on."""
        self.epoch = epoch

    def skip_next(self, indices: int) -> None:
        """Make the next iteration leave out its first ``indices`` indices (without reading them)."""
        self._skip = indices

    def __iter__(self) -> Iterator[int]:
        skip, self._skip = self._skip, 0
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        if isinstance(self.base, DistributedSampler):  # its order is a function of seed + epoch
            self.base.set_epoch(self.epoch)
        indices = iter(self.base)
        return itertools.islice(indices, skip, None) if skip else indices  # no per-index cost unless resumed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]  # the three wrapped samplers are sized


def make_resumable(loader: Any, seed: int) -> Any:
    """``loader`` rebuilt around a :class:`ResumableSampler`, or ``loader`` itself if it cannot be."""
    if type(loader) is not DataLoader or isinstance(loader.dataset, IterableDataset):
        return loader
    sampler, batch_sampler = _base_sampler(loader), loader.batch_sampler
    if type(sampler) not in (RandomSampler, SequentialSampler, DistributedSampler):
        return loader
    if batch_sampler is not None and type(batch_sampler) is not BatchSampler:
        return loader  # a custom batch sampler (bucketing...) does not batch k*B indices as k batches
    # The loader's generator only seeds the workers (the sampler no longer uses it); a fresh
    # one per epoch keeps iter(loader) off the global RNG.
    return _rebuild_loader(loader, ResumableSampler(sampler, seed), generator=torch.Generator())  # type: ignore[arg-type]


def _resumable(loader: Any) -> ResumableSampler | None:
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, ResumableSampler) else None


def _batch_size(loader: DataLoader[Any]) -> int:
    """Indices per batch: the BatchSampler's size, or 1 without automatic batching."""
    return int(getattr(loader.batch_sampler, "batch_size", None) or 1)


def epoch_batches(
    loader: Any, epoch: int, skip: int, logger: logging.Logger | None = None
) -> Iterator[tuple[int, Any]]:
    """``(batch_idx, batch)`` of epoch ``epoch``, starting at batch ``skip`` (indices from ``skip``).

    With a :class:`ResumableSampler` the skipped batches are never loaded. Otherwise they are
    read and discarded, with a warning, and the order is the loader's own.
    """
    sampler = _resumable(loader)
    if sampler is not None:
        sampler.set_epoch(epoch)
        sampler.skip_next(skip * _batch_size(loader))
        loader.generator.manual_seed(epoch_seed(sampler.seed, epoch, _WORKER_STREAM))
        return enumerate(loader, start=skip)
    batches = enumerate(loader)
    if skip:
        if logger is not None:
            logger.warning(
                "resuming inside epoch %d: the train loader (%s) cannot skip batches, so its first %d "
                "batches are read and discarded, and unless its order is fixed the rest of the epoch "
                "differs from the interrupted run; a DataLoader with shuffle=True/False or a "
                "DistributedSampler skips them without reading", epoch + 1, _describe(loader), skip,
            )
        for _ in range(skip):
            next(batches)
    return batches


def _describe(loader: Any) -> str:
    if isinstance(loader, DataLoader):
        return f"DataLoader over {type(_base_sampler(loader)).__name__}"
    return type(loader).__name__


def sampler_state(loader: Any, seed: int, epoch: int, batches_done: int) -> dict[str, Any]:
    """What a checkpoint records about the train sampler at batch ``batches_done`` of ``epoch``."""
    sampler = _resumable(loader)
    state: dict[str, Any] = {
        "resumable": sampler is not None,
        "seed": seed,
        "epoch": epoch,
        "batches_done": batches_done,
    }
    if sampler is not None and isinstance(sampler.base, DistributedSampler):
        state["distributed_seed"] = sampler.base.seed  # its own: the user's, or the runner's when sharded
    if isinstance(loader, DataLoader):
        state["batch_size"] = _batch_size(loader)
        if isinstance(loader.dataset, Sized):
            state["dataset_size"] = len(loader.dataset)
    return state


def restore(loader: Any, saved: dict[str, Any], seed: int) -> None:
    """Make a resumable loader draw its orders as the saved run did: from ``seed`` (the run's)
    and, for a DistributedSampler, its saved seed."""
    sampler = _resumable(loader)
    if sampler is not None:
        sampler.seed = seed
        if isinstance(sampler.base, DistributedSampler) and "distributed_seed" in saved:
            sampler.base.seed = saved["distributed_seed"]


def check_compatible(loader: Any, saved: dict[str, Any], logger: logging.Logger) -> None:
    """Warn when the loader a run resumes with cannot continue the saved epoch's sequence."""
    if not isinstance(loader, DataLoader) or not saved.get("batches_done"):
        return
    changes = []
    if "batch_size" in saved and saved["batch_size"] != _batch_size(loader):
        changes.append(f"batch size {saved['batch_size']} -> {_batch_size(loader)}")
    size = len(loader.dataset) if isinstance(loader.dataset, Sized) else None
    if size is not None and saved.get("dataset_size", size) != size:
        changes.append(f"dataset size {saved['dataset_size']} -> {size}")
    if changes:
        logger.warning("resume: the train loader changed (%s): the rest of the interrupted epoch is not the "
                       "sample sequence the run would have seen", ", ".join(changes))

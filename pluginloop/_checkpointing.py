"""Saving and loading the Runner's checkpoints: the rank-safe write, verified load and resume.

``Runner.save_checkpoint`` / ``load_checkpoint`` are these functions; the file layer
(atomic writes, records, verification) is :mod:`pluginloop.checkpoint`, what a checkpoint
holds is :mod:`pluginloop._state`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluginloop import _state, checkpoint, dist
from pluginloop.errors import CheckpointError, DistributedError

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["checkpoint_dirs", "load", "load_or_resume", "save"]


def save(runner: Runner, filename: str, out_dir: str | os.PathLike[str] | None, save_optimizer: bool) -> Path:
    """See :meth:`pluginloop.Runner.save_checkpoint`."""
    state = _state.collect(runner, save_optimizer)
    runner.hook.before_save_checkpoint(runner=runner, checkpoint=state)
    _state.check_plain(state)  # else it would save, then refuse to load (weights_only) at resume
    path = Path(out_dir or runner.work_dir) / filename
    failed: Exception | None = None
    if runner.rank == 0:
        try:
            epoch, iteration, _ = runner._completed()
            path.parent.mkdir(parents=True, exist_ok=True)
            runner.work_dir.mkdir(parents=True, exist_ok=True)  # the pointer's home, when out_dir differs
            meta = {"epoch": epoch, "iter": iteration, "step": iteration}
            checkpoint.save_checkpoint(state, path, meta=meta)
            checkpoint.write_pointer(runner.work_dir, path)
        except Exception as exc:  # raised below, after the other ranks learnt of it
            failed = exc
    # Every rank, outside the rank-0 branch: the others wait for the write (like a
    # barrier) and learn whether it failed, instead of waiting in the next collective.
    if dist.max_over_ranks(int(failed is not None)):
        if failed is not None:
            raise failed
        raise DistributedError(f"rank 0 failed to write checkpoint {path}: its traceback names the cause")
    return path


def load(runner: Runner, path: str | os.PathLike[str], resume: bool) -> dict[str, Any]:
    """See :meth:`pluginloop.Runner.load_checkpoint`."""
    path = Path(path)
    verify = resume or not path.is_file() or checkpoint._record_path(path).is_file()
    if not verify:
        runner.logger.warning(
            "load_from: %s has no pluginloop record, so it was not verified; loading its "
            "weights with weights_only=True",
            path,
        )
    try:
        ckpt = checkpoint.load_checkpoint(path, map_location=runner.device, verify=verify)
    except CheckpointError as exc:
        if resume and path.is_file() and not checkpoint._record_path(path).is_file():
            raise CheckpointError(
                f"cannot resume from {path}: it has no pluginloop record, so it was "
                "not written by pluginloop (or its save was interrupted); to start "
                "from its weights, pass load_from= instead",
                path,
            ) from exc
        raise
    if resume:  # before any state is applied: refuse a position another world size cannot use
        dist.check_resume_world_size(ckpt.get("meta", {}), runner.world_size, path)
    (_state.restore if resume else _state.restore_weights)(runner, ckpt)
    runner.logger.info(
        "%s %s (epoch %d, iter %d)",
        "resumed from" if resume else "loaded weights from",
        path,
        runner.epoch,
        runner.iter,
    )
    runner.hook.after_load_checkpoint(runner=runner, checkpoint=ckpt)
    if resume and not runner._resume_inner:  # saved at an epoch boundary: the run stood right here
        _state.restore_rng(runner)
    return ckpt


def checkpoint_dirs(runner: Runner) -> list[Path]:
    """The work dir, then each directory a hook saves checkpoints to (CheckpointHook's out_dir)."""
    dirs = [runner.work_dir]
    for _, plugin in runner._pm.list_name_plugin():
        where = getattr(plugin, "checkpoint_dir", None)
        if callable(where) and Path(where(runner)) not in dirs:
            dirs.append(Path(where(runner)))
    return dirs


def load_or_resume(runner: Runner) -> None:
    """At the start of a phase: clear stale temp files, then resume or load_from, once per runner."""
    if runner.is_main_process:  # killed saves leave temp files; at start nothing is writing
        for directory in checkpoint_dirs(runner):
            for stale in checkpoint.remove_stale_temp_files(directory):
                runner.logger.info("removed %s, left by an interrupted save", stale)
    path: Path | None = None
    if runner.resume:
        if runner.resume is True:  # rank 0 picks, so that every rank loads the same file
            directory = checkpoint_dirs(runner)[-1]
            found = checkpoint.find_resumable(directory, runner.work_dir) if runner.is_main_process else None
            path = dist.broadcast_object(found)
        else:
            path = Path(runner.resume)
        unseen = path is not None and runner.world_size > 1 and not os.path.isfile(path)
        if path is not None and runner.world_size > 1 and dist.max_over_ranks(int(unseen)):
            raise DistributedError(
                f"checkpoint {path} is missing on some rank: in a multi-node run "
                "the work_dir must be on a filesystem every node sees"
            )
        if path is None:
            runner.logger.info(
                "resume=True: no checkpoint in %s yet, %s",
                checkpoint_dirs(runner)[-1],
                "loading the weights of load_from" if runner.load_from else "starting fresh",
            )
    if path is not None:
        ckpt = load(runner, path, resume=True)
        if ckpt["meta"].get("val_pending") and runner.val_dataloader is not None:
            # Saved at the end of a train epoch, before its validation: run it now, as the
            # interrupted run did next (plateau schedulers, best checkpoint, early stopping).
            runner.logger.info("the checkpoint precedes its epoch's validation: validating first")
            with _state.training_rng_kept(runner):
                runner._evaluate("val")
    elif runner.load_from is not None:  # with resume=True, only when there is nothing to resume
        load(runner, runner.load_from, resume=False)
    runner.resume = runner.load_from = None  # once per runner, not again in a later phase

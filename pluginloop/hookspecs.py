"""The contract: pluginloop's 16 hook points, as pluggy hookspecs of project ``pluginloop``.

The loop that fires them (``Runner.run``)::

    before_run(runner)
    load_from / resume ............................. after_load_checkpoint(runner, checkpoint)
    while runner.epoch < max_epochs and not runner.should_stop:
        before_train_epoch(runner)
        for batch_idx, data_batch in train_dataloader:
            before_train_iter(runner, batch_idx, data_batch)
            outputs = forward + loss                 # runner.outputs, outputs['loss']
            after_train_iter(runner, batch_idx, data_batch, outputs)
                                                     # OptimizerHook (HIGH): backward + step
            runner.iter += 1
        after_train_epoch(runner)
        runner.epoch += 1
        every val_interval epochs and after the last:
            before_val_epoch(runner)
            for ...: before_val_iter(runner, batch_idx, data_batch)
                     outputs = forward (no grad)
                     after_val_iter(runner, batch_idx, data_batch, outputs)
            after_val_epoch(runner, metrics)
    if test_dataloader:
        before_test_epoch(runner) ... before_test_iter / after_test_iter ... after_test_epoch(runner, metrics)
    after_run(runner)

    runner.save_checkpoint(...) fires before_save_checkpoint(runner, checkpoint) just before writing.

Every point is called by keyword; an implementation may accept any subset of the point's
arguments. At each point implementations run by priority (lower value first), equal
priorities in registration order. Built-in priorities: OptimizerHook / Fp16OptimizerHook /
GradientCumulativeOptimizerHook HIGH (30); DistSamplerSeedHook, SyncBuffersHook,
EmptyCacheHook, IterTimerHook NORMAL (50); LoggerHook BELOW_NORMAL (60);
ParamSchedulerHook LOW (70); CheckpointHook VERY_LOW (90).

``runner.epoch`` and ``runner.iter`` count *completed* epochs and iterations: inside
``after_train_iter`` the iteration just run is number ``runner.iter`` (from 0) and
``runner.iter + 1`` iterations will have completed once the point returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pluginloop.runner import Runner

PROJECT_NAME = "pluginloop"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def before_run(runner: Runner) -> None:
    """Once, before anything else of ``run()``, before a checkpoint is loaded.

    May change: the runner's attributes, e.g. push a context manager factory onto
    ``runner.forward_contexts``. Fp16OptimizerHook installs autocast here.
    """


@hookspec
def after_load_checkpoint(runner: Runner, checkpoint: dict[str, Any]) -> None:
    """After ``load_from`` / ``resume`` restored model, optimizer, schedulers and counters.

    ``checkpoint`` is the loaded dict; a hook restores its own state from it (hooks with
    ``load_state_dict`` get theirs restored automatically before this point). Resume
    logic reads ``runner.epoch`` / ``runner.iter`` here, already the resumed values.
    """


@hookspec
def before_train_epoch(runner: Runner) -> None:
    """At the start of each training epoch; ``runner.epoch`` epochs have completed.

    DistSamplerSeedHook (NORMAL) calls the train sampler's ``set_epoch(runner.epoch)``
    here; EmptyCacheHook may empty the CUDA cache.
    """


@hookspec
def before_train_iter(runner: Runner, batch_idx: int, data_batch: Any) -> None:
    """Before the forward pass of each training iteration.

    ``batch_idx`` counts from 0 within the epoch; ``data_batch`` is the batch already moved
    to the runner's device. IterTimerHook (NORMAL) records the data-loading time here.
    """


@hookspec
def after_train_iter(runner: Runner, batch_idx: int, data_batch: Any, outputs: dict[str, Any]) -> None:
    """After the forward pass and loss of each training iteration.

    ``outputs`` (also ``runner.outputs``) holds ``'loss'``, the scalar loss tensor with its
    autograd graph. The optimizer hooks (HIGH) run backward and step here; later hooks
    (timer NORMAL, logger BELOW_NORMAL, iteration schedulers LOW, iteration checkpoints
    VERY_LOW) see the updated parameters. ``runner.iter`` is incremented after it returns.
    """


@hookspec
def after_train_epoch(runner: Runner) -> None:
    """After the last iteration of each training epoch, before validation.

    SyncBuffersHook (NORMAL) averages buffers across ranks, ParamSchedulerHook (LOW) steps
    epoch-based schedulers, then CheckpointHook (VERY_LOW) saves. ``runner.epoch`` is
    incremented after it returns, so ``runner.epoch + 1`` is the epoch just finished,
    counted from 1.
    """


@hookspec
def before_val_epoch(runner: Runner) -> None:
    """Before the validation loop (every ``val_interval`` epochs and after the last)."""


@hookspec
def before_val_iter(runner: Runner, batch_idx: int, data_batch: Any) -> None:
    """Before each validation forward pass (run under ``torch.no_grad`` and ``model.eval()``)."""


@hookspec
def after_val_iter(runner: Runner, batch_idx: int, data_batch: Any, outputs: dict[str, Any]) -> None:
    """After each validation forward pass; ``outputs`` holds ``'loss'`` (when computable) and ``'preds'``."""


@hookspec
def after_val_epoch(runner: Runner, metrics: dict[str, float]) -> None:
    """After the validation loop with its ``metrics`` (name -> float: ``'loss'`` and every metric).

    The dict may be changed or extended; ParamSchedulerHook steps plateau schedulers with it,
    LoggerHook prints it and CheckpointHook keeps the best checkpoint by it.
    """


@hookspec
def before_test_epoch(runner: Runner) -> None:
    """Before the test loop, which runs once after training when a test loader is given."""


@hookspec
def before_test_iter(runner: Runner, batch_idx: int, data_batch: Any) -> None:
    """Before each test forward pass (run under ``torch.no_grad`` and ``model.eval()``)."""


@hookspec
def after_test_iter(runner: Runner, batch_idx: int, data_batch: Any, outputs: dict[str, Any]) -> None:
    """After each test forward pass; ``outputs`` holds ``'loss'`` (when computable) and ``'preds'``."""


@hookspec
def after_test_epoch(runner: Runner, metrics: dict[str, float]) -> None:
    """After the test loop with its ``metrics`` (name -> float: ``'loss'`` and every metric)."""


@hookspec
def after_run(runner: Runner) -> None:
    """Once, at the end of ``run()`` after training and testing, also after an early stop.

    Not fired when the run ends with an exception.
    """


@hookspec
def before_save_checkpoint(runner: Runner, checkpoint: dict[str, Any]) -> None:
    """Just before a checkpoint is written, with the complete dict about to be saved.

    A hook may add entries (plain values and tensors only: checkpoints load with
    ``weights_only=True``) or change them. Hook states from ``state_dict()`` are already
    in ``checkpoint['hooks']``.
    """


#: The hook points in firing order (``before_save_checkpoint`` last: it fires on demand).
HOOK_POINTS: tuple[str, ...] = (
    "before_run",
    "after_load_checkpoint",
    "before_train_epoch",
    "before_train_iter",
    "after_train_iter",
    "after_train_epoch",
    "before_val_epoch",
    "before_val_iter",
    "after_val_iter",
    "after_val_epoch",
    "before_test_epoch",
    "before_test_iter",
    "after_test_iter",
    "after_test_epoch",
    "after_run",
    "before_save_checkpoint",
)

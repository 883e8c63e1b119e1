"""LoggerHook: one aligned line per interval, val/test metrics, a text log and JSON lines."""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pluginloop.errors import ConfigError
from pluginloop.hooks._log_output import JsonLines, LogFile, close_files, format_scalar, pop_present, progress
from pluginloop.hooks.base import Hook
from pluginloop.hooks.timer import loader_length
from pluginloop.hub import running_sum, sum_of
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.hub import MessageHub
    from pluginloop.runner import Runner

__all__ = ["LoggerHook", "TextLoggerHook"]

# Device losses held between reads, at most (detached: no graph is kept alive); 64 covers
# the usual intervals in one sum.
_HELD = 64


@HOOKS.register_module()
@HOOKS.register_module(name="TextLoggerHook")
class LoggerHook(Hook):
    """Log training progress and evaluation metrics (BELOW_NORMAL; alias ``TextLoggerHook``).

    Arguments:
        interval: write a training line every ``interval`` iterations (default 10); with
            ``by_epoch`` counted within the epoch, else over the run. The end of each epoch
            (``by_epoch``) and of training also write one for the iterations left over.
        by_epoch: lines read ``Epoch(train) [2/12][ 30/100]``; False: ``Iter(train) [ 230/1200]``.
        log_dir: where ``<timestamp>/<timestamp>.log`` (everything ``runner.logger`` says)
            and ``<timestamp>/scalars.jsonl`` (one JSON object per line) go; default the
            work dir.
        flush_secs: how long an INFO record may wait in the text log's buffer, and a line in
            ``scalars.jsonl``'s (default 2 s; 0: every one written at once). The console gets
            every line at once, and the text log every WARNING or ERROR (with what came before
            it). Val/test lines, each epoch's end, every checkpoint save and the run's end flush
            both files (after a failed run, the process's exit does), so only a killed process
            (SIGKILL, out of memory) can lose lines: at most this many seconds' worth.

    It publishes the training ``loss`` to ``runner.message_hub``, as a source: summed each
    iteration (read at once on a CPU run; on another device kept, detached, and summed on its
    device in one operation when the hub is read or every 64 iterations) and handed over
    whenever the hub is read. Each line publishes ``lr`` (of the first param group, read then)
    and shows lr, eta, then the window means of every scalar in the hub (time, data_time,
    loss, grad_norm, ...) and, on CUDA, the peak memory in MB since the previous line. After
    a val or test loop one line lists its metrics, also published to the hub as
    ``val/<name>`` / ``test/<name>``. Device values are read only when a line is written.
    Only rank 0 writes.
    """

    priority = Priority.BELOW_NORMAL

    def __init__(
        self,
        interval: int = 10,
        by_epoch: bool = True,
        log_dir: str | os.PathLike[str] | None = None,
        flush_secs: float = 2.0,
    ) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ConfigError(
                f"must be a positive int (iterations between lines), got {interval!r}", "interval"
            )
        if isinstance(flush_secs, bool) or not isinstance(flush_secs, (int, float)) or not (
            0 <= flush_secs < math.inf
        ):
            raise ConfigError(
                f"must be a number of seconds >= 0 (0: every line at once), got {flush_secs!r}", "flush_secs"
            )
        self.interval = interval
        self.by_epoch = by_epoch
        self.log_dir = log_dir
        self.flush_secs = float(flush_secs)
        #: The text log and the JSON-lines file, set by the first run on rank 0.
        self.log_file: Path | None = None
        self.json_file: Path | None = None
        self._writes = False  # rank 0
        self._logged_iter = 0  # runner.iter as of the last training line
        self._last_batch = -1
        # Training losses the hub has not taken yet: those of the last iterations that are
        # not CPU tensors (at most _HELD), then the running sum and count of all the others.
        self._held: list[Any] = []
        self._loss_sum: float | torch.Tensor = 0.0
        self._losses = 0
        self._per_epoch: int | None = None  # iterations per train epoch, for the line's header
        self._cpu_run = True  # runner.device is the CPU: every loss is read at once
        self._json: JsonLines | None = None  # json_file's, during a run
        self._log_handler: LogFile | None = None  # the text log's, during a run
        self._close_log: Callable[[], object] = lambda: None  # detaches the text log, once

    def before_run(self, runner: Runner) -> None:
        """On rank 0: create the log files (once per hook) and copy ``runner.logger`` into the text log."""
        self._writes = runner.rank == 0
        self._cpu_run = runner.device.type == "cpu"  # losses are then in host memory
        runner.message_hub.add_source(self._publish)
        self._per_epoch = loader_length(runner.train_dataloader)  # read once: a deep chain of len()s
        if not self._writes:
            return
        if self.log_file is None:
            stamp = time.strftime("%Y%m%d_%H%M%S")
            folder = Path(self.log_dir if self.log_dir is not None else runner.work_dir) / stamp
            folder.mkdir(parents=True, exist_ok=True)
            self.log_file, self.json_file = folder / f"{stamp}.log", folder / "scalars.jsonl"
        self._close_log()
        # Both files are buffered: a write system call per line costs more than the rest of
        # what the line writes (docs/performance.md), so INFO lines reach them flush_secs apart.
        self._log_handler = handler = LogFile(self.log_file, self.flush_secs)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        runner.logger.addHandler(handler)
        self._json = JsonLines(self.json_file, self.flush_secs)  # type: ignore[arg-type]
        # after_run does not fire when the run raises: the files then close with this hook,
        # instead of copying every later run of the process into the text log.
        self._close_log = weakref.finalize(self, close_files, runner.logger, handler, self._json)

    def after_run(self, runner: Runner) -> None:
        """Write the training iterations not logged yet (a stopped run), close the text log,
        hand the hub what is left and stop being its source."""
        if runner.iter > self._logged_iter:
            self._log_train(runner, runner.iter, self._last_batch + 1, runner.epoch + 1)
        self._close_log()
        self._json = self._log_handler = None
        self._publish(runner.message_hub)
        runner.message_hub.remove_source(self._publish)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """Count lines from the resumed iteration (the hub restores the open window itself)."""
        self._logged_iter = runner.iter

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Add the loss to what the hub will take; every ``interval`` iterations, write a line."""
        loss = outputs.get("loss") if outputs else None
        if loss is not None:
            if self._cpu_run and type(loss) is torch.Tensor:  # host memory: reading costs no sync
                # Through the class: loss.item and loss.is_cpu are looked up in the tensor's and
                # its type's dicts on every call, cold by then (docs/performance.md).
                self._loss_sum += torch.Tensor.item(loss)
                self._losses += 1
            else:
                # A device loss is not read (a sync) nor added (a kernel launch) here: kept,
                # and summed in one operation on the device when the hub reads it.
                self._held.append(loss.detach() if isinstance(loss, torch.Tensor) else loss)
                if len(self._held) == _HELD:
                    self._fold()
        self._last_batch = batch_idx
        if ((batch_idx if self.by_epoch else runner.iter) + 1) % self.interval == 0:
            self._log_train(runner, runner.iter + 1, batch_idx + 1, runner.epoch + 1)

    def _fold(self) -> None:
        """Add the held losses to the running sum, in one operation on their device (``sum_of``)."""
        if self._held:
            self._loss_sum = running_sum(self._loss_sum, sum_of(self._held, "loss"), "loss")
            self._losses += len(self._held)
            self._held.clear()

    def _publish(self, hub: MessageHub) -> None:
        """The hub's source: the mean loss of the iterations since it was last read."""
        self._fold()
        if self._losses:
            hub.update("loss", self._loss_sum / self._losses, count=self._losses)
            self._loss_sum, self._losses = 0.0, 0

    def after_train_epoch(self, runner: Runner) -> None:
        """Write the epoch's last iterations (only at the end of training when not ``by_epoch``)."""
        last = runner.epoch + 1 >= runner.max_epochs or runner.iter >= runner.max_iters
        if runner.iter > self._logged_iter and (self.by_epoch or last):
            self._log_train(runner, runner.iter, self._last_batch + 1, runner.epoch + 1)
        self._flush_files()

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """Flush both files: a run resumed from this checkpoint finds every line up to it."""
        self._flush_files()

    def _log_train(self, runner: Runner, done: int, inner: int, epoch: int) -> None:
        self._logged_iter = done
        hub = runner.message_hub
        if runner.optimizer is not None:  # read per line, not per iteration: it is not averaged
            hub.set("lr", runner.optimizer.param_groups[0]["lr"])
        if not self._writes:
            return
        fixed, window = hub.unaveraged("train"), hub.means("train")
        scalars, eta = dict(pop_present(fixed, "lr")), fixed.pop("eta", math.inf)
        if math.isfinite(eta):
            scalars["eta"] = max(eta, 0.0)
        scalars.update(pop_present(window, "time", "data_time"))
        if runner.device.type == "cuda":
            # The peak since the previous line: reset it so the next line shows its own.
            scalars["memory"] = torch.cuda.max_memory_allocated(runner.device) // 2**20
            torch.cuda.reset_peak_memory_stats(runner.device)
        scalars.update(pop_present(window, "loss"))
        scalars.update(sorted(window.items()))
        scalars.update(sorted(fixed.items()))  # e.g. the fp16 loss_scale
        if self.by_epoch:
            header = f"Epoch(train) {progress(epoch, runner.max_epochs)}{progress(inner, self._per_epoch)}"
        else:
            header = f"Iter(train) {progress(done, runner.max_iters)}"
        self._write(runner, header, {"mode": "train", "epoch": epoch, "iter": done}, scalars)

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Publish ``val/<name>`` and write the metrics line."""
        self._log_eval(runner, "val", metrics)

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Publish ``test/<name>`` and write the metrics line."""
        self._log_eval(runner, "test", metrics)

    def _log_eval(self, runner: Runner, mode: str, metrics: dict[str, float]) -> None:
        hub = runner.message_hub
        for name, value in metrics.items():
            hub.set(f"{mode}/{name}", value)
        if not self._writes:
            return
        scalars = {name: float(value) for name, value in metrics.items()}
        # Then the loop's own scalars, e.g. the timer's val/time, except its spent eta.
        window, fixed = hub.means(mode), hub.unaveraged(mode)
        fixed.pop("eta", None)
        scalars.update(pop_present(window, "time", "data_time"))
        scalars.update(sorted((k, v) for k, v in {**window, **fixed}.items() if k not in scalars))
        position = runner.epoch if self.by_epoch else runner.iter
        header = f"{'Epoch' if self.by_epoch else 'Iter'}({mode}) [{position}]"
        self._write(runner, header, {"mode": mode, "epoch": runner.epoch, "iter": runner.iter}, scalars)

    def _write(self, runner: Runner, header: str, record: dict[str, Any], scalars: dict[str, float]) -> None:
        """One text line through ``runner.logger`` and the same record as a JSON line."""
        shown = "  ".join(f"{k}: {format_scalar(k, v)}" for k, v in scalars.items())
        runner.logger.info("%s  %s", header, shown)
        if self._json is not None:
            self._json.write({**record, **scalars})
        if record["mode"] != "train":
            self._flush_files()

    def _flush_files(self) -> None:
        """Write out what the text log and the JSON lines hold back."""
        for output in (self._log_handler, self._json):
            if output is not None:
                output.flush()


#: The design document's name for the same hook.
TextLoggerHook = LoggerHook

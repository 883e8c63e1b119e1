"""pluginloop-progress: tqdm progress bars for the train, val and test loops.

``ProgressBarHook`` shows one bar per epoch or evaluation, with tqdm's rate and ETA and,
while training, the running mean loss of the epoch. It turns itself off (registers no
hook point, so costs nothing) when its output is not a terminal, e.g. in CI or with
``> log.txt``. While a bar is on screen, the log lines of the ``pluginloop`` logger
(LoggerHook's) are written through ``tqdm.write``, which clears the bar, prints the line
and redraws the bar below it, so neither garbles the other.

The loss is summed on its device and read only when the bar is redrawn (tqdm redraws at
most every ``mininterval`` seconds), so the bar adds no per-iteration synchronisation.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from pluginloop import Hook, Priority
from pluginloop.dist import get_rank

if TYPE_CHECKING:
    from pluginloop import Runner

__all__ = ["ProgressBarHook"]


class _TqdmStream:
    """A stream for logging handlers that writes through ``tqdm.write`` (bar-aware)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed

        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


class ProgressBarHook(Hook):
    """Progress bars with ETA and running loss for train, val and test (rank 0, terminals only).

    ``enabled``: ``None`` (default) shows bars only when ``file`` is a terminal; ``True``
    or ``False`` force it. ``file``: where bars go (default ``sys.stderr``, like tqdm).
    ``mininterval``: seconds between redraws (and loss reads).
    """

    priority = Priority.LOW  # after the optimizer step and LoggerHook's line of this iteration

    def __init__(
        self, enabled: bool | None = None, file: IO[str] | None = None, mininterval: float = 0.1
    ) -> None:
        self.file = file if file is not None else sys.stderr
        self.enabled = enabled
        self.mininterval = mininterval
        self._bar: Any = None  # a tqdm bar while a loop runs (tqdm ships no type hints)
        self._loss_sum: Any = 0.0
        self._loss_count = 0
        self._shown = 0.0
        self._swapped: list[tuple[logging.StreamHandler[Any], Any]] = []

    def _on(self) -> bool:
        if get_rank() != 0:
            return False
        if self.enabled is not None:
            return self.enabled
        isatty = getattr(self.file, "isatty", None)
        return bool(isatty and isatty())

    def hook_points(self) -> tuple[str, ...]:
        """All the loop's points when on; none when the output is not a terminal."""
        if not self._on():
            return ()
        return (
            "before_run",
            "before_train_epoch",
            "after_train_iter",
            "after_train_epoch",
            "before_val_epoch",
            "after_val_iter",
            "after_val_epoch",
            "before_test_epoch",
            "after_test_iter",
            "after_test_epoch",
            "after_run",
        )

    # -- log lines through tqdm.write ---------------------------------------------------

    def before_run(self, runner: Runner) -> None:
        """Route the pluginloop logger's console handlers through ``tqdm.write``."""
        for handler in runner.logger.handlers:
            stream = getattr(handler, "stream", None)
            # Only what shares the screen with the bar; log files are left alone.
            console = stream in (sys.stdout, sys.stderr, self.file) or bool(getattr(stream, "isatty", bool)())
            if (
                isinstance(handler, logging.StreamHandler)
                and stream
                and console
                and not isinstance(stream, _TqdmStream)
            ):
                self._swapped.append((handler, handler.setStream(_TqdmStream(stream))))

    def after_run(self, runner: Runner) -> None:
        """Close any bar and give the handlers their streams back."""
        self._close()
        for handler, stream in self._swapped:
            handler.setStream(stream)
        self._swapped.clear()

    # -- bars -----------------------------------------------------------------------------

    def _open(self, total: Any, desc: str, leave: bool) -> None:
        from tqdm import tqdm

        self._close()
        self._bar = tqdm(
            total=total,
            desc=desc,
            leave=leave,
            file=self.file,
            mininterval=self.mininterval,
            dynamic_ncols=True,
            unit="it",
        )
        self._loss_sum, self._loss_count, self._shown = 0.0, 0, time.monotonic()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _step(self, outputs: Any, show_loss: bool) -> None:
        if self._bar is None:
            return
        loss = (outputs or {}).get("loss")
        if show_loss and loss is not None:
            self._loss_sum = self._loss_sum + (loss.detach() if hasattr(loss, "detach") else loss)
            self._loss_count += 1
            now = time.monotonic()
            if now - self._shown >= self.mininterval:  # read the device only when tqdm redraws
                self._shown = now
                self._show_loss()
        self._bar.update(1)

    def _show_loss(self) -> None:
        if self._bar is not None and self._loss_count:
            self._bar.set_postfix_str(f"loss={float(self._loss_sum) / self._loss_count:.4f}", refresh=False)

    @staticmethod
    def _total(loader: Any, left: float = float("inf")) -> int | None:
        try:
            n = len(loader)
        except TypeError:  # an iterable dataset: tqdm shows a count and a rate, no ETA
            return None
        return int(min(n, left))

    def before_train_epoch(self, runner: Runner) -> None:
        """A bar for this epoch (its length: the batches left, within ``max_iters``)."""
        total = self._total(runner.train_dataloader, runner.max_iters - runner.iter)
        self._open(total, f"train {runner.epoch + 1}/{runner.max_epochs}", leave=True)

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Advance the bar; add this loss to the running mean."""
        self._step(outputs, show_loss=True)

    def after_train_epoch(self, runner: Runner) -> None:
        """Show the epoch's mean loss and close its bar."""
        self._show_loss()
        self._close()

    def before_val_epoch(self, runner: Runner) -> None:
        """A bar for validation."""
        self._open(self._total(runner.val_dataloader), "val", leave=False)

    def after_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Advance the validation bar."""
        self._step(outputs, show_loss=False)

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Close the validation bar."""
        self._close()

    def before_test_epoch(self, runner: Runner) -> None:
        """A bar for the test loop."""
        self._open(self._total(runner.test_dataloader), "test", leave=False)

    def after_test_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Advance the test bar."""
        self._step(outputs, show_loss=False)

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Close the test bar."""
        self._close()

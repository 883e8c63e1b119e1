"""ProgressBarHook: bars with ETA and loss on terminals, off elsewhere, log lines intact."""

from __future__ import annotations

import io
import logging
import re
import sys
from typing import Any

import importlib_metadata
import pytest
from pluginloop_progress import ProgressBarHook

from pluginloop import Hook


class FakeTerminal(io.StringIO):
    """Captured output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class LogEveryIteration(Hook):
    """Writes a log line in the middle of the bar's life."""

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        runner.logger.info("LOGLINE epoch=%d iter=%d", runner.epoch, runner.iter)


def test_it_turns_itself_off_when_the_output_is_not_a_terminal() -> None:
    assert ProgressBarHook(file=io.StringIO()).hook_points() == ()
    assert ProgressBarHook(file=FakeTerminal()).hook_points() != ()
    assert ProgressBarHook(file=io.StringIO(), enabled=True).hook_points() != ()
    assert ProgressBarHook(file=FakeTerminal(), enabled=False).hook_points() == ()


def test_bars_show_eta_and_running_loss_and_log_lines_stay_whole(make_runner: Any) -> None:
    terminal = FakeTerminal()
    logger = logging.getLogger("pluginloop")
    handler = logging.StreamHandler(terminal)  # LoggerHook's console handler, on the same screen
    logger.addHandler(handler)
    try:
        runner = make_runner(
            custom_hooks=[ProgressBarHook(file=terminal, mininterval=0), LogEveryIteration()],
            test_dataloader=make_runner().val_dataloader,
        )
        runner.run()
    finally:
        logger.removeHandler(handler)
    out = terminal.getvalue()
    assert "train 1/2" in out and "train 2/2" in out and "val" in out and "test" in out
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", out)  # elapsed<ETA
    assert re.search(r"loss=\d+\.\d{4}", out)
    # Each log line is a line of its own: the bar was cleared before it and redrawn after it.
    segments = re.split(r"[\r\n]", out)
    for epoch, it in [(0, 0), (0, 3), (1, 7)]:
        assert f"LOGLINE epoch={epoch} iter={it}" in segments
    assert handler.stream is terminal  # given back after the run


def test_the_running_loss_is_the_epoch_mean(make_runner: Any) -> None:
    hook = ProgressBarHook(file=FakeTerminal())
    runner = make_runner(custom_hooks=[hook], max_epochs=1, val_dataloader=None)
    losses: list[float] = []

    class Spy(Hook):
        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            losses.append(float(outputs["loss"].detach()))

        def after_train_epoch(self, runner: Any) -> None:
            assert float(hook._loss_sum) / hook._loss_count == pytest.approx(sum(losses) / len(losses))

    runner.register_hook(Spy())
    runner.train()
    assert len(losses) == 4


def test_the_package_declares_its_entry_point() -> None:
    [ep] = importlib_metadata.entry_points(group="pluginloop", name="progress")
    assert ep.load() is ProgressBarHook
    assert sys.modules["pluginloop_progress"].ProgressBarHook is ProgressBarHook

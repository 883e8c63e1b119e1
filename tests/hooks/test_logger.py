"""LoggerHook: line schedule and format, window means, val/test lines, files, rank 0, no syncs."""

from __future__ import annotations

import gc
import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from pluginloop import HOOKS, Hook, Runner
from pluginloop.errors import ConfigError, HookCallError
from pluginloop.hooks import DEFAULT_HOOKS, LoggerHook, TextLoggerHook
from pluginloop.hooks import logger as logger_module
from pluginloop.hooks._log_output import format_scalar

NUMBER = r"-?\d+\.\d{4}"
TRAIN_LINE = (  # timer + logger only, on CPU: exactly these scalars, in this order
    rf"  lr: 1\.0000e-02  eta: \d+:\d\d:\d\d  time: {NUMBER}  data_time: {NUMBER}  loss: {NUMBER}$"
)


@pytest.fixture
def runner_kwargs(runner_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shared tiny run without installed plugins: these tests pin exact hooks, lines and files."""
    return {**runner_kwargs, "autoload_plugins": False}


def make_runner(runner_kwargs: dict[str, Any], logger: LoggerHook, **kwargs: Any) -> Runner:
    hooks: dict[str, Any] = {k: None for k in DEFAULT_HOOKS}
    hooks.update(timer=dict(type="IterTimerHook"), logger=logger)
    return Runner(**{**runner_kwargs, "default_hooks": hooks, **kwargs})


def train_with_optimizer(runner_kwargs: dict[str, Any], logger: LoggerHook, **kwargs: Any) -> None:
    """Run with only ``logger`` and the optimizer hook (the loss changes as it trains)."""
    hooks: dict[str, Any] = {k: None for k in DEFAULT_HOOKS}
    hooks.update(optimizer=dict(type="OptimizerHook"), logger=logger)
    Runner(**{**runner_kwargs, "val_dataloader": None, "default_hooks": hooks, **kwargs}).run()


def messages(hook: LoggerHook) -> list[str]:
    """The logger's lines in its text log, without the time stamp and level."""
    assert hook.log_file is not None
    lines = hook.log_file.read_text(encoding="utf-8").splitlines()
    return [line.split(" INFO ", 1)[1] for line in lines if re.search(r"\((train|val|test)\) \[", line)]


def records(hook: LoggerHook) -> list[dict[str, Any]]:
    assert hook.json_file is not None
    return [json.loads(line) for line in hook.json_file.read_text(encoding="utf-8").splitlines()]


def file_handlers(path: Path) -> list[logging.Handler]:
    """The handlers of runner.logger that write to ``path``."""
    return [
        h
        for h in logging.getLogger("pluginloop").handlers
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path
    ]


def headers(hook: LoggerHook) -> list[str]:
    return [m.split("  ")[0] for m in messages(hook)]


class LossRecorder(Hook):
    """The loss of every training iteration, as floats (this test may read them)."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.losses: list[float] = []

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.losses.append(float(outputs["loss"].detach()))


def test_lines_every_interval_and_at_each_epoch_end(runner_kwargs: dict[str, Any], make_loader: Any) -> None:
    hook = LoggerHook(interval=3)
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(7), val_dataloader=None).run()
    assert headers(hook) == [f"Epoch(train) [{e}/2][{i}/7]" for e in (1, 2) for i in (3, 6, 7)]
    for message in messages(hook):
        assert re.fullmatch(r"Epoch\(train\) \[\d/2\]\[\d/7\]" + TRAIN_LINE, message), message


def test_iteration_counts_are_right_aligned_to_the_total(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    hook = LoggerHook(interval=5, by_epoch=False)  # 2 epochs x 7: lines at 5, 10 and the end
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(7), val_dataloader=None).run()
    assert headers(hook) == ["Iter(train) [ 5/14]", "Iter(train) [10/14]", "Iter(train) [14/14]"]
    assert re.fullmatch(r"Iter\(train\) \[ 5/14\]" + TRAIN_LINE, messages(hook)[0])


def test_an_epoch_shorter_than_the_interval_still_logs(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    hook = LoggerHook(interval=10)
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(2), val_dataloader=None).run()
    assert headers(hook) == ["Epoch(train) [1/2][2/2]", "Epoch(train) [2/2][2/2]"]


def test_a_stopped_run_logs_its_last_iterations(runner_kwargs: dict[str, Any], make_loader: Any) -> None:
    class StopAtFour(Hook):
        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            runner.should_stop = runner.iter + 1 == 4

    hook = LoggerHook(interval=3)
    make_runner(
        runner_kwargs, hook, train_dataloader=make_loader(7), val_dataloader=None, custom_hooks=[StopAtFour()]
    ).run()
    assert headers(hook) == ["Epoch(train) [1/2][3/7]", "Epoch(train) [1/2][4/7]"]


def test_each_line_shows_the_mean_over_its_window(runner_kwargs: dict[str, Any], make_loader: Any) -> None:
    hook, seen = LoggerHook(interval=3), LossRecorder()
    train_with_optimizer(runner_kwargs, hook, train_dataloader=make_loader(7), custom_hooks=[seen])
    losses = seen.losses
    windows = [losses[0:3], losses[3:6], losses[6:7], losses[7:10], losses[10:13], losses[13:14]]
    assert [r["loss"] for r in records(hook)] == pytest.approx([sum(w) / len(w) for w in windows])
    assert [r["iter"] for r in records(hook)] == [3, 6, 7, 10, 13, 14]


def test_json_records_hold_the_values_of_the_text_lines(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    hook = LoggerHook(interval=2)
    metrics = {"mae": lambda preds, targets: (preds - targets).abs().mean()}
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(3), metrics=metrics).run()
    texts, jsons = messages(hook), records(hook)
    assert len(texts) == len(jsons) == 2 * (2 + 1)  # per epoch: 2 train lines, 1 val line
    for text, record in zip(texts, jsons, strict=True):
        header, *pairs = text.split("  ")
        mode = record.pop("mode")
        assert header.startswith(("Epoch", "Iter")) and f"({mode})" in header
        assert f"[{record.pop('epoch')}" in header
        record.pop("iter")
        shown = dict(pair.split(": ") for pair in pairs)
        assert list(shown) == list(record)
        for name, value in shown.items():
            if name == "eta":
                h, m, s = map(int, value.split(":"))
                assert h * 3600 + m * 60 + s == int(record[name])
            else:
                assert float(value) == pytest.approx(record[name], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.0, "0:00:00"), (59.9, "0:00:59"), (3599.0, "0:59:59"), (3600.0, "1:00:00"), (90061.0, "25:01:01")],
)
def test_eta_reads_hours_minutes_seconds_past_a_day_too(seconds: float, shown: str) -> None:
    assert format_scalar("eta", seconds) == shown


def test_val_and_test_lines_list_every_metric_and_publish_them(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    hook = LoggerHook()
    metrics = {"mae": lambda preds, targets: (preds - targets).abs().mean()}
    runner = make_runner(runner_kwargs, hook, test_dataloader=make_loader(1), metrics=metrics)
    runner.run()
    evals = [m for m in messages(hook) if "(train)" not in m]
    line = rf"  loss: {NUMBER}  mae: {NUMBER}  time: {NUMBER}  data_time: {NUMBER}"
    assert [m.split("  ")[0] for m in evals] == ["Epoch(val) [1]", "Epoch(val) [2]", "Epoch(test) [2]"]
    for message in evals:
        assert re.fullmatch(r"Epoch\((val|test)\) \[\d\]" + line, message), message
    hub, last_val = runner.message_hub, records(hook)[-2]
    assert last_val["mode"] == "val" and hub.latest["val/mae"] == last_val["mae"]
    assert hub.latest["test/mae"] == runner.test()["mae"]


def test_files_go_under_the_work_dir_and_the_handler_is_removed(
    runner_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    class SaysHello(Hook):
        def before_train_epoch(self, runner: Any) -> None:
            runner.logger.info("hello from a hook")

    hook = LoggerHook()
    make_runner(runner_kwargs, hook, custom_hooks=[SaysHello()]).run()
    assert hook.log_file is not None and hook.json_file is not None
    folder = hook.log_file.parent
    assert folder.parent == tmp_path and re.fullmatch(r"\d{8}_\d{6}", folder.name)
    assert hook.log_file.name == f"{folder.name}.log" and hook.json_file == folder / "scalars.jsonl"
    assert "hello from a hook" in hook.log_file.read_text(encoding="utf-8")  # runner.logger's output
    assert not file_handlers(hook.log_file)


def test_log_dir_moves_the_files(runner_kwargs: dict[str, Any], tmp_path: Path) -> None:
    hook = LoggerHook(log_dir=str(tmp_path / "logs"))
    make_runner(runner_kwargs, hook).run()
    assert hook.log_file is not None and hook.log_file.parent.parent == tmp_path / "logs"


def test_a_failed_run_leaves_no_file_handler_once_it_is_gone(runner_kwargs: dict[str, Any]) -> None:
    class Fails(Hook):
        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            raise RuntimeError("boom")

    def failed_run() -> Path | None:
        hook = LoggerHook()
        runner = make_runner(runner_kwargs, hook, custom_hooks=[Fails()])
        with pytest.raises(HookCallError):
            runner.run()  # after_run never fires
        return hook.log_file

    log_file = failed_run()
    gc.collect()
    assert log_file is not None and log_file.exists()
    assert not file_handlers(log_file)


def test_only_rank_zero_writes(runner_kwargs: dict[str, Any], tmp_path: Path) -> None:
    hook = LoggerHook(interval=1)
    runner = make_runner(runner_kwargs, hook)
    runner.rank = 1
    runner.run()
    assert hook.log_file is None and list(tmp_path.iterdir()) == []
    assert "loss" in runner.message_hub.latest and "val/loss" in runner.message_hub.latest  # still published


def test_the_loss_is_read_only_when_a_line_is_written(
    runner_kwargs: dict[str, Any], make_loader: Any, device_scalars: Any
) -> None:
    class CountReads(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.reads: list[int] = []

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            self.reads.append(device_scalars.reads())

        def after_train_epoch(self, runner: Any) -> None:
            self.reads.append(device_scalars.reads())

    def device_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return device_scalars.wrap(nn.functional.mse_loss(preds, targets))

    counter, hook = CountReads(), LoggerHook(interval=3)
    runner = make_runner(
        runner_kwargs,
        hook,
        train_dataloader=make_loader(7),
        val_dataloader=None,
        loss_fn=device_loss,
        max_epochs=1,
        custom_hooks=[counter],
    )
    runner.run()
    # Cumulative reads after iterations 1..7, then after the epoch: one read per line written.
    assert counter.reads == [0, 0, 1, 1, 1, 2, 2, 3]
    assert len(messages(hook)) == 3


def test_device_losses_are_summed_every_64_iterations_and_the_mean_stays_exact(
    runner_kwargs: dict[str, Any], make_loader: Any, device_scalars: Any
) -> None:
    hook, seen, held = LoggerHook(interval=1000), LossRecorder(), []

    def device_loss(preds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return device_scalars.wrap(nn.functional.mse_loss(preds, targets))

    class Held(Hook):
        priority = "LOWEST"

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            held.append(len(hook._held))
            assert not any(t.requires_grad for t in hook._held), "a held loss keeps its graph alive"

    train_with_optimizer(
        runner_kwargs, hook, train_dataloader=make_loader(150), loss_fn=device_loss, max_epochs=1,
        custom_hooks=[seen, Held()],
    )
    assert max(held) == 63 and held[63] == 0 and held[127] == 0  # bounded: no growth without lines
    assert [r["loss"] for r in records(hook)] == pytest.approx([sum(seen.losses) / 150])


def test_on_a_cpu_run_each_loss_is_read_at_once_and_none_is_held(
    runner_kwargs: dict[str, Any], make_loader: Any
) -> None:
    hook, seen = LoggerHook(interval=1000), LossRecorder()

    class Held(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.counts: list[tuple[int, int]] = []

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            self.counts.append((len(hook._held), hook._losses))

    held = Held()
    train_with_optimizer(runner_kwargs, hook, train_dataloader=make_loader(5), max_epochs=1,
                         custom_hooks=[seen, held])
    assert held.counts == [(0, n) for n in range(1, 6)]  # summed as floats, nothing kept
    assert [r["loss"] for r in records(hook)] == pytest.approx([sum(seen.losses) / 5])


def test_a_bad_interval_fails_at_construction_naming_it(runner_kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="interval"):
        LoggerHook(interval=0)
    with pytest.raises(ConfigError, match=r"default_hooks\.logger.*interval"):
        Runner(**{**runner_kwargs, "default_hooks": dict(logger=dict(type="LoggerHook", interval=-1))})


@pytest.mark.parametrize("secs", [-1, float("inf"), float("nan"), "10", True, None])
def test_a_bad_flush_secs_fails_at_construction_naming_it(secs: Any) -> None:
    with pytest.raises(ConfigError, match=r"flush_secs.*seconds >= 0"):
        LoggerHook(flush_secs=secs)


def lines_on_disk(hook: LoggerHook) -> tuple[int, int]:
    """Training lines in the text log and in scalars.jsonl, as a reader of the files sees them now."""
    assert hook.log_file is not None and hook.json_file is not None
    text = hook.log_file.read_text(encoding="utf-8")
    jsons = hook.json_file.read_text(encoding="utf-8").splitlines()
    return text.count("Epoch(train)"), sum(json.loads(line)["mode"] == "train" for line in jsons)


class LinesSeen(Hook):
    """After each training iteration: the lines on disk; then the clock moves 4 s."""

    priority = "LOWEST"

    def __init__(self, logger: LoggerHook, clock: list[float]) -> None:
        self.logger, self.clock, self.seen = logger, clock, []

    def after_train_iter(self, runner: Any, batch_idx: int) -> None:
        self.seen.append(lines_on_disk(self.logger))
        self.clock[0] += 4.0


@pytest.mark.parametrize(
    ("secs", "seen"), [(10, [0, 0, 0, 4, 4, 4, 7, 7, 7, 10]), (0, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]
)
def test_lines_wait_in_the_files_buffers_at_most_flush_secs(
    runner_kwargs: dict[str, Any], make_loader: Any, monkeypatch: pytest.MonkeyPatch, secs: float,
    seen: list[int],
) -> None:
    clock = [0.0]
    monkeypatch.setattr(logger_module.time, "monotonic", lambda: clock[0])
    hook = LoggerHook(interval=1, flush_secs=secs)
    probe = LinesSeen(hook, clock)
    make_runner(
        runner_kwargs, hook, train_dataloader=make_loader(10), val_dataloader=None, max_epochs=1,
        custom_hooks=[probe],
    ).run()
    # A line every iteration, one every 4 s: with 10 s, flushed at 12, 24 and 36 s (4th, 7th, 10th).
    assert probe.seen == [(n, n) for n in seen]
    assert [r["iter"] for r in records(hook)] == list(range(1, 11))
    assert len(messages(hook)) == 10


def test_a_warning_reaches_the_text_log_at_once_with_the_lines_before_it(
    runner_kwargs: dict[str, Any], make_loader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logger_module.time, "monotonic", lambda: 0.0)  # the clock alone never flushes

    class WarnAtThree(Hook):
        priority = "LOWEST"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            if batch_idx == 2:
                runner.logger.warning("something odd")
                assert hook.log_file is not None
                self.seen = hook.log_file.read_text(encoding="utf-8").splitlines()

    hook, probe = LoggerHook(interval=1), WarnAtThree()
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(5), val_dataloader=None,
                max_epochs=1, custom_hooks=[probe]).run()
    assert [line.split(" ", 3)[2] for line in probe.seen[-4:]] == ["INFO", "INFO", "INFO", "WARNING"]
    assert probe.seen[-1].endswith("something odd") and "[3/5]" in probe.seen[-2]


def test_a_failing_text_log_is_reported_not_raised_into_the_run(
    runner_kwargs: dict[str, Any], make_loader: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    class DiskFull(Hook):
        def before_train_epoch(self, runner: Any) -> None:
            def fail() -> None:
                raise OSError("No space left on device")

            assert hook._log_handler is not None and hook._log_handler.stream is not None
            hook._log_handler.stream.flush = fail  # type: ignore[method-assign]

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            runner.logger.warning("flushed at once: the disk is full")

    hook = LoggerHook(interval=1)
    runner = make_runner(runner_kwargs, hook, train_dataloader=make_loader(2), val_dataloader=None,
                         max_epochs=1, custom_hooks=[DiskFull()])
    with pytest.raises(HookCallError, match=r"after_train_epoch.*No space left"):  # the hook's own flush
        runner.train()
    assert runner.iter == 2  # both iterations ran: each warning's failed flush was only reported
    assert capsys.readouterr().err.count("No space left on device") >= 2
    assert hook._log_handler is not None and hook._log_handler.stream is not None
    del hook._log_handler.stream.flush  # the disk has room again: the files close cleanly
    hook._close_log()


def test_val_lines_and_epoch_ends_flush_both_files(
    runner_kwargs: dict[str, Any], make_loader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logger_module.time, "monotonic", lambda: 0.0)  # the clock alone never flushes

    class SeenAtEpochStart(Hook):
        def __init__(self) -> None:
            self.seen: list[tuple[list[str], int]] = []

        def before_train_epoch(self, runner: Any) -> None:
            assert hook.json_file is not None and hook.log_file is not None
            lines = hook.json_file.read_text(encoding="utf-8").splitlines()
            text = hook.log_file.read_text(encoding="utf-8")
            self.seen.append(([json.loads(line)["mode"] for line in lines], text.count("Epoch(")))

    hook, probe = LoggerHook(interval=2), SeenAtEpochStart()
    make_runner(runner_kwargs, hook, train_dataloader=make_loader(3), custom_hooks=[probe]).run()
    # Epoch 1's two lines and its val line, all there in both files.
    assert probe.seen == [([], 0), (["train", "train", "val"], 3)]


# A child run of 8 iterations, a line each, a checkpoint every 3 and files flushed only on
# events: at the 7th it dies as argv[2] says, without after_run.
_DYING_RUN = """
import os, signal, sys, torch
from torch import nn
from pluginloop import Hook, Runner
from pluginloop.hooks import DEFAULT_HOOKS

class Die(Hook):
    priority = "LOWEST"
    def after_train_iter(self, runner, batch_idx):
        if runner.iter + 1 == 7 and sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if runner.iter + 1 == 7:
            raise RuntimeError("boom")

torch.manual_seed(0)
batches = [(torch.randn(2, 4), torch.randn(2, 1)) for _ in range(8)]
hooks = {k: None for k in DEFAULT_HOOKS}
hooks.update(optimizer=DEFAULT_HOOKS["optimizer"],
             checkpoint=dict(type="CheckpointHook", interval=3, by_epoch=False),
             logger=dict(type="LoggerHook", interval=1, flush_secs=1e9))
Runner(nn.Linear(4, 1), work_dir=sys.argv[1], train_dataloader=batches, loss_fn=nn.functional.mse_loss,
       optimizer=dict(type="SGD", lr=0.01), max_epochs=1, default_hooks=hooks, custom_hooks=[Die()],
       autoload_plugins=False).run()
"""


@pytest.mark.parametrize("death", ["kill", "raise"])
def test_a_dead_run_keeps_its_lines_up_to_its_checkpoint_or_all_of_them(tmp_path: Path, death: str) -> None:
    script = tmp_path / "run.py"
    script.write_text(_DYING_RUN, encoding="utf-8")
    command = [sys.executable, str(script), str(tmp_path / "work"), death]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if death == "kill":
        assert result.returncode == -signal.SIGKILL, result.stderr
    else:
        assert result.returncode == 1 and "boom" in result.stderr, result.stderr
    assert (tmp_path / "work" / "iter_6.pth").exists()
    (json_file,) = (tmp_path / "work").glob("*/scalars.jsonl")
    iters = [json.loads(line)["iter"] for line in json_file.read_text(encoding="utf-8").splitlines()]
    (text_log,) = (tmp_path / "work").glob("*/*.log")
    shown = re.findall(r"Epoch\(train\) \[1/1\]\[(\d)/8\]", text_log.read_text(encoding="utf-8"))
    # Killed: the lines up to the last checkpoint (both files are flushed before it is written);
    # the 7th only the console showed. Raised: the process's exit flushes every line.
    expected = list(range(1, 7)) if death == "kill" else list(range(1, 8))
    assert iters == expected and [int(n) for n in shown] == expected
    assert "Epoch(train) [1/1][7/8]" in result.stdout  # the console: every line at once


def test_text_logger_hook_is_an_alias() -> None:
    assert TextLoggerHook is LoggerHook
    assert type(HOOKS.build(dict(type="TextLoggerHook", interval=5))) is LoggerHook


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_no_iteration_without_a_line_synchronises(runner_kwargs: dict[str, Any]) -> None:
    lines_at = {3, 6}  # 7 iterations, interval 3; the 7th's line is written at after_train_epoch

    class Arm(Hook):
        priority = "HIGHEST"

        def before_train_iter(self, runner: Any, batch_idx: int) -> None:
            if runner.iter + 1 not in lines_at:
                torch.cuda.set_sync_debug_mode("error")  # any device-to-host wait now raises

    class Disarm(Hook):
        priority = "LOWEST"

        def after_train_iter(self, runner: Any, batch_idx: int) -> None:
            torch.cuda.set_sync_debug_mode(0)

    torch.manual_seed(0)
    batches = [(torch.randn(2, 4, device="cuda"), torch.randn(2, 1, device="cuda")) for _ in range(7)]
    hooks: dict[str, Any] = {k: None for k in DEFAULT_HOOKS}
    hooks.update(optimizer=dict(type="OptimizerHook"), timer=dict(type="IterTimerHook"))
    hooks["logger"] = hook = LoggerHook(interval=3)
    runner = Runner(
        **{
            **runner_kwargs,
            "device": "cuda",
            "train_dataloader": batches,
            "val_dataloader": None,
            "max_epochs": 1,
            "default_hooks": hooks,
            "custom_hooks": [Arm(), Disarm()],
        }
    )
    try:
        runner.run()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(messages(hook)) == 3 and all("memory: " in m for m in messages(hook))


def test_each_line_shows_the_lr_of_its_iteration(runner_kwargs: dict[str, Any], make_loader: Any) -> None:
    class LrRecorder(Hook):
        priority = "LOWEST"  # after the scheduler stepped: the lr the next iteration trains with

        def __init__(self) -> None:
            self.lrs: list[float] = []

        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            self.lrs.append(runner.optimizer.param_groups[0]["lr"])

    hook, seen = LoggerHook(interval=2, by_epoch=False), LrRecorder()
    runner = make_runner(
        runner_kwargs, hook, train_dataloader=make_loader(6), val_dataloader=None, max_epochs=1,
        param_scheduler=dict(type="StepLR", step_size=1, gamma=0.5, by_epoch=False),
        custom_hooks=[seen],
        default_hooks={**dict.fromkeys(DEFAULT_HOOKS), "optimizer": DEFAULT_HOOKS["optimizer"],
                       "param_scheduler": DEFAULT_HOOKS["param_scheduler"], "logger": hook},
    )
    runner.train()
    # A line is written after its iteration's hooks up to the logger (BELOW_NORMAL), before
    # the scheduler (LOW) steps: the lr that iteration trained with.
    trained_with = [0.01 * 0.5**i for i in range(6)]
    assert [r["lr"] for r in records(hook)] == pytest.approx([trained_with[i] for i in (1, 3, 5)])
    assert runner.message_hub.latest["lr"] == pytest.approx(trained_with[5])
    assert seen.lrs[-1] == pytest.approx(0.01 * 0.5**6)

"""Every example in examples/ runs, as a user runs it, so that none can rot.

The scripts run in child processes (a user's fresh interpreter; custom_hook.py registers a
class in HOOKS, which must not leak into this process). Installed plugins are kept out by the
suite's autouse fixture, whose environment the children inherit.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pluginloop import cli
from pluginloop.config import load_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str, *args: str, cwd: Path) -> str:
    """Run ``examples/<script> args`` in ``cwd``; its output, after checking it exited 0."""
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def value(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text[-2000:]}"
    return float(found.group(1))


@pytest.mark.slow
def test_train_digits_reaches_95_percent_test_accuracy_and_says_where_its_files_are(tmp_path: Path) -> None:
    out = run_example("train_digits.py", cwd=tmp_path)  # the full run, as the README promises
    summary = out[out.index("\nSummary\n"):]
    assert value(r"test acc\s+(\d\.\d+)", summary) >= 0.95
    assert value(r"best val acc\s+(\d\.\d+) at epoch \d+", summary) >= 0.9
    work = tmp_path / "work_dirs" / "digits"
    best = re.search(r"best model\s+(\S+)", summary)
    assert best and (tmp_path / best.group(1)).is_file() and "best_acc_epoch_" in best.group(1)
    assert re.search(r"last epoch\s+work_dirs/digits/epoch_10\.pth", summary)
    kept = sorted(p.name for p in work.glob("epoch_*.pth"))
    assert kept == ["epoch_10.pth", "epoch_9.pth"]  # max_keep_ckpts=2
    log = re.search(r"text log\s+(\S+)", summary)
    assert log and (tmp_path / log.group(1)).read_text().count("Epoch(val)") == 10
    assert "Epoch(test) [10]" in out


@pytest.fixture
def one_thread() -> Any:
    """torch on one thread, as the example scripts run (a tiny model is slower on more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_digits_config_trains_with_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    work = tmp_path / "digits"
    status = cli.main(["train", str(EXAMPLES / "configs" / "digits.py"), "--work-dir", str(work),
                       "--cfg-options", "max_epochs=1", "scheduler.T_max=1"])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "DigitsCNN (38,282 parameters)" in out and "1 epoch x 40 iterations = 40 iterations" in out
    assert value(r"Epoch\(test\) \[1\]  loss: \S+  acc: (\d\.\d+)", out) > 0.5  # one epoch learns a lot
    assert (work / "epoch_1.pth").is_file() and list(work.glob("best_acc_epoch_1.pth"))


def test_the_digits_config_and_script_describe_the_same_run() -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import train_digits
    finally:
        sys.path.remove(str(EXAMPLES))
    config = load_config(EXAMPLES / "configs" / "digits.py")
    script_model, config_model = train_digits.DigitsCNN(), config["model"]
    shapes = [tuple(p.shape) for p in script_model.parameters()]
    assert shapes == [tuple(p.shape) for p in config_model.parameters()]
    assert config["max_epochs"] == train_digits.EPOCHS
    loaders = train_digits.digits_loaders()
    for split in ("train", "val", "test"):
        mine: Any = loaders[split].dataset
        theirs: Any = config[f"{split}_dataloader"].dataset
        assert torch.equal(mine.tensors[1], theirs.tensors[1]), split


@pytest.mark.slow
def test_custom_hook_runs_above_normal_and_stops_a_nan_run(tmp_path: Path) -> None:
    out = run_example("custom_hook.py", "--epochs", "1", cwd=tmp_path)
    order = re.search(r"after_train_iter runs, in order: (.*)", out)
    assert order
    names = [entry.strip() for entry in order.group(1).split(",")]
    assert names[:2] == ["OptimizerHook (HIGH)", "CheckInvalidLossHook (ABOVE_NORMAL)"]
    assert "the poisoned run stopped as it should" in out
    assert ("plugin 'CheckInvalidLossHook' failed in hook point 'after_train_iter' at epoch 0, iteration 3: "
            "FloatingPointError: the training loss is nan: check this batch's data") in out


@pytest.mark.slow
def test_amp_accumulation_stops_half_way_and_resumes_to_the_end(tmp_path: Path) -> None:
    out = run_example("amp_accumulation.py", "--epochs", "2", cwd=tmp_path)
    work = tmp_path / "work_dirs" / "amp_accumulation"
    assert "stopped at epoch 1, iteration 79" in out
    assert f"resumed from {work / 'epoch_1.pth'} (epoch 1, iter 79)" in out
    assert "resumed from epoch 1 and finished at epoch 2 (iteration 158)" in out
    assert "Fp16OptimizerHook" in out
    assert value(r"test acc (\d\.\d+)", out) > 0.5

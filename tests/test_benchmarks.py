"""The benchmark scripts run and print tables that parse (smoke tests: no timing is asserted)."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pluginloop
from pluginloop.hookspecs import HOOK_POINTS

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text``, as rows of {header: cell}."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if block:
            header, sep, *rows = block
            assert set("".join(sep)) <= {"-"}, f"no separator row under {header}"
            assert all(len(r) == len(header) for r in rows), f"ragged table under {header}"
            found.append([dict(zip(header, r)) for r in rows])
            block = []
    return found


def numbers(row: dict[str, str], *columns: str) -> list[float]:
    for column in columns:
        assert NUMBER.match(row[column]), f"{column}={row[column]!r} in {row}"
    return [float(row[c]) for c in columns]


@pytest.mark.slow  # fresh processes that import torch
def test_overhead_quick_table_and_raw_results(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    out = run("overhead.py", "--quick", "--variants", "default,optimizer", "--json", str(raw))
    (rows,) = tables(out)
    assert [r["variant"] for r in rows] == [
        "hand-written loop",
        "pluginloop, default hooks",
        "pluginloop, optimizer hook only",
    ]
    for row in rows:
        median, low, high = numbers(row, "median µs/iter", "min", "max")
        assert 0 < low <= median <= high
        numbers(row, "overhead µs", "CPU µs/iter", "CPU ovh µs", "peak RSS MB")
    assert rows[0]["import s"] == "-" and rows[0]["construct ms"] == "-"
    for row in rows[1:]:
        numbers(row, "import s", "construct ms")
    assert "target overhead with default hooks" in out and "target Runner(...) construction" in out
    # --quick runs once per variant: too few runs for an interval of the median
    assert "95% interval of the median from 1 paired runs: too few runs (6 needed)" in out
    results = json.loads(raw.read_text())
    # --quick: 16 batches per epoch, 2 epochs, every variant the same number of iterations
    assert {v: [r["iters"] for r in runs] for v, runs in results.items()} == {
        "hand": [32],
        "default": [32],
        "optimizer": [32],
    }
    assert "OptimizerHook" in results["default"][0]["hooks"]
    assert results["optimizer"][0]["hooks"] == ["OptimizerHook"]


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, None), (6, (1, 6)), (9, (2, 8)), (20, (6, 15))],  # textbook order statistics for 95%
)
def test_the_median_interval_is_the_binomial_order_statistics(
    n: int, expected: tuple[int, int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    common: Any = importlib.import_module("_common")
    values = [float(v) for v in range(n, 0, -1)]  # unsorted on purpose: values 1..n
    assert common.median_interval(values) == expected
    assert common.median_interval(values, confidence=0.5)[0] > (expected or (1, n))[0]  # narrower


@pytest.mark.slow
def test_overhead_cuda_variant_skips_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the variant would really run")
    out = run("overhead.py", "--quick", "--device", "cuda")
    assert "skipped: CUDA is not available" in out
    assert tables(out) == []


@pytest.mark.slow
def test_overhead_rejects_an_unknown_variant() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "overhead.py"), "--variants", "defualt"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown variant(s) defualt" in proc.stderr


@pytest.mark.slow
def test_dispatch_quick_covers_every_hook_point() -> None:
    out = run("dispatch.py", "--quick")
    (rows,) = tables(out)
    assert [r["hook point"] for r in rows] == [*HOOK_POINTS, "mean of the 16"]
    for row in rows:
        pluggy_us, ours_us, loop_us, ratio = numbers(
            row, "pluggy µs", "pluginloop µs", "python loop µs", "pluginloop / pluggy"
        )
        assert min(pluggy_us, ours_us, loop_us) > 0
        assert ratio == pytest.approx(ours_us / pluggy_us, abs=0.02)
    assert re.search(r"target pluginloop costs no more than pluggy .*-> (holds|MISSED)", out)


@pytest.mark.slow
def test_hotpath_quick_times_each_piece() -> None:
    out = run("hotpath.py", "--quick", "--top", "5")
    rows = tables(out)[0]
    pieces = [r["piece"] for r in rows]
    assert pieces[:3] == ["to_device(batch)", "forward() wrapper", "forward contexts"]
    assert "after_train_iter: OptimizerHook" in pieces
    assert {"before_train_iter: dispatch", "after_train_iter: dispatch"} <= set(pieces)
    for row in rows:
        numbers(row, "µs")
    assert "cProfile of one epoch" in out and "ncalls" in out


@pytest.mark.slow
def test_run_all_quick_prints_every_section() -> None:
    out = run("run_all.py", "--quick")
    assert out.startswith("# pluginloop benchmarks")
    assert "`python benchmarks/run_all.py --quick`" in out
    titles = re.findall(r"^## (\w+): ", out, flags=re.M)
    assert titles == ["overhead", "overhead", "dispatch"]
    tiny, medium, dispatch = tables(out)
    assert len(tiny) == 6 and len(medium) == 3 and len(dispatch) == len(HOOK_POINTS) + 1
    assert [r["variant"] for r in medium] == [
        "hand-written loop",
        "pluginloop, default hooks",
        "pluginloop, optimizer hook only",
    ]
    assert re.search(r"within noise: (yes|NO) \(overhead -?[\d.]+ µs/iter", out)
    assert re.search(
        r"growth per extra no-op hook, with 10 / with 50 of them: -?[\d.]+ / -?[\d.]+ µs/iter", out
    )


def test_cuda_sync_count_is_attributed_to_iterations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU variant's counting, exercised on CPU with stand-in sync warnings."""
    monkeypatch.syspath_prepend(str(BENCH))
    overhead: Any = importlib.import_module("overhead")
    syncs = overhead._SyncLog()

    class Syncing(pluginloop.Hook):
        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            if runner.iter in (3, 49):  # 49: the 50th iteration, which writes a log line
                warnings.warn("called a synchronizing CUDA operation", stacklevel=1)

        def after_train_epoch(self, runner: Any) -> None:  # between iterations: counted, not quiet
            warnings.warn("called a synchronizing CUDA operation", stacklevel=1)

    g = torch.Generator().manual_seed(0)
    loader = DataLoader(
        TensorDataset(torch.randn(120, 4, generator=g), torch.randn(120, 1, generator=g)), batch_size=2
    )
    runner = pluginloop.Runner(
        nn.Linear(4, 1),
        work_dir=tmp_path,
        train_dataloader=loader,
        optimizer=dict(type="SGD", lr=0.01),
        loss_fn=nn.MSELoss(),
        max_epochs=1,
        default_hooks={"logger": None, "checkpoint": None},
        custom_hooks=[overhead._sync_probe(syncs), Syncing()],
        device="cpu",
        launcher="none",
        autoload_plugins=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = syncs.show
        warnings.warn("unrelated", stacklevel=1)  # not a sync: ignored
        runner.train()
    report = syncs.report(iters_per_epoch=60, iters=60)
    assert report["syncs"] == 3
    assert report["syncs_quiet"] == 1  # iteration 3 only
    assert report["quiet_iters"] == 58  # all but the 50th and the epoch's last
    ((where, count),) = report["quiet_sources"]
    assert where.startswith("test_benchmarks.py:") and count == 1


def test_attribute_dict_prints_one_figure_per_mode() -> None:
    out = run("attribute_dict.py")
    lines = out.splitlines()
    assert lines[0].startswith(f"Python {sys.version.split()[0]}:")
    figures = {line.split(":")[0].strip(): line.split(":")[1].split("ns")[0].strip() for line in lines[1:]}
    assert list(figures) == ["fresh", "read", "copied"]
    assert all(NUMBER.match(value) and float(value) > 0 for value in figures.values()), figures

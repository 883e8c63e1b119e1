"""SamplesSeenHook: the template's example, tested with the pluginloop.testing fixtures."""

from __future__ import annotations

import logging
from typing import Any

import importlib_metadata
import pytest
from pluginloop_template import SamplesSeenHook


@pytest.fixture
def log_lines() -> Any:
    """Messages of the 'pluginloop' logger during the test."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("pluginloop")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_it_counts_samples_and_logs_after_each_epoch(make_runner: Any, log_lines: list[str]) -> None:
    hook = SamplesSeenHook()
    make_runner(custom_hooks=[hook]).train()
    assert hook.samples_seen == 2 * 32
    assert [line.split(" (")[0] for line in log_lines if line.startswith("samples seen")] == [
        "samples seen: 32",
        "samples seen: 64",
    ]


def test_its_count_survives_a_resume(make_runner: Any, tmp_path: Any) -> None:
    first = make_runner(custom_hooks=[dict(type="template")], max_epochs=1)
    first.train()
    path = first.save_checkpoint("epoch_1.pth")
    resumed = make_runner(custom_hooks=[dict(type="template")], max_epochs=2, resume=str(path))
    resumed.train()
    [hook] = [h for h in resumed._pm.get_plugins() if isinstance(h, SamplesSeenHook)]
    assert hook.samples_seen == 64


def test_without_log_only_the_counting_point_is_registered(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[SamplesSeenHook(log=False)])
    points = [p for p, names in runner.get_hooks_info().items() if any("SamplesSeenHook" in n for n in names)]
    assert points == ["after_train_iter"]


def test_the_package_declares_its_entry_point() -> None:
    [ep] = importlib_metadata.entry_points(group="pluginloop", name="template")
    assert ep.load() is SamplesSeenHook

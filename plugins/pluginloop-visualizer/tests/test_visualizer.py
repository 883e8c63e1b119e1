"""VisualizerHook: real TensorBoard event files and a PNG, read back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import importlib_metadata
import pluginloop_visualizer
import pytest
from matplotlib import image
from pluginloop_visualizer import VisualizerHook
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_it_writes_tensorboard_scalars_and_a_png_of_the_curves(make_runner: Any, monkeypatch: Any) -> None:
    draws = []
    draw = VisualizerHook._draw
    monkeypatch.setattr(VisualizerHook, "_draw", lambda self, path: (draws.append(path), draw(self, path)))
    runner = make_runner(custom_hooks=[dict(type="visualizer", interval=1)], max_epochs=2)
    runner.train()
    assert len(draws) == 2 * 2 + 1  # after each train and val epoch, and at the end

    scalars = _scalars(runner.work_dir / "tensorboard")
    assert set(scalars) == {"train/loss", "train/lr", "train/time", "val/loss", "val/acc"}
    assert [step for step, _ in scalars["train/loss"]] == list(range(1, 9))
    assert [value for _, value in scalars["train/lr"]] == [pytest.approx(0.1)] * 8
    assert all(value > 0 for _, value in scalars["train/time"])
    assert [step for step, _ in scalars["val/acc"]] == [4, 8]
    assert scalars["val/loss"][-1][1] == pytest.approx(runner.val()["loss"], rel=1e-5)

    png = runner.work_dir / "curves.png"
    pixels = image.imread(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 600 and pixels.std() > 0  # drawn, not blank


def test_it_is_the_last_hook_of_every_point(make_runner: Any) -> None:
    runner = make_runner(custom_hooks=[VisualizerHook()])
    assert runner.get_hooks_info()["after_train_iter"][-1] == "VisualizerHook (LOWEST)"


def test_only_rank_0_draws(monkeypatch: Any) -> None:
    monkeypatch.setattr(pluginloop_visualizer, "get_rank", lambda: 1)
    assert VisualizerHook().hook_points() == ()


def test_log_dir_and_figure_are_configurable(make_runner: Any, tmp_path: Path) -> None:
    runner = make_runner(custom_hooks=[VisualizerHook(interval=4, log_dir=str(tmp_path / "tb"), figure=None)])
    runner.train()
    assert [step for step, _ in _scalars(tmp_path / "tb")["train/loss"]] == [4, 8]
    assert not (runner.work_dir / "curves.png").exists()


def test_the_package_declares_its_entry_point() -> None:
    [ep] = importlib_metadata.entry_points(group="pluginloop", name="visualizer")
    assert ep.load() is VisualizerHook

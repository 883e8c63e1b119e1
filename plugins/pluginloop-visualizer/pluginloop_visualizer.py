"""pluginloop-visualizer: draw the run where people look at training curves.

``VisualizerHook`` (LOWEST: it reads what every other hook has done) writes TensorBoard
event files under ``<work_dir>/tensorboard`` (``tensorboard --logdir <work_dir>/tensorboard``)
with ``train/loss``, ``train/lr``, ``train/time`` (seconds per iteration) and every
validation metric as ``val/<name>``, all against the training iteration; and a PNG of the
same curves, ``<work_dir>/curves.png``, redrawn after every epoch and at the end of the run.
Only rank 0 draws; on other ranks the hook registers no hook point at all.

TensorBoard and matplotlib are imported when a run starts, not when the plugin is loaded:
every Runner loads installed plugins, and construction must stay fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pluginloop import Hook, Priority
from pluginloop.dist import get_rank

if TYPE_CHECKING:
    from pluginloop import Runner

__all__ = ["VisualizerHook"]


class VisualizerHook(Hook):
    """TensorBoard scalars and a PNG of loss, lr, time and validation metrics (rank 0).

    ``interval``: log training scalars every ``interval`` iterations (each reads the loss
    from the device once). ``log_dir``: the TensorBoard directory (default
    ``<work_dir>/tensorboard``). ``figure``: the PNG's path (default ``<work_dir>/curves.png``;
    ``None`` draws none).
    """

    priority = Priority.LOWEST

    def __init__(
        self, interval: int = 10, log_dir: str | None = None, figure: str | None = "curves.png"
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, got {interval!r}")
        self.interval, self.log_dir, self.figure = interval, log_dir, figure
        self._writer: Any = None
        self._curves: dict[str, tuple[list[int], list[float]]] = {}
        self._tick = (0, 0.0)  # (iteration, time) of the last logged training step

    def hook_points(self) -> tuple[str, ...]:
        """Nothing on ranks other than 0: one process draws."""
        if get_rank() != 0:
            return ()
        return ("before_run", "after_train_iter", "after_train_epoch", "after_val_epoch", "after_run")

    def before_run(self, runner: Runner) -> None:
        """Open the event file writer."""
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        log_dir = Path(self.log_dir) if self.log_dir else runner.work_dir / "tensorboard"
        self._writer = SummaryWriter(log_dir=str(log_dir))
        self._tick = (runner.iter, time.perf_counter())

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Every ``interval`` iterations: loss, learning rate and seconds per iteration."""
        if not self.every_n_iters(runner, self.interval):
            return
        step, now = runner.iter + 1, time.perf_counter()
        last_step, last_time = self._tick
        scalars = {"train/time": (now - last_time) / max(step - last_step, 1)}
        self._tick = (step, now)
        loss = (outputs or {}).get("loss")
        if loss is not None:
            scalars["train/loss"] = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        if runner.optimizer is not None:
            scalars["train/lr"] = float(runner.optimizer.param_groups[0]["lr"])
        for name, value in scalars.items():
            self._add(name, step, value)

    def after_train_epoch(self, runner: Runner) -> None:
        """Flush the events and redraw the PNG."""
        self._refresh(runner)

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Every validation metric as ``val/<name>`` at the current iteration; redraw."""
        for name, value in metrics.items():
            self._add(f"val/{name}", runner.iter, float(value))
        self._refresh(runner)

    def after_run(self, runner: Runner) -> None:
        """Final PNG; close the event file."""
        self._refresh(runner)
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _add(self, tag: str, step: int, value: float) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, global_step=step)
        steps, values = self._curves.setdefault(tag, ([], []))
        steps.append(step)
        values.append(value)

    def _refresh(self, runner: Runner) -> None:
        if self._writer is not None:
            self._writer.flush()
        if self.figure is not None and self._curves:
            self._draw(runner.work_dir / self.figure)

    def _draw(self, path: Path) -> None:
        # A Figure with its own Agg canvas: no pyplot state, no display, any thread.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        groups: dict[str, list[str]] = {}
        for tag in sorted(self._curves):
            groups.setdefault(tag.split("/", 1)[-1] if tag.startswith("train/") else "val", []).append(tag)
        fig = Figure(figsize=(4 * len(groups), 3.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        for ax, (title, tags) in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups.items()):
            for tag in tags:
                steps, values = self._curves[tag]
                ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=tag)
            ax.set_title(title)
            ax.set_xlabel("iteration")
            if len(tags) > 1:
                ax.legend(fontsize="small")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)  # a viewer never sees half a PNG

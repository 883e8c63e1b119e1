"""What a person reads about a run: its shape at the start, and the hook plan.

``log_start`` is called once by ``Runner.run()`` / ``Runner.train()``; ``format_plan`` is the
full per-point plan that ``pluginloop hooks CONFIG.py`` prints.
"""

from __future__ import annotations

import logging
import math
import sys
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pluginloop.priority import priority_name

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = [
    "PlanEntry",
    "StdoutHandler",
    "format_plan",
    "hooks_in_order",
    "log_start",
    "make_logger",
    "plan_entry",
    "plural",
    "run_shape",
]

#: One hook at one point: name, object, priority, priority_name, source.
PlanEntry = dict[str, Any]


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """A log handler writing to the *current* ``sys.stdout``, looked up for every record.

    A handler that kept the stream it was created with would write into a replaced or
    closed one (pytest's capture, a notebook's redirection) once ``sys.stdout`` changes.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        """``sys.stdout``, now."""
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stdout


def plural(count: int, word: str) -> str:
    """``'1 epoch'``, ``'3 epochs'``, ``'1,200 iterations'``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _batches(loader: Any) -> str:
    try:
        return str(len(loader))
    except TypeError:  # an iterable dataset has no length
        return "?"


def run_shape(runner: Runner) -> list[tuple[str, str]]:
    """``(label, text)`` rows: model and device, length of the run, evaluation, work dir."""
    model = type(runner.model).__name__
    params = sum(p.numel() for p in runner.model.parameters())
    rows = [("model", f"{model} ({params:,} parameters) on {runner.device}, "
                      f"world size {runner.world_size}, seed {runner.seed}")]
    if runner.train_dataloader is not None:
        per_epoch = _batches(runner.train_dataloader)
        by_epochs = math.inf if per_epoch == "?" else runner.max_epochs * int(per_epoch)
        if runner.max_iters == by_epochs:  # whole epochs (max_iters follows from max_epochs)
            length = (f"{plural(runner.max_epochs, 'epoch')} x {per_epoch} iterations = "
                      f"{plural(int(by_epochs), 'iteration')}")
        elif math.isinf(runner.max_iters):
            length = f"{plural(runner.max_epochs, 'epoch')} x ? iterations"
        else:
            length = (f"{plural(int(runner.max_iters), 'iteration')} "
                      f"({per_epoch} per epoch, {plural(runner.max_epochs, 'epoch')})")
        rows.append(("train", length))
    evaluation = []
    if runner.val_dataloader is not None:
        every = "every epoch" if runner.val_interval == 1 else f"every {runner.val_interval} epochs"
        evaluation.append(f"val {every} ({_batches(runner.val_dataloader)} batches)")
    if runner.test_dataloader is not None:
        evaluation.append(f"test at the end ({_batches(runner.test_dataloader)} batches)")
    if evaluation:
        rows.append(("eval", ", ".join(evaluation)))
    work = str(runner.work_dir)
    if runner.resume:
        work += f" (resume from {'the latest checkpoint' if runner.resume is True else runner.resume})"
    elif runner.load_from:
        work += f" (weights from {runner.load_from})"
    rows.append(("work dir", work))
    return rows


def hooks_in_order(
    plan: Mapping[str, Sequence[PlanEntry]], registered: Sequence[str] = ()
) -> list[tuple[str, str, list[str]]]:
    """Each hook once, ``(priority names, name, points)``, by priority then registration order.

    ``registered``: the hook names in registration order (without it, the order in which
    hooks first appear in the plan stands in for it).
    """
    first: dict[str, int] = {}
    points: dict[str, list[str]] = {}
    levels: dict[str, list[str]] = {}
    for point, entries in plan.items():
        for entry in entries:
            name = entry["name"]
            points.setdefault(name, []).append(point)
            if entry["priority_name"] not in levels.setdefault(name, []):
                levels[name].append(entry["priority_name"])
            first.setdefault(name, entry["priority"])
    seq: dict[str, int] = {}
    for name in [*registered, *points]:
        seq.setdefault(name, len(seq))
    order = sorted(first, key=lambda n: (first[n], seq[n]))
    return [("/".join(levels[n]), n, points[n]) for n in order]


def _points(points: list[str], limit: int = 3) -> str:
    shown = ", ".join(points[:limit])
    return shown + (f" +{len(points) - limit} more" if len(points) > limit else "")


def log_start(runner: Runner) -> None:
    """Log the run's shape and, compactly, its hooks (one line each): once, at the start."""
    rows = run_shape(runner)
    registered = [name for name, _ in runner._pm.list_name_plugin()]
    hooks = hooks_in_order(runner.hook_plan(), registered)
    width = max((len(name) for _, name, _ in hooks), default=0)
    level = max((len(levels) for levels, _, _ in hooks), default=0)
    lines = [f"{label:<9} {text}" for label, text in rows]
    for i, (levels, name, points) in enumerate(hooks):
        lines.append(f"{'hooks' if i == 0 else '':<9} {levels:<{level}}  {name:<{width}}  {_points(points)}")
    if not hooks:
        lines.append(f"{'hooks':<9} none")
    for line in lines:
        runner.logger.info(line)


def format_plan(
    plan: Mapping[str, Sequence[PlanEntry]], title: str = "", idle: Sequence[str] = ()
) -> str:
    """The full execution plan: per hook point, its hooks in call order, priority and source.

    ``idle``: descriptions of registered hooks that implement no point in this run.
    """
    entries = [e for point_entries in plan.values() for e in point_entries]
    width = max((len(e["name"]) for e in entries), default=4)
    level = max((len(e["priority_name"]) for e in entries), default=4)
    hooks = hooks_in_order(plan)
    lines = [title] if title else []
    lines.append(f"{len(hooks)} hooks; at each point they run top to bottom "
                 "(lower priority value first, equal values in registration order).")
    empty = []
    for point, point_entries in plan.items():
        if not point_entries:
            empty.append(point)
            continue
        lines.append("")
        lines.append(point)
        for e in point_entries:
            priority = f"{e['priority_name']:<{level}} {e['priority']:>3}"
            lines.append(f"  {priority}  {e['name']:<{width}}  {e['source']}")
    if empty:
        lines += ["", "no hooks at: " + ", ".join(empty)]
    if idle:
        lines += ["", "registered, but at no hook point in this run: " + ", ".join(idle)]
    return "\n".join(lines)


def _object_name(plugin: object) -> str:
    """``module.Class`` of a hook object, or a plugin module's own name."""
    if isinstance(plugin, types.ModuleType):
        return plugin.__name__
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def plan_entry(name: str, plugin: object, priority: int, source: str) -> PlanEntry:
    """One row of ``Runner.hook_plan()``."""
    return {
        "name": name,
        "object": _object_name(plugin),
        "priority": priority,
        "priority_name": priority_name(priority),
        "source": source,
    }


def make_logger(rank: int) -> logging.Logger:
    """The ``pluginloop`` logger: INFO on rank 0, WARNING elsewhere, one aligned stdout handler."""
    logger = logging.getLogger("pluginloop")
    if not any(getattr(h, "_pluginloop", False) for h in logger.handlers):
        handler = StdoutHandler()
        # Level names padded to WARNING's width, so that messages line up in one column.
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
        handler._pluginloop = True  # type: ignore[attr-defined]  # marks ours, so it is added once
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return logger

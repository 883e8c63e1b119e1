"""CheckpointHook: periodic, last and best checkpoints; old ones deleted only after a safe write.

Every file is written by ``runner.save_checkpoint`` (rank 0 writes, atomically, with a
verified record, then moves the ``last_checkpoint`` pointer). Only after that returns does
this hook delete what ``max_keep_ckpts`` or a new best retires, so a failed or killed save
never leaves fewer good checkpoints than before, nor a pointer to a deleted file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pluginloop import _state, checkpoint
from pluginloop.errors import ConfigError
from pluginloop.hooks.base import Hook
from pluginloop.priority import Priority
from pluginloop.registry import HOOKS

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["CheckpointHook", "infer_rule"]

_RULE_KEYS = {
    "greater": ("acc", "accuracy", "f1", "precision", "recall", "auc", "map", "iou", "psnr"),
    "less": ("loss", "error", "err", "mse", "mae"),
}


def infer_rule(metric: str) -> str | None:
    """``'greater'`` or ``'less'`` for a metric by its name, or None when unknown or ambiguous.

    Whole words first (``top1_acc``, ``val/loss``), then parts of words (``miou``, ``top1acc``).
    """
    name = metric.lower()
    words = set(re.split(r"[^a-z0-9]+", name))
    for parts_of_words in (False, True):
        rules = {
            rule for rule, keys in _RULE_KEYS.items()
            if any(key in name if parts_of_words else key in words for key in keys)
        }
        if rules:
            return rules.pop() if len(rules) == 1 else None
    return None


def _positive_int(value: Any, key: str, allow: tuple[int, ...] = ()) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (value < 1 and value not in allow):
        extra = f" or {allow[0]} ({'keep all'})" if allow else ""
        raise ConfigError(f"must be a positive int{extra}, got {value!r}", key)
    return value


def _as_list(value: Any, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(f"must be a metric name, 'auto' or a list of names, got {value!r}",
                          key)
    return list(items)


@HOOKS.register_module()
class CheckpointHook(Hook):
    """Save checkpoints every ``interval`` epochs (or iterations) and keep the best (VERY_LOW).

    Args:
        interval: save every this many epochs (``by_epoch``) or iterations; files are
            ``epoch_{n}.pth`` / ``iter_{n}.pth`` with n counted from 1.
        by_epoch: count ``interval`` in epochs (after each train epoch) or iterations.
        save_last: also save at the end of the run when it is not a multiple of ``interval``.
        out_dir: write checkpoints there instead of the work dir (the pointer stays in the work dir).
        max_keep_ckpts: keep only the newest this many periodic checkpoints (-1: all). An old
            one is deleted only after the new one and the pointer are safely written.
        save_optimizer: include optimizer and scheduler state (needed to resume).
        save_best: a metric name, ``'auto'`` (the first metric the first validation reports
            other than the loss, else the loss) or a list of names: after each validation that
            improves it, save ``best_{metric}_{epoch|iter}_{n}.pth``, a complete resumable
            checkpoint, then delete the previous best. Which file is best, and its score, are
            part of this hook's state and survive a resume.
        rule: ``'greater'`` or ``'less'`` (one, or one per ``save_best`` name); by default
            inferred from the name (acc, f1, auc, map, iou... greater; loss, error, mse... less).
    """

    priority = Priority.VERY_LOW

    def __init__(
        self,
        interval: int = 1,
        by_epoch: bool = True,
        save_last: bool = False,
        out_dir: str | os.PathLike[str] | None = None,
        max_keep_ckpts: int = -1,
        save_optimizer: bool = True,
        save_best: str | list[str] | None = None,
        rule: str | list[str] | None = None,
    ) -> None:
        self.interval = _positive_int(interval, "interval")
        self.max_keep_ckpts = _positive_int(max_keep_ckpts, "max_keep_ckpts", allow=(-1,))
        flags = {"by_epoch": by_epoch, "save_last": save_last, "save_optimizer": save_optimizer}
        for key, flag in flags.items():
            if not isinstance(flag, bool):
                raise ConfigError(f"must be True or False, got {flag!r}", key)
        self.by_epoch, self.save_last, self.save_optimizer = by_epoch, save_last, save_optimizer
        if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
            raise ConfigError(f"must be a directory path or None, got {out_dir!r}", "out_dir")
        self.out_dir = out_dir
        self.save_best = [] if save_best is None else _as_list(save_best, "save_best")
        if "auto" in self.save_best and len(self.save_best) > 1:
            raise ConfigError("'auto' stands alone: pass save_best='auto' or a list of metric names",
                              "save_best")
        self.rules = self._check_rules(rule)
        self._kept: list[str] = []  # periodic (and preemption) checkpoints, oldest first
        self._best: dict[str, dict[str, Any]] = {}  # metric -> {"score", "path"}
        self._removing: list[str] = []  # retired by the last save, deleted right after it
        self._last: tuple[tuple[int, int, int, bool], Path] | None = None
        self._run_end = math.inf

    def _check_rules(self, rule: Any) -> dict[str, str]:
        rules = [rule] * len(self.save_best) if rule is None or isinstance(rule, str) else rule
        if self.save_best == [] and rule is not None:
            raise ConfigError("rule applies to save_best: give save_best= too", "rule")
        if not isinstance(rules, (list, tuple)) or len(rules) != len(self.save_best):
            raise ConfigError(f"give one rule or one per save_best name, got {rule!r}", "rule")
        checked = {}
        for name, given in zip(self.save_best, rules):
            if given not in (None, "greater", "less"):
                raise ConfigError(f"must be 'greater', 'less' or None (inferred), got {given!r}",
                                  "rule")
            inferred = given or (None if name == "auto" else infer_rule(name))
            if inferred is None and name != "auto":
                raise ConfigError(f"cannot tell whether a larger {name!r} is better: pass rule='greater' "
                                  "or rule='less'", "rule")
            checked[name] = inferred or ""
        return checked

    def hook_points(self) -> tuple[str, ...]:
        """Only the points this configuration uses: no per-iteration call when ``by_epoch``."""
        periodic = "after_train_epoch" if self.by_epoch else "after_train_iter"
        points = ("before_run", "after_load_checkpoint", periodic)
        return (*points, "after_val_epoch") if self.save_best else points

    def checkpoint_dir(self, runner: Runner) -> Path:
        """Where this hook writes: ``out_dir``, else the work dir (the runner resumes from there)."""
        return Path(self.out_dir if self.out_dir is not None else runner.work_dir).absolute()

    # -- hook points -----------------------------------------------------------------------

    def before_run(self, runner: Runner) -> None:
        """Learn the run's last iteration (for ``save_last`` by iteration)."""
        if self.save_last and not self.by_epoch:
            self._run_end = runner.max_iters

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Save every ``interval`` iterations (``by_epoch=False``), and at the last with ``save_last``."""
        done = runner.iter + 1
        if done % self.interval == 0 or done == self._run_end:
            self._save_periodic(runner, f"iter_{done}.pth")

    def after_train_epoch(self, runner: Runner) -> None:
        """Save every ``interval`` epochs, and after the last with ``save_last``."""
        done = runner.epoch + 1
        last = done >= runner.max_epochs or runner.iter >= runner.max_iters
        if done % self.interval == 0 or (self.save_last and last):
            self._save_periodic(runner, f"epoch_{done}.pth")

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Save a best checkpoint for each ``save_best`` metric this validation improved."""
        if runner.epoch == 0 and runner.iter == 0:  # runner.val() before any training: nothing to keep
            return
        if "auto" in self.rules:
            if not metrics:
                return
            name = next((m for m in metrics if m != "loss"), next(iter(metrics)))
            rule = self.rules["auto"] or infer_rule(name)
            if rule is None:
                raise ValueError(f"CheckpointHook(save_best='auto') picked metric {name!r}, but cannot "
                                 "tell whether larger is better: pass save_best=<name> with "
                                 "rule='greater' or 'less'")
            self.rules = {name: rule}
            runner.logger.info("save_best='auto': keeping the checkpoint with the best %s (%s is better)",
                               name, "greater" if rule == "greater" else "lower")
        for name, rule in self.rules.items():
            if name not in metrics:
                raise KeyError(f"CheckpointHook(save_best={name!r}): validation reported only "
                               f"{', '.join(sorted(metrics)) or 'nothing'}; use one of these")
            score, best = float(metrics[name]), self._best.get(name)
            better = best is None or (score > best["score"] if rule == "greater" else score < best["score"])
            if better:
                self._save_best(runner, name, score, best)

    def _save_best(self, runner: Runner, name: str, score: float, best: dict[str, Any] | None) -> None:
        unit, n = ("epoch", runner.epoch) if self.by_epoch else ("iter", runner.iter)
        filename = f"best_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}_{unit}_{n}.pth"
        # The state saved inside the new file already names it the best; the old best goes after.
        self._best[name] = {"score": score, "path": str(self.checkpoint_dir(runner) / filename)}

        def revert() -> None:
            if best is None:
                self._best.pop(name, None)
            else:
                self._best[name] = best

        path = self._save(runner, filename, [best["path"]] if best is not None else [], revert)
        runner.logger.info("new best %s %.6g: saved %s", name, score, path)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
        """Finish deleting what the resumed checkpoint's save had retired (a kill may have come first)."""
        if runner.rank == 0:
            self._delete(runner, self._removing)

    # -- saving ------------------------------------------------------------------------------

    def save_now(self, runner: Runner) -> Path:
        """Save at the current position (on preemption), rotated like the periodic ones.

        Returns the checkpoint already written at this position, if any, instead of another.
        """
        if self._last is not None and self._last[0] == _state.position(runner):
            return self._last[1]
        return self._save_periodic(runner, f"preempt_iter_{runner.iter}.pth")

    def _save_periodic(self, runner: Runner, filename: str) -> Path:
        path = str(self.checkpoint_dir(runner) / filename)
        previous = list(self._kept)
        self._kept = [p for p in self._kept if p != path] + [path]
        keep = self.max_keep_ckpts
        retire = self._kept[:-keep] if keep > 0 else []
        self._kept = self._kept[len(retire):]

        def revert() -> None:
            self._kept = previous

        return self._save(runner, filename, retire, revert)

    def _save(self, runner: Runner, filename: str, retire: list[str], revert: Callable[[], None]) -> Path:
        """Save (the state already names the new file and what it retires), then delete ``retire``."""
        self._removing = retire
        try:
            path = runner.save_checkpoint(filename, self.checkpoint_dir(runner), self.save_optimizer)
        except BaseException:
            revert()  # nothing was written: this hook's state must not claim it was
            self._removing = []
            raise
        self._last = (_state.position(runner), path)
        if runner.rank == 0:  # only now: the new checkpoint and the pointer are safely on disk
            self._delete(runner, retire)
        self._removing = []
        return path

    def _delete(self, runner: Runner, paths: list[str]) -> None:
        protected = {info["path"] for info in self._best.values()} | set(self._kept)
        if self._last is not None:
            protected.add(str(self._last[1]))
        for old in paths:
            if old not in protected and Path(old).exists():
                checkpoint.remove_checkpoint(old)
                runner.logger.info("deleted old checkpoint %s", old)

    # -- checkpoint state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Kept checkpoints, the best of each metric (score and file), and what the save retires."""
        return {"kept": list(self._kept), "best": {k: dict(v) for k, v in self._best.items()},
                "rules": dict(self.rules), "removing": list(self._removing)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._kept = list(state.get("kept", []))
        self._best = {k: dict(v) for k, v in state.get("best", {}).items()}
        if "auto" in self.rules and state.get("rules"):  # the metric 'auto' picked before the resume
            self.rules = dict(state["rules"])
        self._removing = list(state.get("removing", []))

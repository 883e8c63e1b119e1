"""pluginloop-early-stopping: end training when a validation metric stops improving.

``EarlyStoppingHook`` watches one metric of ``after_val_epoch`` and sets
``runner.should_stop``, which ends training at the next iteration boundary. Its best
value and patience count are saved in checkpoints (under the hook's registered name), so a
resumed run keeps counting. It needs ``monitor=``, so installing the package does not add
it to every run: configure it, ``custom_hooks=[dict(type='early_stopping', monitor='acc')]``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pluginloop import ConfigError, Hook

if TYPE_CHECKING:
    from pluginloop import Runner

__all__ = ["EarlyStoppingHook"]

_GREATER = ("accuracy", "acc", "f1", "precision", "recall", "auc", "map", "iou")
_LESS = ("loss", "error", "err")


def infer_rule(monitor: str) -> Literal["greater", "less"]:
    """``'greater'`` or ``'less'`` from the metric's name (by substring); ConfigError if unsure."""
    name = monitor.lower()
    greater = [k for k in _GREATER if k in name]
    less = [k for k in _LESS if k in name]
    if bool(greater) == bool(less):
        found = f"it contains both {greater[0]!r} and {less[0]!r}" if greater else "it names no known metric"
        raise ConfigError(
            f"cannot tell whether monitor {monitor!r} should grow or shrink ({found}): pass rule='greater' "
            f"or rule='less' (inferred names: greater for {', '.join(_GREATER)}; less for {', '.join(_LESS)})"
        )
    return "greater" if greater else "less"


class EarlyStoppingHook(Hook):
    """Stop training when ``monitor`` has not improved for ``patience`` validations.

    ``rule``: ``'greater'`` or ``'less'`` is better; inferred from the name when ``None``
    (acc, accuracy, f1, precision, recall, auc, map, iou: greater; loss, error, err: less).
    ``min_delta``: the smallest change that counts as an improvement. ``check_finite``: stop
    at once when the metric is NaN or infinite. ``stopping_threshold``: stop as soon as the
    metric is at least this good.
    """

    #: It needs ``monitor``: the entry point makes it configurable, it is not loaded by itself.
    autoload: ClassVar[bool] = False

    def __init__(
        self,
        monitor: str,
        rule: Literal["greater", "less"] | None = None,
        patience: int = 5,
        min_delta: float = 0.0,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
    ) -> None:
        if rule not in (None, "greater", "less"):
            raise ConfigError(f"rule must be 'greater', 'less' or None, got {rule!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"patience must be a positive int, got {patience!r}")
        if min_delta < 0:
            raise ConfigError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.rule = rule or infer_rule(monitor)
        self.patience, self.min_delta = patience, float(min_delta)
        self.check_finite, self.stopping_threshold = check_finite, stopping_threshold
        self.best: float | None = None
        self.wait_count = 0

    def _better(self, value: float, than: float, delta: float) -> bool:
        return value > than + delta if self.rule == "greater" else value < than - delta

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        """Compare this validation's ``monitor`` with the best so far; stop when a rule fires."""
        if self.monitor not in metrics:
            raise ConfigError(
                f"monitor {self.monitor!r} is not a validation metric; the metrics are "
                f"{', '.join(sorted(metrics)) or 'none'}: pass one of them as monitor="
            )
        value = float(metrics[self.monitor])
        reason = None
        if self.check_finite and not math.isfinite(value):
            reason = f"{self.monitor} is {value} (check_finite)"
        elif self.best is None or self._better(value, self.best, self.min_delta):
            self.best, self.wait_count = value, 0
        else:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                reason = (
                    f"{self.monitor} has not improved on {self.best:.6g} by more than {self.min_delta} "
                    f"for {self.wait_count} validations (patience)"
                )
        threshold = self.stopping_threshold
        if (
            reason is None
            and threshold is not None
            and (value == threshold or self._better(value, threshold, 0))
        ):
            reason = (
                f"{self.monitor} = {value:.6g} reached stopping_threshold {threshold} (stopping_threshold)"
            )
        if reason is not None:
            runner.should_stop = True
            runner.logger.info("early stopping after epoch %d: %s", runner.epoch, reason)

    def state_dict(self) -> dict[str, Any]:
        """The best value and the number of validations without improvement."""
        return {"best": self.best, "wait_count": self.wait_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.best, self.wait_count = state["best"], int(state["wait_count"])

"""MessageHub: the one place where hooks publish scalars (loss, lr, time, grad_norm, metrics).

Two kinds of entries:

- **windowed** (``update``): summed until a reader takes the window's mean with ``means()``,
  which is how the logger smooths loss and timings over its interval;
- **latest only** (``set``): values that are read as they are, not averaged (lr, eta,
  validation metrics).

Both also land in ``latest``. Values stay where they were produced: a loss tensor on the
GPU is summed on the GPU, and only ``means()`` (called when a log line is written) copies
it to the host. That keeps iterations that write no log line free of device-to-host
synchronisation. Names prefixed ``val/`` or ``test/`` belong to those loops' windows.

A hook that produces values every training iteration (the timer, the logger's loss) can
instead keep its own running sums and register a **source** (``add_source``): a callable
the hub calls before every read, which publishes what accumulated since the last one.
Readers see the same windows; the iteration pays a few additions instead of hub calls
(benchmarks/hotpath.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import torch

__all__ = ["EVAL_PREFIXES", "MessageHub", "Scalar", "running_sum", "sum_of"]

#: A value a hook may publish: a Python number or a one-element tensor.
Scalar = float | int | torch.Tensor
#: Name prefixes of the evaluation loops' entries; every other name is a training entry.
EVAL_PREFIXES = ("val/", "test/")


class MessageHub:
    """Windowed scalars (summed until read) plus the latest value of each name.

    ``update(name, value)`` adds to the window; ``means()`` returns and clears the window
    means; ``set(name, value)`` records a value that is not averaged, which ``unaveraged()``
    returns; ``latest[name]`` is the last value published either way (e.g. ``'lr'``,
    ``'eta'``, ``'val/acc'``). Every read first calls the registered sources.
    """

    def __init__(self) -> None:
        # Every tensor in _sums was created by the hub, so adding to it in place is safe.
        self._sums: dict[str, float | torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._cleared: set[str] = set()  # names whose windows were read: not unaveraged
        self._latest: dict[str, Scalar] = {}
        self._sources: list[Callable[[MessageHub], object]] = []

    @property
    def latest(self) -> dict[str, Scalar]:
        """The last value published of each name (sources publish first)."""
        self._pull()
        return self._latest

    def add_source(self, publish: Callable[[MessageHub], object]) -> None:
        """Call ``publish(hub)`` before every read of the hub (adding it again changes nothing).

        ``publish`` publishes, with ``update``/``set``, what its hook accumulated since it
        last ran (``update(name, mean, count=n)`` keeps the window's mean exact); a value
        published so is the ``latest`` of its name, the mean since the previous read.
        """
        if publish not in self._sources:
            self._sources.append(publish)

    def remove_source(self, publish: Callable[[MessageHub], object]) -> None:
        """Stop calling ``publish`` (it was not a source: nothing happens)."""
        if publish in self._sources:
            self._sources.remove(publish)

    def _pull(self) -> None:
        for publish in self._sources:
            publish(self)

    def update(self, name: str, value: Scalar, count: int = 1) -> None:
        """Add ``value`` (the mean over ``count`` samples) to the window of ``name``.

        A CPU tensor is read at once: host memory costs no synchronisation, and floats add
        faster than tensors. A tensor on another device stays there, summed in place.
        """
        if type(value) is not float:
            value = _read(value)
        self._latest[name] = value
        total = self._sums.get(name)
        if type(value) is float and (total is None or type(total) is float):  # the common case, kept short
            self._sums[name] = value * count if total is None else total + value * count
        else:
            self._sums[name] = _add(name, total, value, count)
        self._counts[name] = self._counts.get(name, 0) + count

    def set(self, name: str, value: Scalar) -> None:
        """Record ``value`` as the latest of ``name`` without averaging it (lr, eta, metrics)."""
        if type(value) is not float and isinstance(value, torch.Tensor):
            value = value.detach()
        self._latest[name] = value

    def means(self, mode: str = "train", clear: bool = True) -> dict[str, float]:
        """The mean of each window of ``mode`` since it was last cleared, as floats.

        ``'train'``: every name without a ``val/`` or ``test/`` prefix; ``'val'`` / ``'test'``:
        the names with that prefix, returned without it. This reads device values.
        """
        self._pull()
        names, strip = _of_mode(self._sums, mode)
        out = {n[strip:]: float(self._sums[n]) / self._counts[n] for n in names}
        if clear:
            self._cleared.update(names)
            for n in names:
                del self._sums[n], self._counts[n]
        return out

    def unaveraged(self, mode: str = "train") -> dict[str, float]:
        """The latest value of each name of ``mode`` that has no window (published with ``set``).

        Names as in ``means``; this reads device values.
        """
        self._pull()
        names, strip = _of_mode(self._latest, mode)
        windowed = self._cleared.union(self._sums)
        return {n[strip:]: float(self._latest[n]) for n in names if n not in windowed}

    def get(self, name: str, default: float | None = None) -> float | None:
        """The latest value of ``name`` as a float (reads a device value)."""
        value = self.latest.get(name)
        return default if value is None else float(value)

    def state_dict(self) -> dict[str, Any]:
        """Latest values and open windows as plain floats, for checkpoints."""
        self._pull()
        return {
            "latest": {k: float(v) for k, v in self._latest.items()},
            "sums": {k: float(v) for k, v in self._sums.items()},
            "counts": dict(self._counts),
            "cleared": sorted(self._cleared),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._latest = dict(state["latest"])
        self._sums = dict(state["sums"])
        self._counts = dict(state["counts"])
        self._cleared = set(state.get("cleared", ()))


def _of_mode(names: Iterable[str], mode: str) -> tuple[list[str], int]:
    """The names of ``mode`` (see ``MessageHub.means``) and the length of their prefix."""
    if mode == "train":
        return [n for n in names if not n.startswith(EVAL_PREFIXES)], 0
    prefix = f"{mode}/"
    return [n for n in names if n.startswith(prefix)], len(prefix)


def running_sum(total: float | torch.Tensor, value: Scalar, name: str = "value") -> float | torch.Tensor:
    """``total + value``, summed as the hub sums a window (start with ``total=0.0``).

    For a hook that keeps its own sums and publishes them as a source (``add_source``): a
    CPU tensor is read into a float at once; a tensor on another device is summed there,
    without synchronising, in a float32 (or float64) tensor of the sum's own, in place.
    """
    value = _read(value)
    if type(total) is float and type(value) is float:  # the common case, kept short
        return total + value
    return _add(name, total, value, 1)


def sum_of(values: Sequence[Scalar], name: str = "value") -> float | torch.Tensor:
    """The sum of ``values`` as ``running_sum`` would add them one by one, in one operation.

    For a hook that keeps the device values of a window and sums them only when the hub
    reads it: no value is read (a sync) per iteration, and one stack-and-sum runs instead of
    a kernel launch per value (the logger's loss). Scalar tensors (shape ``()``) of one
    device are stacked and summed there, in float32 at least (float64 stays); numbers,
    one-element tensors of another shape or mixed devices are added one by one.
    """
    try:
        with torch.no_grad():
            stacked = torch.stack(cast(list[torch.Tensor], values))
    except (TypeError, RuntimeError):  # numbers, mixed devices or shapes
        stacked = None
    if stacked is None or stacked.dim() != 1:
        total: float | torch.Tensor = 0.0
        for value in values:
            total = running_sum(total, value, name)
        return total
    return stacked.sum(dtype=torch.float64 if stacked.dtype == torch.float64 else torch.float32)


def _read(value: Scalar) -> Scalar:
    """A CPU tensor's value as a number (host memory: no synchronisation); a device tensor, detached."""
    # type() first: isinstance(x, torch.Tensor) costs ~0.1 us for a float, and timings are floats.
    if type(value) is not float and isinstance(value, torch.Tensor):
        # .item() needs no detach(), whose new tensor object costs ~0.7 us per loss.
        return value.item() if value.is_cpu else value.detach()
    return value


def _add(name: str, total: float | torch.Tensor | None, value: Scalar, count: int) -> float | torch.Tensor:
    """``total + value * count``, in place when ``total`` is a tensor (the hub's own)."""
    if isinstance(total, torch.Tensor):
        return total.add_(value, alpha=count)
    if isinstance(value, torch.Tensor):  # a new window, or a float one (from a checkpoint)
        own = _tensor_total(name, value, count)
        return own if total is None else own.add_(total)
    return value * count if total is None else total + value * count


def _tensor_total(name: str, value: torch.Tensor, count: int) -> torch.Tensor:
    """A new window total ``value * count``: a float32 (or float64) tensor of the hub's own."""
    if value.numel() != 1:
        raise ValueError(
            f"MessageHub.update({name!r}): expected a scalar, got a tensor of shape "
            f"{tuple(value.shape)}; publish a reduced value such as .mean()"
        )
    # At least float32: summing a bfloat16 loss in bfloat16 would lose the window's precision.
    dtype = torch.float64 if value.dtype == torch.float64 else torch.float32
    total = value.to(dtype=dtype, copy=True).reshape(())
    return total.mul_(count) if count != 1 else total

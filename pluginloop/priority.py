"""The nine priority levels and the one function that reads a priority."""

from __future__ import annotations

import enum

__all__ = ["Priority", "get_priority", "priority_name"]


class Priority(enum.IntEnum):
    """Hook priority: at every hook point a lower value runs earlier.

    Equal values run in registration order (first registered, first called).
    """

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


_NAMES = ", ".join(p.name for p in Priority)

PriorityLike = int | str | Priority


def get_priority(priority: PriorityLike) -> int:
    """Turn a ``Priority``, an int in 0..100 or a case-insensitive level name into its value.

    Raises ``ValueError`` (or ``TypeError``) listing the valid names otherwise.
    """
    if isinstance(priority, Priority):
        return priority.value
    if isinstance(priority, bool):  # bool is an int subclass; True is no priority
        raise TypeError(f"priority must be one of {_NAMES} or an int 0..100, not {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ValueError(
                f"priority {priority} is out of range: use an int in 0..100 or one of {_NAMES}"
            )
        return int(priority)  # a plain int, also for other IntEnums
    if isinstance(priority, str):
        try:
            return Priority[priority.strip().upper()].value
        except KeyError:
            raise ValueError(
                f"unknown priority {priority!r}: use one of {_NAMES} (case-insensitive) "
                "or an int in 0..100"
            ) from None
    raise TypeError(
        f"priority must be a Priority, one of {_NAMES} or an int 0..100, "
        f"not {type(priority).__name__} {priority!r}"
    )


def priority_name(value: int) -> str:
    """The level name of ``value`` (``'HIGH'``), or the number itself when it is between levels."""
    try:
        return Priority(value).name
    except ValueError:
        return str(value)

"""What LoggerHook writes with: its two buffered files, the line's formatting, closing them.

Kept apart from the hook (pluginloop.hooks.logger), which decides what a line says and when.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["JsonLines", "LogFile", "close_files", "format_scalar", "pop_present", "progress"]


def _due(flushed: float, flush_secs: float) -> bool:
    """Whether ``flush_secs`` passed since the ``time.monotonic()`` of the last flush."""
    return time.monotonic() - flushed >= flush_secs


class LogFile(logging.FileHandler):
    """The text log: a record from WARNING up is flushed at once, the others within ``flush_secs``.

    Records are written to the file's buffer in order; a flush (this record's, a later one's
    once ``flush_secs`` passed, or the hook's at epoch ends, checkpoints, val/test lines and
    the end of the run) writes out everything before it. Closing flushes too.
    """

    def __init__(self, path: Path, flush_secs: float) -> None:
        super().__init__(path, encoding="utf-8")
        self.flush_secs = flush_secs
        self.flushed = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is None:  # closed: the hook has detached it
            return
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING or _due(self.flushed, self.flush_secs):
                self.flush()
        except Exception:  # as logging's own handlers do: reported on stderr, never raised into the run
            self.handleError(record)

    def flush(self) -> None:
        super().flush()
        self.flushed = time.monotonic()


class JsonLines:
    """``scalars.jsonl``: a JSON object per line, flushed within ``flush_secs`` as the text log."""

    def __init__(self, path: Path, flush_secs: float) -> None:
        self._file = path.open("a", encoding="utf-8")
        self.flush_secs = flush_secs
        self.flushed = time.monotonic()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        if _due(self.flushed, self.flush_secs):
            self.flush()

    def flush(self) -> None:
        self._file.flush()
        self.flushed = time.monotonic()

    def close(self) -> None:
        self._file.close()


def progress(done: float, total: float | None) -> str:
    """``[ 20/100]``: right-aligned to the total's width; ``[20]`` when there is no finite total."""
    if total is None or not math.isfinite(total):
        return f"[{done}]"
    width = len(str(int(total)))
    return f"[{done:>{width}}/{int(total)}]"


def pop_present(values: dict[str, float], *names: str) -> list[tuple[str, float]]:
    """``(name, value)`` of those ``names`` present in ``values``, removed from it."""
    return [(name, values.pop(name)) for name in names if name in values]


def format_scalar(name: str, value: float) -> str:
    if name == "eta":  # h:mm:ss, hours unbounded (str(timedelta) costs a cold ~20 µs per line)
        minutes, seconds = divmod(int(value), 60)
        return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"
    if name == "memory":
        return str(int(value))
    if name == "lr" or (0 < abs(value) < 1e-3 and not name.endswith("time")):
        return f"{value:.4e}"
    return f"{value:.4f}"


def close_files(logger: logging.Logger, handler: logging.Handler, json_lines: JsonLines) -> None:
    logger.removeHandler(handler)
    handler.close()
    json_lines.close()

"""Helpers shared by the benchmark scripts: fresh worker processes, statistics, tables.

Every measurement runs in a fresh Python process (``script --worker JSON``) so that one
variant's imports, caches and allocator state cannot help or hurt another's. The worker
prints one ``RESULT {...}`` line; the parent interleaves variants and repeats.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT "

# One intra-op thread everywhere: the figures compare frameworks, not BLAS thread pools,
# and on a 2-core machine a second thread only adds scheduling noise.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# importable module -> how the table names it; checked with find_spec, never installed here.
PEERS = {"ignite": "Ignite", "lightning": "Lightning", "mmengine": "MMEngine", "accelerate": "Accelerate"}


def peer_installed(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    if module == "lightning":  # the old distribution name serves the same Trainer
        return find_spec("lightning") is not None or find_spec("pytorch_lightning") is not None
    return find_spec(module) is not None


def installed_plugins() -> list[str]:
    """Names of the installed pluginloop plugins (entry points), found in a separate process.

    Workers disable these by name: the Runner still scans for plugins (discovery is part of
    its construction time) but the figures are those of the default hooks alone.
    """
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({ep.name for ep in m.entry_points(group='pluginloop')})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names: list[str] = json.loads(out.stdout)
    return names


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def emit(result: dict[str, Any]) -> None:
    """Worker side: hand ``result`` to the parent (the last line of stdout)."""
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def worker_env() -> dict[str, str]:
    """The environment of every worker process.

    Bytecode caching is on even where PYTHONDONTWRITEBYTECODE is set: an installed package
    imports from compiled bytecode, and compiling pluginloop's sources on every import
    would triple its import time (pluginloop/__pycache__ is git-ignored).
    """
    env = {**os.environ, **THREAD_ENV, "PYTHONHASHSEED": "0"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_bytecode() -> None:
    """Import pluginloop once, so that the first measured worker finds its bytecode cached."""
    subprocess.run([sys.executable, "-c", "import pluginloop"], env=worker_env(), cwd=ROOT, check=True)


def run_worker(script: Path, config: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    """Run ``script --worker JSON`` in a fresh process and return what it emitted.

    Raises RuntimeError with the worker's stderr tail when it fails or emits nothing.
    """
    env = worker_env()
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"worker {config} exited with {proc.returncode}:\n{tail}")


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max) of ``values``."""
    return statistics.median(values), min(values), max(values)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median of ``values``: two order statistics.

    The k-th smallest and k-th largest value, with the largest k for which the median lies
    outside with probability at most ``1 - confidence`` (each side at most half of it, by the
    binomial distribution of how many values fall below the median); None when there are too
    few values for any such k (fewer than 6 at 95%).
    """
    ordered, n = sorted(values), len(values)
    tail, k = 0.0, 0
    while k < n // 2:
        tail += math.comb(n, k) / 2**n  # P(at most k values below the median)
        if tail > (1 - confidence) / 2:
            break
        k += 1
    return (ordered[k - 1], ordered[n - k]) if k else None


def fmt(value: float | None, digits: int = 1) -> str:
    """A table cell: fixed digits, ``-`` for a missing value."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown pipe table, columns padded so it also reads well in a terminal."""
    cells = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def machine_line() -> str:
    """The machine, software and date a table was measured on."""
    import pluggy
    import torch

    cores = os.cpu_count()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{datetime.date.today().isoformat()}, {cpu}, {cores} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} (1 thread), pluggy {pluggy.__version__}"
    )

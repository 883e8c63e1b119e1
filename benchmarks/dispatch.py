"""Cost of one hook call: pluginloop's plugin manager vs a plain pluggy PluginManager.

Both managers hold the same 10 plugins, each implementing all 16 hook points with no work
inside and the points' full argument lists. pluginloop keeps pluggy's own hook callers (only
re-sorting their impl lists at registration), so a call through ``runner.hook.<point>``
should cost what pluggy costs; ``fire`` is how the loop calls its per-iteration points
(positionally, results dropped; the other points through the caller). A plain Python loop
over the same 10 bound methods, called by keyword, is the reference. Each repeat is a fresh
process; inside it the four are timed interleaved, best of several rounds, on the thread's
CPU clock (time spent descheduled by other load is left out).

    python benchmarks/dispatch.py           # 3 fresh processes
    python benchmarks/dispatch.py --quick   # a smoke test
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import emit, fmt, run_worker, summary, table, warm_bytecode

SCRIPT = Path(__file__).resolve()
N_PLUGINS = 10
VARIANTS = ("pluggy", "pluginloop", "pluginloop fire", "python loop")


def _impl(argnames: tuple[str, ...]) -> Callable[..., None]:
    """A new no-op function taking ``self`` and exactly ``argnames`` (what pluggy passes)."""
    if argnames == ("runner",):

        def impl(self: Any, runner: Any) -> None:
            return None
    elif argnames == ("runner", "checkpoint"):

        def impl(self: Any, runner: Any, checkpoint: Any) -> None:  # type: ignore[misc]
            return None
    elif argnames == ("runner", "metrics"):

        def impl(self: Any, runner: Any, metrics: Any) -> None:  # type: ignore[misc]
            return None
    elif argnames == ("runner", "batch_idx", "data_batch"):

        def impl(self: Any, runner: Any, batch_idx: Any, data_batch: Any) -> None:  # type: ignore[misc]
            return None
    elif argnames == ("runner", "batch_idx", "data_batch", "outputs"):

        def impl(self: Any, runner: Any, batch_idx: Any, data_batch: Any, outputs: Any) -> None:  # type: ignore[misc]
            return None
    else:
        raise ValueError(f"no no-op template for arguments {argnames}")
    return impl


def worker(cfg: dict[str, Any]) -> None:
    """Time every point through the three dispatchers; emit µs per call."""
    import pluggy

    from pluginloop import Hook, hookspecs
    from pluginloop._manager import PluginManager
    from pluginloop.hookspecs import HOOK_POINTS, PROJECT_NAME

    plain = pluggy.PluginManager(PROJECT_NAME)
    plain.add_hookspecs(hookspecs)
    ours = PluginManager()  # the manager behind runner.hook
    argnames = {p: tuple(plain.hook.__dict__[p].spec.argnames) for p in HOOK_POINTS}
    marker = pluggy.HookimplMarker(PROJECT_NAME)
    # New function objects per class: pluggy's marker sets an attribute on the function.
    NoopHook = type("NoopHook", (Hook,), {p: _impl(a) for p, a in argnames.items()})
    PluggyNoop = type("PluggyNoop", (), {p: marker(_impl(a)) for p, a in argnames.items()})
    hooks = [NoopHook() for _ in range(N_PLUGINS)]
    for i in range(N_PLUGINS):
        ours.register(hooks[i], f"noop{i}")
        plain.register(PluggyNoop(), f"noop{i}")

    values = dict(runner=object(), batch_idx=0, data_batch=None, outputs=None, checkpoint={}, metrics={})
    number, rounds = cfg["number"], cfg["rounds"]
    out: dict[str, dict[str, float]] = {v: {} for v in VARIANTS}
    for point in HOOK_POINTS:
        kwargs = {a: values[a] for a in argnames[point]}
        assert len(ours.hook.__dict__[point].get_hookimpls()) == N_PLUGINS
        methods = [getattr(h, point) for h in hooks]

        def loop(methods: list[Callable[..., None]] = methods, kwargs: dict[str, Any] = kwargs) -> None:
            for method in methods:
                method(**kwargs)

        callers: dict[str, Callable[[], Any]] = {
            "pluggy": functools.partial(getattr(plain.hook, point), **kwargs),
            "pluginloop": functools.partial(getattr(ours.hook, point), **kwargs),
            # The loop's own call of its per-iteration points: positional, results dropped.
            "pluginloop fire": functools.partial(getattr(ours.hook, point).fire, *kwargs.values()),
            "python loop": loop,
        }
        best = {v: float("inf") for v in VARIANTS}
        for _ in range(rounds):  # interleaved: a burst of load hits all three alike
            for variant in VARIANTS:
                seconds = timeit.Timer(callers[variant], timer=time.thread_time).timeit(number=number)
                best[variant] = min(best[variant], seconds / number * 1e6)
        for variant in VARIANTS:
            out[variant][point] = best[variant]
    emit({"us": out})


def run(repeats: int | None, quick: bool) -> str:
    """Measure and return the printed report."""
    repeats = repeats or (1 if quick else 3)
    cfg = {"number": 200 if quick else 10000, "rounds": 2 if quick else 5}
    warm_bytecode()
    runs = [run_worker(SCRIPT, cfg)["us"] for _ in range(repeats)]
    points = list(runs[0]["pluggy"])
    headers = ["hook point", "pluggy µs", "pluginloop µs", "fire µs", "python loop µs", "pluginloop / pluggy"]
    rows = []
    for point in points:
        med = {v: summary([r[v][point] for r in runs])[0] for v in VARIANTS}
        rows.append(
            [
                point,
                fmt(med["pluggy"], 2),
                fmt(med["pluginloop"], 2),
                fmt(med["pluginloop fire"], 2),
                fmt(med["python loop"], 2),
                fmt(med["pluginloop"] / med["pluggy"], 2),
            ]
        )
    means = {v: [sum(r[v].values()) / len(points) for r in runs] for v in VARIANTS}
    mean = {v: summary(means[v]) for v in VARIANTS}
    rows.append(
        [
            "mean of the 16",
            fmt(mean["pluggy"][0], 2),
            fmt(mean["pluginloop"][0], 2),
            fmt(mean["pluginloop fire"][0], 2),
            fmt(mean["python loop"][0], 2),
            fmt(mean["pluginloop"][0] / mean["pluggy"][0], 2),
        ]
    )
    ratios = [p / g for p, g in zip(means["pluginloop"], means["pluggy"])]
    verdict = "holds" if summary(ratios)[0] <= 1.05 else "MISSED"
    notes = [
        f"{N_PLUGINS} no-op plugins on every point; median over {repeats} fresh process(es) of the best of "
        f"{cfg['rounds']} rounds x {cfg['number']} calls",
        "mean µs per call over the 16 points (median [min, max] over processes): "
        + "; ".join(f"{v} {m:.2f} [{lo:.2f}, {hi:.2f}]" for v, (m, lo, hi) in mean.items()),
        f"target pluginloop costs no more than pluggy per call (ratio <= 1.05, timing noise): "
        f"{summary(ratios)[0]:.3f} -> {verdict}",
    ]
    title = f"## dispatch: one hook call with {N_PLUGINS} plugins"
    return "\n".join([title, "", table(headers, rows), "", *notes])


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=None, help="fresh processes (default 3)")
    parser.add_argument("--quick", action="store_true", help="few calls, 1 process: a smoke test")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    print(run(args.repeats, args.quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())

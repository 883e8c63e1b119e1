"""Where pluginloop's per-iteration time goes: each piece of the training step, timed alone.

A diagnostic for whoever changes the loop or a per-iteration hook, not a comparison. It
builds a Runner with the default hooks on the tiny MLP, trains a few iterations so that
every hook has its state, then times (thread CPU time), best of several rounds:

- each piece the loop adds around the model: ``to_device``, the forward wrapper, the
  forward-context check, each hook point's dispatch;
- each hook implementation of ``before_train_iter`` / ``after_train_iter`` called alone
  (the optimizer's one with free stand-ins for backward and step, less the same three
  calls written by hand);

then prints cProfile's view of a short run, restricted to pluginloop's and pluggy's code.

    python benchmarks/hotpath.py            # about 2.5 minutes
    python benchmarks/hotpath.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any, cast

import torch
from _common import ROOT, fmt, installed_plugins, table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

LOG_INTERVAL = 50
EPOCH_ITERS = 8192  # the overhead benchmark's tiny-MLP epoch


def _best_us(fn: Callable[[], Any], number: int, rounds: int) -> float:
    # The thread's CPU time, not the wall clock: time spent descheduled (other processes on
    # a busy 2-core machine) does not count, which makes sub-µs differences measurable.
    timer = timeit.Timer(fn, timer=time.thread_time)
    return min(timer.repeat(number=number, repeat=rounds)) / number * 1e6


def _runner(work_dir: str, samples: int, epochs: int, hooks: dict[str, Any] | None = None) -> Any:
    import pluginloop
    from pluginloop.hooks import DEFAULT_HOOKS

    g = torch.Generator().manual_seed(0)
    loader = DataLoader(
        TensorDataset(torch.randn(samples, 32, generator=g), torch.randint(0, 10, (samples,), generator=g)),
        batch_size=32,
        shuffle=True,
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    default_hooks: dict[str, Any] = {}
    if "logger" in DEFAULT_HOOKS:
        default_hooks["logger"] = {**DEFAULT_HOOKS["logger"], "interval": LOG_INTERVAL}
    default_hooks.update(hooks or {})
    return pluginloop.Runner(
        model,
        work_dir=work_dir,
        train_dataloader=loader,
        optimizer=dict(type="SGD", lr=0.01),
        loss_fn=nn.CrossEntropyLoss(),
        max_epochs=epochs,
        default_hooks=default_hooks,
        seed=0,
        device="cpu",
        launcher="none",
        disable_plugins=installed_plugins(),  # scanned, none loaded: the default hooks alone
    )


def components(runner: Any, number: int, rounds: int) -> list[list[str]]:
    """``[piece, µs per iteration, note]`` rows."""
    from pluginloop._data import forward, to_device

    device = runner.device
    inputs, targets = next(iter(runner.train_dataloader))
    batch = [inputs, targets]
    model, loss_fn = runner.wrapped_model, runner.loss_fn
    runner.iter, runner.epoch = 10, 0  # mid-epoch, an iteration that writes no log line
    rows = []

    def add(piece: str, us: float, note: str = "") -> None:
        rows.append([piece, fmt(us, 2), note])

    ours = _best_us(lambda: to_device(batch, device), number, rounds)
    theirs = _best_us(lambda: (inputs.to(device), targets.to(device)), number, rounds)
    add("to_device(batch)", ours - theirs, f"{ours:.2f} vs {theirs:.2f} for x.to(), y.to()")

    def ident(x: Any) -> Any:  # a free model and loss: what is left is the wrapper's own cost
        return x

    def pick(p: Any, t: Any) -> Any:
        return p

    ours = _best_us(lambda: forward(cast(Any, ident), batch, pick), number, rounds)
    theirs = _best_us(lambda: pick(ident(inputs), targets), number, rounds)
    add("forward() wrapper", ours - theirs, "outputs dict and batch checks, model and loss excluded")

    kept_loss, runner.loss_fn = runner.loss_fn, pick
    try:
        wrapped = _best_us(lambda: runner._forward(cast(Any, ident), batch), number, rounds)
    finally:
        runner.loss_fn = kept_loss
    add(
        "forward contexts",
        wrapped - ours,
        f"Runner._forward around forward(), {len(runner.forward_contexts)} context(s) installed",
    )

    outputs = forward(model, batch, loss_fn)
    for point, kwargs in (
        ("before_train_iter", dict(runner=runner, batch_idx=10, data_batch=batch)),
        ("after_train_iter", dict(runner=runner, batch_idx=10, data_batch=batch, outputs=outputs)),
    ):
        caller = getattr(runner.hook, point)
        impls = list(reversed(caller.get_hookimpls()))
        total_impls = 0.0
        for impl in impls:
            args = {a: kwargs[a] for a in impl.argnames}
            if impl.plugin_name.startswith("OptimizerHook"):
                us = _optimizer_overhead(impl.function, args, runner, number, rounds)
                add(
                    f"{point}: {impl.plugin_name}",
                    us,
                    "its Python around backward + step, beyond the hand loop's",
                )
                continue
            us = _best_us(functools.partial(impl.function, **args), number, rounds)
            total_impls += us
            add(f"{point}: {impl.plugin_name}", us, "its own work")
        if not any(i.plugin_name.startswith("OptimizerHook") for i in impls):
            # as the loop calls it: fired
            whole = _best_us(functools.partial(caller.fire, *kwargs.values()), number, rounds)
            add(f"{point}: dispatch", whole - total_impls, f"the planned caller around {len(impls)} impl(s)")
        else:
            add(
                f"{point}: dispatch",
                _dispatch_estimate(len(impls), number, rounds),
                f"the planned caller around {len(impls)} impl(s), measured with no-op impls",
            )
    line_us = _log_line(runner, batch, max(number // 10, 20), rounds)
    add(
        "log line, amortized",
        line_us / LOG_INTERVAL,
        f"{line_us:.0f} µs per line, every {LOG_INTERVAL} iterations",
    )
    save_ms = _save_ms(runner, 3 if number < 1000 else 5)
    add(
        "checkpoint save, amortized",
        save_ms * 1e3 / EPOCH_ITERS,
        f"{save_ms:.1f} ms per save (wall clock), once per {EPOCH_ITERS}-iteration epoch",
    )
    runner.message_hub.means()  # drop what the timing loops published
    total = sum(float(r[1]) for r in rows)
    rows.append(["sum", fmt(total, 2), "what pluginloop adds per iteration, by these pieces"])
    return rows


def _log_line(runner: Any, batch: Any, number: int, rounds: int) -> float:
    """CPU µs of a training iteration's hooks that write a log line, beyond one that does not."""
    free = _FreeStep()
    kept, runner.optimizer = runner.optimizer, free
    hook, loss = runner.hook, torch.tensor(1.0, requires_grad=True)
    hook.before_run(runner=runner)  # the logger opens its text log again
    try:

        def iteration(batch_idx: int) -> None:
            hook.before_train_iter.fire(runner, batch_idx, batch)
            hook.after_train_iter.fire(runner, batch_idx, batch, {"loss": loss})

        quiet = _best_us(lambda: iteration(LOG_INTERVAL - 2), number, rounds)
        loud = _best_us(lambda: iteration(LOG_INTERVAL - 1), number, rounds)
    finally:
        hook.after_run(runner=runner)
        runner.optimizer = kept
    return loud - quiet


def _save_ms(runner: Any, saves: int) -> float:
    """Median wall-clock ms of ``runner.save_checkpoint`` (the write, fsync and pointer included)."""
    import statistics
    import time

    times = []
    for i in range(saves):
        start = time.perf_counter()
        runner.save_checkpoint(f"hotpath_{i}.pth")
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class _FreeStep:
    """Stands in for the loss and the optimizer: backward, step and zero_grad do nothing.

    What remains of OptimizerHook.after_train_iter is its own Python, compared with the
    same three calls written by hand.
    """

    param_groups: list[dict[str, Any]] = [{"params": [], "lr": 0.01}]

    def backward(self) -> None:
        return None

    def step(self) -> None:
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None


def _optimizer_overhead(
    fn: Callable[..., Any], args: dict[str, Any], runner: Any, number: int, rounds: int
) -> float:
    free = _FreeStep()
    kept, runner.optimizer = runner.optimizer, free
    try:
        hook = _best_us(lambda: fn(**{**args, "outputs": {"loss": free}}), number, rounds)

        def hand() -> None:
            outputs = {"loss": free}
            free.zero_grad(set_to_none=True)
            outputs["loss"].backward()
            free.step()

        return hook - _best_us(hand, number, rounds)
    finally:
        runner.optimizer = kept


def _dispatch_estimate(n_impls: int, number: int, rounds: int) -> float:
    """Cost of the planned caller around ``n_impls`` no-op after_train_iter impls, called as the loop does."""
    from pluginloop import Hook
    from pluginloop._manager import PluginManager

    class Noop(Hook):
        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            return None

    pm = PluginManager()
    hooks = [Noop() for _ in range(n_impls)]
    for i, hook in enumerate(hooks):
        pm.register(hook, f"noop{i}")
    kwargs: dict[str, Any] = dict(runner=None, batch_idx=0, data_batch=None, outputs=None)
    whole = _best_us(functools.partial(pm.hook.after_train_iter.fire, *kwargs.values()), number, rounds)

    def plain_calls() -> None:
        for hook in hooks:
            hook.after_train_iter(*kwargs.values())

    calls = _best_us(plain_calls, number, rounds)
    return whole - calls


def ablation(work_dir: str, samples: int, rounds: int) -> list[list[str]]:
    """CPU µs per iteration of one epoch in a real run: the default hooks, each left out in turn.

    One process, a fresh Runner per run, variants interleaved, median (and interquartile
    range) of ``rounds`` paired differences with the hand-written loop (same model and data):
    one round's difference strays by several µs, so it takes tens of rounds to see a 1 µs
    change. Python that costs well
    under a microsecond in a tight loop costs several here, between torch's work: this is
    the figure that adds up to what the overhead benchmark measures.
    """
    from pluginloop.hooks import DEFAULT_HOOKS

    keys = [k for k in DEFAULT_HOOKS if k != "checkpoint"]
    variants: dict[str, dict[str, Any]] = {
        "default hooks (no checkpoint)": {"checkpoint": None},
        **{f"  without {k}": {"checkpoint": None, k: None} for k in keys if k != "optimizer"},
        "optimizer hook only": {k: None for k in DEFAULT_HOOKS if k != "optimizer"},
        "default, no log lines": {
            "checkpoint": None,
            "logger": {**DEFAULT_HOOKS["logger"], "interval": 10**9},  # only the run's last line
        },
    }
    times: dict[str, list[float]] = {name: [] for name in ["hand-written", *variants]}

    def hand_written(runner: Any) -> float:
        model, loader, device = runner.model, runner.train_dataloader, runner.device
        optimizer, loss_fn, n = torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(), 0
        start = time.thread_time()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += 1
        return (time.thread_time() - start) / n * 1e6

    for r in range(rounds):
        order = list(times)
        random.Random(r).shuffle(order)  # a new order each round: no variant always goes first
        for name in order:
            # The same seeded model and data each time; the hand-written loop uses a runner's.
            runner = _runner(work_dir, samples, epochs=1, hooks=variants.get(name, {}))
            if name == "hand-written":
                times[name].append(hand_written(runner))
                continue
            start = time.thread_time()
            runner.train()
            times[name].append((time.thread_time() - start) / runner.iter * 1e6)
    hand = times["hand-written"]
    rows = [["hand-written", fmt(statistics.median(hand), 1), "-", "-"]]
    for name in variants:
        paired = [t - h for t, h in zip(times[name], hand)]
        spread = "-"
        if len(paired) > 1:  # how far one round's difference strays: the noise a median averages out
            low, _, high = statistics.quantiles(paired, n=4)
            spread = f"{low:.1f} .. {high:.1f}"
        rows.append([name, fmt(statistics.median(times[name]), 1), fmt(statistics.median(paired), 1), spread])
    return rows


def line_aftermath(work_dir: str, samples: int) -> list[list[str]]:
    """CPU µs of each training iteration by its distance from the last log line, in a real run.

    A log line costs more than its own code: the iterations after it run slower too, while
    torch's code and data come back into the caches that the line's Python displaced.
    """
    import pluginloop

    stamps: list[int] = []

    class Stamp(pluginloop.Hook):
        priority = pluginloop.Priority.LOWEST  # after every other hook of the iteration

        def after_train_iter(
            self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
        ) -> None:
            stamps.append(time.thread_time_ns())

    runner = _runner(work_dir, samples, epochs=1)
    runner.register_hook(Stamp())
    runner.train()
    by_offset: dict[int, list[float]] = {}
    for batch_idx in range(1, len(stamps)):  # the iteration that ends at stamps[batch_idx]
        took = (stamps[batch_idx] - stamps[batch_idx - 1]) / 1e3
        by_offset.setdefault(batch_idx % LOG_INTERVAL, []).append(took)
    quiet = statistics.median([us for off in range(20, LOG_INTERVAL - 1) for us in by_offset[off]])
    rows, excess = [], 0.0
    shown = [(LOG_INTERVAL - 1, "the one that writes the line")]
    shown += [(k, f"{k + 1} after it") for k in range(10)]
    for offset, label in shown:
        median = statistics.median(by_offset[offset])
        excess += median - quiet
        rows.append([label, fmt(median, 1), fmt(median - quiet, 1)])
    rows.append([f"quiet iterations (21 to {LOG_INTERVAL - 1} after it)", fmt(quiet, 1), "-"])
    per_iteration = fmt(excess / LOG_INTERVAL, 2)
    rows.append([f"a line in all, per iteration at interval {LOG_INTERVAL}", per_iteration, fmt(excess, 0)])
    return rows


def profile(runner: Any, top: int) -> str:
    """cProfile of ``runner.train()``, pluginloop's and pluggy's functions by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    runner.train()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(r"pluginloop|pluggy", top)
    lines = out.getvalue().splitlines()
    start = next(i for i, ln in enumerate(lines) if "ncalls" in ln)
    return "\n".join(ln.replace(str(ROOT) + "/", "") for ln in lines[start - 2 :] if ln.strip())


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few calls: a smoke test, not figures")
    parser.add_argument("--top", type=int, default=20, help="profile lines to print")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    number, rounds = (50, 2) if args.quick else (5000, 5)
    (ROOT / "work_dirs").mkdir(exist_ok=True)
    samples = 32 * (64 if args.quick else 2048)
    ablation_iters, ablation_rounds = (64, 1) if args.quick else (1024, 40)
    # pluginloop's console log lines go to the current sys.stdout: away while measuring (they
    # then cost a little less than on a terminal), so that this prints only tables.
    with (
        tempfile.TemporaryDirectory(dir=ROOT / "work_dirs") as work_dir,
        open(os.devnull, "w") as devnull,
        contextlib.redirect_stdout(devnull),
    ):
        runner = _runner(work_dir, samples, epochs=1)
        runner.max_iters = 20
        runner.train()  # every hook initialised (before_run, the first epoch)
        rows = components(runner, number, rounds)
        ablated = ablation(work_dir, 32 * ablation_iters, ablation_rounds)
        aftermath = line_aftermath(work_dir, samples if args.quick else 32 * 8192)
        profiled = _runner(work_dir, samples, epochs=1)
        profiled_text = profile(profiled, args.top)
    print("## hot path: CPU µs per training iteration, each piece alone (tiny MLP, default hooks)\n")
    print(table(["piece", "µs", "note"], rows))
    print(
        f"\n## in a real run: CPU µs per iteration, {ablation_iters} iterations, each default hook left out, "
        f"{ablation_rounds} round(s)\n"
    )
    print(table(["variant", "µs/iter", "over hand-written", "middle half of the rounds"], ablated))
    print("\n## what a log line costs: CPU µs of a training iteration by its distance from the last line\n")
    print(table(["iteration", "median µs", "over quiet ones"], aftermath))
    print(
        f"\n## cProfile of one epoch ({samples // 32} iterations), pluginloop and pluggy only "
        "(cProfile inflates small functions: compare, do not add)\n"
    )
    print(profiled_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

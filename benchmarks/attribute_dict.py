"""What registering a plugin does to its ``self.x`` on CPython 3.11-3.13, and pluginloop's fix.

pluggy reads a plugin instance's ``__dict__`` when it registers it (``dir()``, its static
attribute lookup). On CPython 3.11 to 3.13 that leaves the instance a dict sharing its keys
with the class, on which the interpreter's specialized attribute reads and writes miss on
every use; pluginloop's manager then gives the instance a copied, ordinary dict
(``pluginloop._manager._plain_attribute_dict``). Each mode runs in a fresh process: the
specialization state of one must not carry into the next.

    python benchmarks/attribute_dict.py          # three lines, a few seconds
"""

from __future__ import annotations

import subprocess
import sys
import timeit

MODES = {
    "fresh": "never registered",
    "read": "after dir(): as pluggy's register() leaves it",
    "copied": "then given a copy of its dict: as pluginloop's manager leaves it",
}


class Timer:
    """The attributes and per-iteration work of IterTimerHook.after_train_iter."""

    def __init__(self) -> None:
        self.last = self.data_sum = self.time_sum = self.fetched = 0.0
        self.pending = self.done = 0

    def after_iter(self) -> None:
        now = 1.0
        self.data_sum += self.fetched - self.last
        self.time_sum += now - self.last
        self.last = now
        self.pending += 1
        self.done = self.pending + 1


def measure(mode: str) -> float:
    """ns per ``after_iter`` call, best of 7 rounds of 200,000, on an instance in ``mode``."""
    timer = Timer()
    if mode != "fresh":
        dir(timer)
    if mode == "copied":
        timer.__dict__ = dict(timer.__dict__)
    return min(timeit.repeat(timer.after_iter, number=200_000, repeat=7)) / 200_000 * 1e9


def main() -> int:
    """Print one line per mode, each measured in a fresh process."""
    if len(sys.argv) > 2 and sys.argv[1] == "--mode":
        print(f"{measure(sys.argv[2]):.0f}")
        return 0
    version = sys.version.split()[0]
    print(f"Python {version}: ns per call of a method with six attribute reads and five writes")
    for mode, label in MODES.items():
        command = [sys.executable, __file__, "--mode", mode]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        print(f"{mode:>6}: {out.stdout.strip():>4} ns  ({label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

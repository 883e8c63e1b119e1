"""The whole comparison in one command: overhead (tiny and medium MLP), then hook dispatch.

    python benchmarks/run_all.py                 # about 4-5 minutes on 2 CPU cores
    python benchmarks/run_all.py --quick         # seconds: checks that everything runs
    python benchmarks/run_all.py --device cuda   # on a GPU machine: timings and sync counts

The output is Markdown: paste it into docs/performance.md as it is.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import dispatch
import overhead
from _common import machine_line


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark and print their tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, not figures")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda for the overhead benchmark")
    parser.add_argument("--no-peers", action="store_true", help="leave out installed peer frameworks")
    parser.add_argument(
        "--repeats", type=int, default=None, help="fresh processes per variant (default 5 tiny, 3 medium)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    command = "python benchmarks/run_all.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    print(f"# pluginloop benchmarks\n\n`{command}`: {machine_line()}\n", flush=True)
    sections: list[Callable[[], str]] = [
        lambda: overhead.run(False, args.repeats, args.device, args.quick, not args.no_peers),
        lambda: overhead.run(True, args.repeats, args.device, args.quick, False),
        lambda: dispatch.run(None, args.quick),
    ]
    for section in sections:
        print(section() + "\n", flush=True)
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``pluginloop`` command (also ``python -m pluginloop``): train, hooks, plugins.

Exit status: 0 success; 1 the training failed (the traceback is printed); 2 a usage or
configuration error (its message is printed, naming the file, the key path and the fix,
without a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pluginloop import __version__
from pluginloop._summary import format_plan, plural
from pluginloop.config import build_runner, parse_options
from pluginloop.errors import CheckpointError, ConfigError, DistributedError, PluginLoadError
from pluginloop.plugins import format_plugins, list_plugins
from pluginloop.runner import Runner

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_CONFIG_HELP = (
    "a Python file whose top-level names are Runner arguments "
    "(model = ..., train_dataloader = ..., max_epochs = ..., default_hooks = dict(...))"
)
_OPTIONS_HELP = (
    "override config values by key path, e.g. max_epochs=3 optimizer.lr=0.1 "
    "default_hooks.checkpoint.interval=2 custom_hooks[0].interval=10; values are Python "
    "literals (3, 0.1, True, None, [8, 11], 'text'), anything else is a string"
)
_PLUGIN_HELP = "disable the installed plugin NAME for this run (repeatable; see `pluginloop plugins`)"


def _disable(value: str) -> str:
    """``-p no:NAME`` -> ``NAME`` (argparse reports anything else as a usage error)."""
    name = value[3:] if value.startswith("no:") else ""
    if not name:
        raise argparse.ArgumentTypeError(f"expected no:NAME (to disable the plugin NAME), got {value!r}")
    return name


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG.py", help=_CONFIG_HELP)
    parser.add_argument("--cfg-options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help=_OPTIONS_HELP)
    parser.add_argument("-p", dest="disable", action="append", type=_disable, default=[], metavar="no:NAME",
                        help=_PLUGIN_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pluginloop`` and its three subcommands."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pluginloop",
        description="A PyTorch training loop in which every customization is a plugin.",
        epilog="exit status: 0 success, 1 training failed, 2 usage or configuration error\n"
               "`pluginloop COMMAND --help` describes each command.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"pluginloop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", formatter_class=formatter,
        help="train (validate, test) the run a config file describes",
        description="Build the Runner a config file describes and run it: train, validating every "
                    "val_interval epochs and after the last, then test when a test loader is given.\n"
                    "The run's shape and hook plan are printed first; mistakes in the config fail "
                    "before any data is read.",
        epilog="examples:\n"
               "  pluginloop train examples/configs/digits.py\n"
               "  pluginloop train examples/configs/digits.py --cfg-options max_epochs=3 optimizer.lr=0.01\n"
               "  pluginloop train examples/configs/digits.py --resume            # latest checkpoint\n"
               "  pluginloop train examples/configs/digits.py --resume work_dirs/digits/epoch_5.pth\n"
               "  pluginloop train examples/configs/digits.py -p no:visualizer\n"
               "exit status: 0 success, 1 training failed, 2 usage or configuration error",
    )
    _add_config_arguments(train)
    train.add_argument("--work-dir", metavar="DIR",
                       help="checkpoints and logs go here (default: the config's work_dir, "
                            "else work_dirs/<config name>)")
    train.add_argument("--resume", nargs="?", const=True, default=None, metavar="PATH",
                       help="resume from PATH, or without PATH from the newest checkpoint in the work dir")
    train.set_defaults(handler=_train)

    hooks = commands.add_parser(
        "hooks", formatter_class=formatter,
        help="show the hook plan of a config: per hook point, the hooks in call order",
        description="Build the Runner a config file describes (reading no data, training nothing) and "
                    "print its execution plan: for each of the 16 hook points, the hooks in call "
                    "order with their priority name and value and where each came from (built-in "
                    "default, installed plugin with distribution and version, config key, code).",
        epilog="examples:\n"
               "  pluginloop hooks examples/configs/digits.py\n"
               "  pluginloop hooks examples/configs/digits.py --cfg-options default_hooks.logger=None\n"
               "  pluginloop hooks examples/configs/digits.py --json\n"
               "exit status: 0 success, 2 usage or configuration error",
    )
    _add_config_arguments(hooks)
    hooks.add_argument("--json", action="store_true", help="print the plan as JSON, for machines")
    hooks.set_defaults(handler=_hooks)

    plugins = commands.add_parser(
        "plugins", formatter_class=formatter,
        help="list the installed plugins (entry-point group 'pluginloop') and their status",
        description="List every installed pluginloop plugin: name, distribution and version, object, "
                    "priority, the hook points it implements, and its status (loaded; disabled and by "
                    "what; failed and why). PLUGINLOOP_PLUGINS and PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD "
                    "are taken into account.",
        epilog="examples:\n"
               "  pluginloop plugins\n"
               "  pluginloop plugins --json\n"
               "  pluginloop plugins -p no:visualizer\n"
               "exit status: 0 success, 2 usage error",
    )
    plugins.add_argument("--json", action="store_true", help="print a JSON array, for machines")
    plugins.add_argument("-p", dest="disable", action="append", type=_disable, default=[], metavar="no:NAME",
                         help="show NAME as disabled, as `pluginloop train -p no:NAME` would run")
    plugins.set_defaults(handler=_plugins)
    return parser


def _build(args: argparse.Namespace, **overrides: Any) -> Runner:
    if args.disable:
        overrides["disable_plugins"] = list(args.disable)
    return build_runner(args.config, parse_options(args.cfg_options), **overrides)


def _train(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.work_dir is not None:
        overrides["work_dir"] = args.work_dir
    if args.resume is not None:
        if args.resume is not True and not Path(args.resume).is_file():
            raise ConfigError(f"--resume {args.resume}: no such checkpoint file "
                              "(give no PATH to resume from the newest checkpoint in the work dir)")
        overrides["resume"] = args.resume
    runner = _build(args, **overrides)
    try:
        runner.run()
    except (CheckpointError, DistributedError) as exc:  # their messages say where and what to do
        print(f"pluginloop train: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        traceback.print_exc()
        print(f"pluginloop train: training failed; resume from the last checkpoint with "
              f"`pluginloop train {args.config} --work-dir {runner.work_dir} --resume`", file=sys.stderr)
        return EXIT_FAILED
    pointer = runner.work_dir / "last_checkpoint"
    last = pointer.read_text().strip() if pointer.is_file() else "none"
    for phase in ("val", "test"):  # LoggerHook publishes evaluation metrics as val/<name>, test/<name>
        metrics = _metrics(runner, phase)
        if metrics:
            print(f"pluginloop train: last {phase}: {metrics}")
    length = f"{plural(runner.epoch, 'epoch')} ({plural(runner.iter, 'iteration')})"
    print(f"pluginloop train: done after {length}; work dir {runner.work_dir}, last checkpoint {last}")
    return EXIT_OK


def _metrics(runner: Runner, phase: str) -> str:
    """``'acc 0.9722  loss 0.1071'`` from the message hub's latest ``<phase>/<name>`` values."""
    timing = {"time", "data_time", "eta"}  # IterTimerHook's, not metrics
    values = {key.partition("/")[2]: runner.message_hub.get(key) for key in runner.message_hub.latest
              if key.startswith(f"{phase}/") and key.partition("/")[2] not in timing}
    return "  ".join(f"{name} {value:.4f}" for name, value in sorted(values.items()) if value is not None)


def _hooks(args: argparse.Namespace) -> int:
    runner = _build(args)
    plan = runner.hook_plan()
    active = {entry["name"] for entries in plan.values() for entry in entries}
    # e.g. EmptyCacheHook without CUDA: registered, but it registers no point.
    idle = [name for name, _ in runner._pm.list_name_plugin() if name not in active]
    if args.json:
        print(json.dumps({"config": args.config, "plan": plan, "idle": idle}, indent=2))
    else:
        described = [f"{name} ({runner._sources.get(name, 'installed plugin')})" for name in idle]
        print(format_plan(plan, title=f"Hook plan of {args.config}", idle=described))
    return EXIT_OK


def _plugins(args: argparse.Namespace) -> int:
    print(format_plugins(list_plugins(disable=args.disable), as_json=args.json))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pluginloop`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except (ConfigError, PluginLoadError) as exc:
        print(f"pluginloop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"pluginloop {args.command}: interrupted", file=sys.stderr)
        return 130
    return status

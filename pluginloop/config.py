"""Config files: a Python file whose top-level names are ``Runner`` arguments.

A config is plain Python, executed as it is (``runpy``), so objects may be built in it
directly: ``model = Net()``, ``train_dataloader = DataLoader(...)``. Its top-level names are
the Runner's arguments, except names starting with ``_`` (helpers), imported names and
modules, and classes or functions it defines (unless named like an argument, e.g.
``def loss_fn(...)``)::

    # my_config.py
    from torch import nn
    model = nn.Linear(4, 1)
    max_epochs = 3
    default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1))

Every mistake is a :class:`~pluginloop.errors.ConfigError` naming the file, the key path and
the closest valid name. A misspelled top-level name (``max_epoch``) is found in the file's
syntax tree before the file runs, so before it can load any data.
"""

from __future__ import annotations

import ast
import copy
import difflib
import inspect
import os
import runpy
import types
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence, Sequence
from pathlib import Path
from typing import Any

from pluginloop.errors import ConfigError
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.runner import Runner

__all__ = ["apply_options", "build_runner", "load_config", "parse_options", "runner_arguments"]

# The name the config runs under: not "__main__", so its `if __name__ == "__main__":` blocks stay off.
_RUN_NAME = "__pluginloop_config__"


def runner_arguments() -> list[str]:
    """The names a config may define: the ``Runner`` constructor's arguments, in order."""
    return [name for name in inspect.signature(Runner).parameters if name != "self"]


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _error(message: str, key: str | None) -> ConfigError:
    """A ConfigError whose message is ``message`` as written (the place already in it) and ``key`` set."""
    error = ConfigError(message)
    error.key = key
    return error


def _in_file(path: str | os.PathLike[str], exc: ConfigError) -> ConfigError:
    """``exc`` with the config file's name in front, its key path kept."""
    return _error(f"{os.fspath(path)}: {exc}", exc.key)


class _TopLevel(ast.NodeVisitor):
    """The names a module binds at top level, by kind: imports, defs/classes, the rest.

    Walks into ``if`` / ``try`` / ``with`` / ``for`` blocks (still top level) but not into
    function or class bodies.
    """

    def __init__(self) -> None:
        self.imported: set[str] = set()
        self.defined: set[str] = set()
        self.assigned: dict[str, int] = {}  # name -> line of its first assignment
        self.star_import = False

    def visit_Import(self, node: ast.Import) -> None:
        self.imported.update((a.asname or a.name).split(".")[0] for a in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.star_import = True
            else:
                self.imported.add(alias.asname or alias.name)

    def _define(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.defined.add(node.name)  # and do not descend: names inside are not top level

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _define

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.assigned.setdefault(node.id, node.lineno)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        pass  # its arguments are not top-level names

    def _skip(self, node: ast.AST) -> None:
        pass  # comprehension variables are local to the comprehension

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _skip


def _parse(path: Path) -> _TopLevel:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}, line {exc.lineno}: invalid Python: {exc.msg}") from None
    names = _TopLevel()
    names.visit(tree)
    return names


def _check_names(path: Path, names: Iterable[str], lines: Mapping[str, int]) -> None:
    """Fail on the first top-level name that is not a Runner argument, with the closest one."""
    valid = runner_arguments()
    for name in names:
        if name not in valid:
            where = f"{path}, line {lines[name]}" if name in lines else str(path)
            suggestion = _suggest(name, valid)
            listing = "" if suggestion else f"; the Runner arguments are {', '.join(valid)}"
            raise _error(
                f"{where}: {name}: not a Runner argument{suggestion} (the top-level names of a config "
                f"are Runner arguments{listing}; start a helper's name with '_', e.g. '_{name}', "
                "to keep it out)",
                name,
            )


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Execute the config file ``path`` and return its Runner arguments as a dict.

    Raises ConfigError naming the file (and line) for a missing file, invalid Python, a
    top-level name that is not a Runner argument, or an exception raised while it runs.
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: no such config file")
    if file.suffix != ".py":
        raise ConfigError(f"{file}: a config is a Python file ending in .py")
    names = _parse(file)
    # Checked before the file runs, so that a typo costs nothing: no data is loaded yet.
    plain = [n for n in names.assigned if not n.startswith("_") and n not in names.imported | names.defined]
    _check_names(file, plain, names.assigned)
    try:
        namespace = runpy.run_path(str(file), run_name=_RUN_NAME)
    except Exception as exc:
        raise ConfigError(f"{_config_line(file, exc)}: running the config failed: "
                          f"{type(exc).__name__}: {exc}") from exc
    valid = set(runner_arguments())
    config = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType) or name in names.imported:
            continue
        if name in names.defined and name not in valid:
            continue  # a helper class or function defined in the config
        if names.star_import and name not in names.assigned and name not in names.defined:
            continue  # brought in by `from ... import *`
        config[name] = value
    _check_names(file, config, names.assigned)  # names bound in ways the syntax tree did not show
    return config


def _config_line(file: Path, exc: BaseException) -> str:
    """``file, line N`` of the innermost frame of ``exc`` inside the config file."""
    line, tb = None, exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == file.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{file}, line {line}" if line is not None else str(file)


def parse_options(items: Sequence[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=x']`` -> ``{'a.b': 1, 'c': 'x'}``; values are Python literals, else strings.

    ``true`` / ``false`` / ``none`` / ``null`` (any case) are read as True / False / None too.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--cfg-options {item!r}: expected KEY=VALUE, e.g. max_epochs=3 "
                              "or default_hooks.checkpoint.interval=2")
        options[key.strip()] = _literal(text.strip())
    return options


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        words = {"true": True, "false": False, "none": None, "null": None}
        return words.get(text.lower(), text)


def _split_key(key: str) -> list[str | int]:
    """A key path as parts: ``'custom_hooks[0].interval'`` -> ``['custom_hooks', 0, 'interval']``.

    ``custom_hooks.0.interval`` is the same path; integer parts index lists.
    """
    parts: list[str | int] = []
    for part in key.replace("[", ".").replace("]", "").split("."):
        if not part:
            raise _error(f"--cfg-options {key}: empty part in the key path", key)
        parts.append(int(part) if part.isdigit() else part)
    return parts


def apply_options(config: MutableMapping[str, Any], options: Mapping[str, Any]) -> None:
    """Set each ``key.path=value`` of ``options`` in ``config``, creating nested dicts as needed.

    ``default_hooks.<name>.<arg>`` starts from the built-in default of ``<name>`` when the
    config does not configure it, so ``default_hooks.checkpoint.interval=2`` keeps its type.
    Dicts on the way are copied, not changed in place.
    """
    valid = runner_arguments()
    for key, value in options.items():
        parts = _split_key(key)
        top = parts[0]
        if not isinstance(top, str) or top not in valid:
            raise _error(f"--cfg-options {key}: {top!r} is not a Runner argument"
                              f"{_suggest(str(top), valid)}", str(top))
        if len(parts) == 1:
            config[top] = value
            continue
        node = config[top] = _copy_node(config.get(top), key, top)
        for depth, part in enumerate(parts[1:-1], start=1):
            where = ".".join(str(p) for p in parts[: depth + 1])
            child = _child(node, part, key, where)
            if child is None and top == "default_hooks" and depth == 1:
                child = _default_hook(str(part), key)
            child = _copy_node(child, key, where)
            _set(node, part, child, key, where)
            node = child
        _set(node, parts[-1], value, key, key)


def _copy_node(node: Any, key: str, where: str) -> Any:
    if node is None:
        return {}
    if isinstance(node, Mapping):
        return dict(node)
    if isinstance(node, (list, tuple)):
        return list(node)
    raise _error(
        f"--cfg-options {key}: {where} is a {type(node).__name__} object built in the config, "
        "not a dict or list; change it in the config file, or write it there as dict(type=..., ...)",
        where,
    )


def _child(node: Any, part: str | int, key: str, where: str) -> Any:
    if isinstance(node, MutableSequence):
        if not isinstance(part, int) or not 0 <= part < len(node):
            raise _error(f"--cfg-options {key}: {where}: index out of range "
                              f"(the list has {len(node)} entries)", where)
        return copy.copy(node[part])
    return node.get(part)


def _default_hook(name: str, key: str) -> dict[str, Any]:
    if name not in DEFAULT_HOOKS:
        raise _error(f"--cfg-options {key}: there is no default hook {name!r}{_suggest(name, DEFAULT_HOOKS)} "
                          f"(default hooks: {', '.join(DEFAULT_HOOKS)})", f"default_hooks.{name}")
    return dict(DEFAULT_HOOKS[name])


def _set(node: Any, part: str | int, value: Any, key: str, where: str) -> None:
    if isinstance(node, MutableSequence):
        _child(node, part, key, where)  # range check
        node[int(part)] = value
    else:
        node[part] = value


def _check_default_hook_keys(path: str | os.PathLike[str], default_hooks: Any) -> None:
    """Refuse a ``default_hooks`` key that is a near miss of a default one (``chekpoint``).

    A new key adds a hook of its own, which is allowed; a misspelled one would silently run a
    second CheckpointHook beside the default.
    """
    if not isinstance(default_hooks, Mapping):
        return  # the Runner reports the type
    for key in default_hooks:
        if key not in DEFAULT_HOOKS and difflib.get_close_matches(key, list(DEFAULT_HOOKS), n=1, cutoff=0.75):
            raise _error(
                f"{os.fspath(path)}: default_hooks.{key}: not a default hook{_suggest(key, DEFAULT_HOOKS)} "
                f"(default hooks: {', '.join(DEFAULT_HOOKS)}; add hooks of your own with custom_hooks)",
                f"default_hooks.{key}",
            )


def build_runner(
    path: str | os.PathLike[str], options: Mapping[str, Any] | None = None, **overrides: Any
) -> Runner:
    """Load the config ``path``, apply ``overrides`` then ``options`` (key paths), build the Runner.

    ``work_dir`` defaults to ``work_dirs/<config file name>``; ``disable_plugins`` overrides
    are added to the config's. No data is read and nothing is trained: this is the Runner
    constructor, which checks every argument and hook config. A ConfigError from it comes back
    with the file name in front, and with the ``--cfg-options`` that set the key, if any.
    """
    config = load_config(path)
    config.setdefault("work_dir", Path("work_dirs") / Path(path).stem)
    valid = runner_arguments()
    for name, value in overrides.items():
        if name not in valid:
            raise ConfigError(f"this Runner has no argument {name!r}{_suggest(name, valid)}", name)
        if name == "disable_plugins":
            value = [*config.get(name, ()), *value]
        config[name] = value
    options = options or {}
    apply_options(config, options)
    _check_default_hook_keys(path, config.get("default_hooks"))
    if "model" not in config:
        raise _error(f"{os.fspath(path)}: model: the config defines no model (e.g. model = MyNet())", "model")
    try:
        return Runner(**config)
    except ConfigError as exc:
        error = _in_file(path, exc)
        key = exc.key or ""
        given = [f"{k}={v!r}" for k, v in options.items()
                 if key and (k == key or k.startswith(f"{key}.") or key.startswith(f"{k}."))]
        if given:
            error = _error(f"{error} (set by --cfg-options {' '.join(given)})", exc.key)
        raise error from None

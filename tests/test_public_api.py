"""Meta-tests: the public surface is documented, and every built-in hook module has its tests."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pluginloop
from pluginloop import hookspecs
from pluginloop.hookspecs import HOOK_POINTS

ROOT = Path(__file__).resolve().parents[1]


def _public_modules() -> list[str]:
    return [
        m.name for m in pkgutil.walk_packages(pluginloop.__path__, "pluginloop.")
        if not m.name.rpartition(".")[2].startswith("_")
    ]


def test_every_public_class_function_and_method_has_a_docstring() -> None:
    missing = []
    for name in _public_modules():
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]):
            obj = getattr(module, attr)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or obj.__module__ != name:
                continue
            if not obj.__doc__:
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                missing += [f"{name}.{attr}.{m}" for m, v in vars(obj).items()
                            if not m.startswith("_") and inspect.isfunction(v) and not v.__doc__]
    assert missing == []


def test_top_level_all_is_importable_without_duplicates() -> None:
    # Its order is ruff's (RUF022: constants, classes, then functions, each sorted).
    assert len(set(pluginloop.__all__)) == len(pluginloop.__all__)
    for name in pluginloop.__all__:
        assert getattr(pluginloop, name) is not None


def test_every_hook_point_is_a_documented_spec_in_firing_order() -> None:
    specs = [n for n, f in vars(hookspecs).items() if hasattr(f, "pluginloop_spec")]
    assert specs == list(HOOK_POINTS)
    for point in HOOK_POINTS:
        assert len(inspect.getdoc(getattr(hookspecs, point)) or "") > 40, point


def test_every_built_in_hook_module_has_its_own_test_module() -> None:
    modules = {p.stem for p in (ROOT / "pluginloop" / "hooks").glob("*.py") if not p.stem.startswith("_")}
    tested = {p.stem.removeprefix("test_") for p in (ROOT / "tests" / "hooks").glob("test_*.py")}
    aliases = {"checkpoint": "checkpoint_hook"}  # tests/test_checkpoint.py is the file layer's
    untested = [m for m in modules - {"base"} if aliases.get(m, m) not in tested]  # base: test_runner
    assert untested == []

"""The README cannot drift from the code: tables, commands, links and code blocks are checked."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pluginloop import HOOKS, Priority, hookspecs
from pluginloop.cli import build_parser
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.priority import get_priority, priority_name

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CI = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
RUNNABLE = "<!-- runnable -->"


def section(title: str) -> str:
    """The text under the ``## title`` heading, up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    """The bodies of the fenced code blocks of ``language`` in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def table_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text`` (header and separator rows dropped)."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if row[0] not in {"hook point", "level", "key", "hook (priority)", "example"}]


def code_names(cell: str) -> list[str]:
    """The names written as ``code`` in a table cell."""
    return re.findall(r"`([^`]+)`", cell)


# -- the contract tables ------------------------------------------------------------------------


def test_the_hook_point_table_has_every_point_in_firing_order_with_its_arguments() -> None:
    rows = table_rows(section("The loop and its 16 hook points"))
    assert [code_names(row[0])[0] for row in rows] == list(HOOK_POINTS)
    for row in rows:
        point = code_names(row[0])[0]
        arguments = list(inspect.signature(getattr(hookspecs, point)).parameters)
        assert code_names(row[1]) == arguments, point


def test_the_loop_pseudocode_fires_every_point() -> None:
    [loop] = blocks(section("The loop and its 16 hook points"), "text")
    positions = []
    for point in HOOK_POINTS:
        found = re.search(rf"\b{point}\b", loop)
        assert found, point
        positions.append(found.start())
    assert positions == sorted(positions), "the pseudocode fires the points out of order"


def test_the_priority_table_is_the_nine_levels() -> None:
    rows = table_rows(section("Priorities"))
    assert [(code_names(row[0])[0], int(row[1])) for row in rows] == [(p.name, p.value) for p in Priority]


def _builtin_classes() -> list[type]:
    classes: dict[str, type] = {}
    for name in HOOKS.names():
        cls = HOOKS.get(name)
        if cls is not None and cls.__module__.startswith("pluginloop.hooks."):
            classes[cls.__name__] = cls  # aliases (TextLoggerHook) are the same class
    return list(classes.values())


def _instance(cls: type) -> Any:
    required = [p for n, p in inspect.signature(cls).parameters.items()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return cls(**{p.name: 2 for p in required})  # cumulative_iters is the only required one


@pytest.mark.parametrize("cls", _builtin_classes(), ids=lambda cls: cls.__name__)
def test_every_built_in_hook_has_a_row_with_its_priority_points_and_parameters(cls: type) -> None:
    label = f"`{cls.__name__}` ({priority_name(get_priority(cls.priority))})"  # type: ignore[attr-defined]
    rows = [row for row in table_rows(section("Built-in hooks")) if any(label in cell for cell in row)]
    assert len(rows) == 1, f"no single row with {label}"
    row = " | ".join(rows[0])
    documented = set(code_names(row))
    parameters = [n for n, p in inspect.signature(cls).parameters.items()
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for parameter in parameters:
        assert re.search(rf"`{parameter}(=[^`]*)?`", row), f"{cls.__name__}: parameter {parameter!r} missing"
    points = _instance(cls).hook_points()
    assert set(points) <= documented, f"{cls.__name__}: points {set(points) - documented} missing"


def test_the_default_hooks_table_lists_the_default_set_in_order() -> None:
    rows = [row for row in table_rows(section("Built-in hooks")) if row[0].startswith("`") and len(row) == 5]
    assert [code_names(row[0])[0] for row in rows] == list(DEFAULT_HOOKS)
    for row, config in zip(rows, DEFAULT_HOOKS.values()):
        assert code_names(row[1])[0] == config["type"]


# -- commands -------------------------------------------------------------------------------------


def test_the_quick_start_is_two_commands_and_the_second_is_ci() -> None:
    text = section("Quick start")
    commands = [b.strip() for b in blocks(text, "bash")]
    assert len(commands) == 2, commands
    setup_and_train, setup_and_test = commands
    pin = re.search(r"pip install -q (torch==\S+)", CI)
    assert pin, ".ci/run no longer pins torch"
    assert setup_and_train.startswith(f"pip install {pin.group(1)} -e \".[examples]\" && python ")
    script = setup_and_train.rsplit(" ", 1)[1]
    assert (ROOT / script).is_file(), script
    assert setup_and_test == "bash .ci/run"


def test_the_test_command_the_readme_shows_is_the_one_ci_runs() -> None:
    ci_command = [line for line in CI.splitlines() if line.strip() and not line.startswith("#")][-1]
    assert ci_command == "python -m pytest -q tests plugins"
    assert f"`{ci_command}`" in section("Quick start")
    assert ci_command in blocks(section("Development"), "bash")[0]


def _cli_lines() -> list[str]:
    """``pluginloop ...`` command lines: every line of bash blocks, ``$ `` lines of text blocks."""
    lines = [line for body in blocks(README, "bash") for line in body.splitlines()]
    lines += [line[2:] for body in blocks(README, "text") for line in body.splitlines()
              if line.startswith("$ ")]
    commands = [line.split("  #")[0].strip() for line in lines]
    return [command for command in commands if command.startswith("pluginloop ")]


@pytest.mark.parametrize("line", _cli_lines())
def test_every_pluginloop_command_in_the_readme_parses(line: str) -> None:
    args = build_parser().parse_args(shlex.split(line)[1:])  # exits (failing the test) on a bad one
    if hasattr(args, "config"):
        assert args.config.endswith(".py")


def test_the_readme_shows_all_three_commands() -> None:
    assert {line.split()[1] for line in _cli_lines()} == {"train", "hooks", "plugins"}


# -- links ----------------------------------------------------------------------------------------


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_every_contents_link_names_a_heading() -> None:
    headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", README, re.M)}
    for anchor in re.findall(r"\]\(#([^)]+)\)", README):
        assert anchor in headings, anchor


def test_every_relative_link_names_a_file_in_the_repository() -> None:
    targets = [t for t in re.findall(r"\]\(([^)#]+)\)", README) if not t.startswith(("http://", "https://"))]
    assert "docs/plugins.md" in targets and "docs/checkpoints.md" in targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert missing == [], f"README links to files that do not exist: {missing}"


def test_the_examples_table_lists_every_example() -> None:
    listed = {code_names(row[0])[0] for row in table_rows(section("Examples"))}
    present = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.py")}
    assert listed == present


# -- code blocks ----------------------------------------------------------------------------------


def test_every_python_block_compiles() -> None:
    python = blocks(README, "python")
    assert len(python) >= 3
    for i, body in enumerate(python):
        compile(body, f"README.md python block {i}", "exec")


def _runnable() -> list[str]:
    found = re.findall(rf"^{re.escape(RUNNABLE)}\n```python\n(.*?)^```", README, re.S | re.M)
    assert len(found) == README.count(RUNNABLE), f"a {RUNNABLE} marker is not right above a python block"
    return found


@pytest.mark.slow
def test_the_runnable_python_blocks_run(tmp_path: Path) -> None:
    runnable = _runnable()
    assert len(runnable) >= 2
    # One fresh interpreter (torch imported once), each block in a namespace of its own.
    for i, body in enumerate(runnable):
        (tmp_path / f"block_{i}.py").write_text(body)
    driver = (
        "import runpy, sys\n"
        f"for i in range({len(runnable)}):\n"
        "    print(f'--- README runnable block {i}', flush=True)\n"
        "    runpy.run_path(f'block_{i}.py', run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", driver], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert f"--- README runnable block {len(runnable) - 1}" in result.stdout


def test_the_plugin_guide_example_reaches_the_log_lines(tmp_path: Path) -> None:
    """docs/plugins.md's example hook, run as printed: its scalar shows in the logger's records."""
    import json

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from pluginloop import Runner
    from pluginloop.hooks import LoggerHook

    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    source = next(body for body in blocks(guide, "python") if "class WeightNormHook" in body)
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/plugins.md", "exec"), namespace)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    loader = DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)), batch_size=2)
    logger = LoggerHook(interval=2)
    runner = Runner(
        model, work_dir=tmp_path, train_dataloader=loader, optimizer=dict(type="SGD", lr=0.1),
        loss_fn=torch.nn.MSELoss(), max_epochs=1, launcher="none", device="cpu", autoload_plugins=False,
        default_hooks=dict(logger=logger), custom_hooks=[namespace["WeightNormHook"](interval=2)],
    )
    runner.train()
    assert logger.json_file is not None
    records = [json.loads(line) for line in logger.json_file.read_text(encoding="utf-8").splitlines()]
    expected = torch.stack([p.detach().norm() for p in model.parameters()]).norm().item()
    assert [r["iter"] for r in records] == [2, 4]
    assert records[-1]["weight_norm"] == pytest.approx(expected)

"""The ``pluginloop`` command: train, hooks, plugins; help texts and exit statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import importlib_metadata
import pytest
import torch

from pluginloop import cli
from pluginloop import plugins as plugins_mod
from pluginloop.hookspecs import HOOK_POINTS

CONFIG = """
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
import pluginloop

class Tag(pluginloop.Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        pass

def _data(n):
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))

model = nn.Linear(4, 1)
train_dataloader = DataLoader(_data(8), batch_size=4)
val_dataloader = DataLoader(_data(4), batch_size=4)
loss_fn = nn.functional.mse_loss
optimizer = dict(type="SGD", lr=0.01)
max_epochs = 2
device = "cpu"
seed = 0
default_hooks = dict(logger=dict(type="LoggerHook", interval=1))
custom_hooks = [dict(type=Tag, priority="ABOVE_NORMAL")]
"""


def write(tmp_path: Path, extra: str = "", name: str = "cfg.py") -> str:
    path = tmp_path / name
    path.write_text(CONFIG + textwrap.dedent(extra))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``main(argv)``'s exit status, stdout (log lines included) and stderr (argparse's exits too)."""
    try:
        status = cli.main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


# -- help and usage -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), ["train", "hooks", "plugins", "exit status: 0 success, 1 training failed, 2 usage"]),
        (("train",), ["CONFIG.py", "--work-dir DIR", "--resume [PATH]", "--cfg-options KEY=VALUE",
                      "-p no:NAME", "default_hooks.checkpoint.interval=2", "exit status"]),
        (("hooks",), ["CONFIG.py", "--cfg-options KEY=VALUE", "-p no:NAME", "--json",
                      "where each came from"]),
        (("plugins",), ["--json", "-p no:NAME", "loaded", "disabled", "failed"]),
    ],
)
def test_help_of_each_command_describes_every_option(
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...], expected: list[str]
) -> None:
    status, out, _ = run(capsys, *command, "--help")
    assert status == 0
    for text in expected:
        assert text in " ".join(out.split()), text


@pytest.mark.parametrize(
    "argv",
    [(), ("fly",), ("train",), ("train", "cfg.py", "-p", "visualizer"), ("train", "cfg.py", "--epochs", "3")],
)
def test_usage_mistakes_exit_2(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    status, _, err = run(capsys, *argv)
    assert status == 2
    assert "usage: pluginloop" in err


def test_the_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    from pluginloop import __version__

    status, out, _ = run(capsys, "--version")
    assert status == 0 and out.strip() == f"pluginloop {__version__}"


# -- train ----------------------------------------------------------------------------------


def test_train_runs_the_config_prints_its_shape_and_writes_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    status, out, err = run(capsys, "train", write(tmp_path), "--work-dir", str(work))
    assert status == 0, err
    assert "Linear (5 parameters) on cpu, world size 1, seed 0" in out
    assert "2 epochs x 2 iterations = 4 iterations" in out
    assert f"work dir  {work}" in out
    assert (work / "epoch_2.pth").is_file()
    assert out.rstrip().endswith(f"done after 2 epochs (4 iterations); work dir {work}, "
                                 f"last checkpoint {work / 'epoch_2.pth'}")


def test_the_run_lists_each_hook_once_by_priority_then_registration_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, """
        class Late(pluginloop.Hook):  # registered first, first seen late in the loop
            def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
                pass
        class Early(pluginloop.Hook):
            def before_train_epoch(self, runner):
                pass
        custom_hooks = [Late(), Early(), dict(type=Tag, priority="ABOVE_NORMAL")]
    """)
    status, out, err = run(capsys, "train", config, "--work-dir", str(tmp_path / "work"))
    assert status == 0, err
    lines = [line.split(" INFO ", 1)[1].split() for line in out.splitlines() if " INFO " in line]
    start = next(i for i, row in enumerate(lines) if row[0] == "hooks")
    rows = [row[1:] if row[0] == "hooks" else row for row in lines[start:]]
    rows = rows[: next(i for i, row in enumerate(rows) if row[0].startswith("Epoch("))]
    # NORMAL ones in registration order (default_hooks order, then custom_hooks), not first use.
    # EmptyCacheHook registers no point, and so is not listed, where CUDA is not available.
    cuda = ["EmptyCacheHook"] if torch.cuda.is_available() else []
    assert [row[1] for row in rows] == [
        "OptimizerHook", "Tag", "DistSamplerSeedHook", "SyncBuffersHook", *cuda, "IterTimerHook", "Late",
        "Early", "LoggerHook", "ParamSchedulerHook", "CheckpointHook",
    ]
    assert [row[0] for row in rows][:2] == ["HIGH", "ABOVE_NORMAL"]
    assert out.count("OptimizerHook") == 1, "the plan is printed once per run"


def test_cfg_options_change_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "work"
    status, out, err = run(capsys, "train", write(tmp_path), "--work-dir", str(work), "--cfg-options",
                           "max_epochs=3", "default_hooks.checkpoint.interval=3",
                           "--cfg-options", "optimizer.lr=0.5")
    assert status == 0, err
    assert sorted(p.name for p in work.glob("*.pth")) == ["epoch_3.pth"]
    assert "lr: 5.0000e-01" in out


def test_resume_without_a_path_continues_from_the_newest_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, work = write(tmp_path), str(tmp_path / "work")
    assert run(capsys, "train", config, "--work-dir", work)[0] == 0
    status, out, err = run(capsys, "train", config, "--work-dir", work, "--resume",
                           "--cfg-options", "max_epochs=3")
    assert status == 0, err
    assert "resumed from" in out and "epoch_2.pth (epoch 2, iter 4)" in out
    assert "done after 3 epochs (6 iterations)" in out


def test_resume_from_a_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, work = write(tmp_path), tmp_path / "work"
    assert run(capsys, "train", config, "--work-dir", str(work))[0] == 0
    status, out, err = run(capsys, "train", config, "--work-dir", str(work), "--resume",
                           str(work / "epoch_1.pth"))
    assert status == 0, err
    assert f"resumed from {work / 'epoch_1.pth'} (epoch 1, iter 2)" in out


def test_resume_from_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, "train", write(tmp_path), "--resume", str(tmp_path / "nope.pth"))
    assert status == 2
    assert "nope.pth: no such checkpoint file" in err and "Traceback" not in err


def test_a_config_with_a_typo_exits_2_naming_file_key_and_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "max_epoch = 3\n")
    status, out, err = run(capsys, "train", config)
    assert status == 2
    assert err.startswith(f"pluginloop train: error: {config}, line ")
    assert "max_epoch: not a Runner argument; did you mean 'max_epochs'?" in err
    assert "Traceback" not in err and out == ""


def test_a_registry_mistake_exits_2_with_the_file_and_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, 'default_hooks = dict(checkpoint=dict(type="CheckpointHook", internal=5))\n')
    status, _, err = run(capsys, "hooks", config)
    assert status == 2
    assert (f"{config}: default_hooks.checkpoint: CheckpointHook got an unexpected argument 'internal'; "
            "did you mean 'interval'?") in err


def test_a_bad_cfg_option_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "train", write(tmp_path), "--cfg-options", "max_epoch=3")
    assert status == 2
    assert "--cfg-options max_epoch: 'max_epoch' is not a Runner argument; did you mean 'max_epochs'?" in err


def test_a_training_failure_exits_1_with_the_traceback_and_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, """
        class Boom(pluginloop.Hook):
            def after_train_epoch(self, runner):
                raise RuntimeError("boom")
        custom_hooks = [Boom()]
    """)
    work = tmp_path / "work"
    status, _, err = run(capsys, "train", config, "--work-dir", str(work))
    assert status == 1
    assert "Traceback" in err and "RuntimeError: boom" in err
    assert "plugin 'Boom' failed in hook point 'after_train_epoch'" in err
    hint = f"resume from the last checkpoint with `pluginloop train {config} --work-dir {work} --resume`"
    assert hint in err


def test_p_no_name_disables_the_plugin_for_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}
    real = cli.build_runner

    def spy(path: str, options: Any = None, **overrides: Any) -> Any:
        seen.update(overrides)
        return real(path, options, **{k: v for k, v in overrides.items() if k != "disable_plugins"})

    monkeypatch.setattr(cli, "build_runner", spy)
    status, _, err = run(capsys, "hooks", write(tmp_path), "-p", "no:visualizer", "-p", "no:progress")
    assert status == 0, err
    assert seen["disable_plugins"] == ["visualizer", "progress"]


def test_disabling_a_plugin_that_is_not_installed_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_plugin: Path
) -> None:
    status, _, err = run(capsys, "hooks", write(tmp_path), "-p", "no:nan_gaurd")
    assert status == 2
    assert "no installed plugin is named 'nan_gaurd'" in err


# -- hooks ----------------------------------------------------------------------------------


def test_hooks_prints_the_plan_per_point_in_call_order_with_priorities_and_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, """
        class NoData(Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                raise AssertionError("pluginloop hooks read data")
        train_dataloader = DataLoader(NoData(), batch_size=2)
        default_hooks = dict(logger=dict(type="LoggerHook", interval=1), timer=None)
    """)
    status, out, err = run(capsys, "hooks", config)
    assert status == 0, err
    assert out.startswith(f"Hook plan of {config}\n")
    block = out.split("\nafter_train_iter\n")[1].split("\n\n")[0].splitlines()
    rows = [line.split() for line in block]
    assert [row[2] for row in rows] == ["OptimizerHook", "Tag", "LoggerHook", "ParamSchedulerHook"]
    assert rows[0][:2] == ["HIGH", "30"] and rows[1][:2] == ["ABOVE_NORMAL", "40"]
    assert rows[0][3:] == ["built-in", "default", "(default_hooks.optimizer)"]
    assert rows[1][3:] == ["config", "custom_hooks[0]"]
    assert rows[2][3:] == ["config", "default_hooks.logger"]
    assert "IterTimerHook" not in out
    assert "no hooks at: " in out


def test_hooks_json_lists_all_sixteen_points(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "hooks", write(tmp_path), "--json",
                         "--cfg-options", "default_hooks.logger=None")
    assert status == 0
    data = json.loads(out)
    assert list(data["plan"]) == list(HOOK_POINTS)
    first = data["plan"]["after_train_iter"][0]
    assert first == {"name": "OptimizerHook", "object": "pluginloop.hooks.optimizer.OptimizerHook",
                     "priority": 30, "priority_name": "HIGH",
                     "source": "built-in default (default_hooks.optimizer)"}
    names = {e["name"] for entries in data["plan"].values() for e in entries}
    assert "LoggerHook" not in names and "Tag" in names


PLUGIN_MODULE = """
import pluginloop

class GuardHook(pluginloop.Hook):
    priority = "VERY_HIGH"

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        pass
"""


@pytest.fixture
def fake_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An installed distribution ``pluginloop-fake-guard 1.2.3`` with entry point ``guard``."""
    site = tmp_path / "site"
    info = site / "pluginloop_fake_guard-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pluginloop-fake-guard\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[pluginloop]\nguard = fake_guard_mod:GuardHook\n")
    (site / "fake_guard_mod.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(site))
    real = importlib_metadata.entry_points

    def only_fake(**params: Any) -> importlib_metadata.EntryPoints:
        return importlib_metadata.EntryPoints(
            ep for ep in real(**params) if ep.dist is not None and ep.dist.name == "pluginloop-fake-guard"
        )

    monkeypatch.setattr(importlib_metadata, "entry_points", only_fake)
    plugins_mod.clear_cache()
    yield site
    sys.modules.pop("fake_guard_mod", None)
    plugins_mod.clear_cache()


@pytest.mark.autoload
def test_hooks_names_the_distribution_and_version_of_an_installed_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_plugin: Path
) -> None:
    status, out, err = run(capsys, "hooks", write(tmp_path))
    assert status == 0, err
    line = next(line for line in out.splitlines() if " guard " in line)
    assert line.split() == ["VERY_HIGH", "10", "guard", "plugin", "pluginloop-fake-guard", "1.2.3",
                            "(entry", "point", "'guard')"]
    status, out, _ = run(capsys, "hooks", write(tmp_path), "-p", "no:guard")
    assert status == 0 and " guard " not in out


# -- plugins --------------------------------------------------------------------------------


@pytest.mark.autoload
def test_plugins_lists_installed_plugins_as_text_and_json(
    capsys: pytest.CaptureFixture[str], fake_plugin: Path
) -> None:
    status, out, _ = run(capsys, "plugins")
    assert status == 0
    assert out.splitlines()[0] == "guard  (pluginloop-fake-guard 1.2.3)  loaded"
    status, out, _ = run(capsys, "plugins", "--json", "-p", "no:guard")
    assert status == 0
    [info] = json.loads(out)
    assert (info["name"], info["distribution"], info["version"], info["status"]) == (
        "guard", "pluginloop-fake-guard", "1.2.3", "disabled")


# -- the entry points of the command --------------------------------------------------------


@pytest.mark.slow
def test_python_dash_m_pluginloop_and_the_console_script_run_the_cli(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pluginloop", "train", write(tmp_path, "max_epoch = 1\n")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "did you mean 'max_epochs'?" in result.stderr
    script = shutil.which("pluginloop")
    if script is None:
        pytest.skip("the pluginloop console script is not on PATH (package not installed with pip)")
    result = subprocess.run([script, "hooks", write(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "after_train_iter" in result.stdout

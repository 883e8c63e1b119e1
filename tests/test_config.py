"""Config files (pluginloop.config): loading, name checks, --cfg-options, building the Runner."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from pluginloop import ConfigError, Runner
from pluginloop.config import apply_options, build_runner, load_config, parse_options, runner_arguments

# A complete small run; a test appends lines to change or break it.
BASE = """
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(x)

def _data(n):
    g = torch.Generator().manual_seed(n)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))

model = Net()
train_dataloader = DataLoader(_data(8), batch_size=4)
val_dataloader = DataLoader(_data(4), batch_size=4)
loss_fn = nn.functional.mse_loss
optimizer = dict(type="SGD", lr=0.01)
max_epochs = 2
device = "cpu"
seed = 0
"""


def write(tmp_path: Path, extra: str = "", base: str = BASE, name: str = "cfg.py") -> Path:
    """``base`` plus ``extra`` as a config file in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(base + textwrap.dedent(extra))
    return path


# -- loading ------------------------------------------------------------------------------


def test_top_level_names_are_runner_arguments_and_helpers_imports_and_defs_are_not(tmp_path: Path) -> None:
    path = write(tmp_path, """
        import math
        from torch.nn import functional as F
        _helper = 3
        def accuracy(preds, targets):
            return 1.0
        def loss_fn(preds, targets):  # a def named like an argument is that argument
            return F.mse_loss(preds, targets)
        metrics = {"acc": accuracy}
    """)
    config = load_config(path)
    assert set(config) == {"model", "train_dataloader", "val_dataloader", "loss_fn", "optimizer",
                           "max_epochs", "device", "seed", "metrics"}
    assert config["max_epochs"] == 2 and config["loss_fn"].__name__ == "loss_fn"
    assert isinstance(config["model"], torch.nn.Module)


def test_the_config_runs_with_its_main_block_off(tmp_path: Path) -> None:
    path = write(tmp_path, """
        if __name__ == "__main__":
            raise SystemExit("a config is not run as a script")
    """)
    assert load_config(path)["max_epochs"] == 2


def test_a_misspelled_top_level_name_fails_before_the_file_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write(tmp_path, f"""
        max_epoch = 3
        open({str(marker)!r}, "w").close()
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line ")
    assert "max_epoch: not a Runner argument; did you mean 'max_epochs'?" in message
    assert "'_max_epoch'" in message  # how to keep a helper
    assert info.value.key == "max_epoch"
    assert not marker.exists(), "the config ran (and could have loaded data) before the typo was reported"


def test_a_name_bound_in_a_way_the_syntax_tree_misses_is_checked_after_running(tmp_path: Path) -> None:
    path = write(tmp_path, 'globals()["val_intreval"] = 2\n')
    expected = r"val_intreval: not a Runner argument; did you mean 'val_interval'\?"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("model = (\n", r"cfg\.py, line \d+: invalid Python"),
        ("_x = 1\n_y = 1 / 0\n", r"cfg\.py, line 2: running the config failed: ZeroDivisionError"),
    ],
)
def test_invalid_python_and_errors_while_running_name_file_and_line(
    tmp_path: Path, source: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, base=source))


def test_a_missing_file_or_a_non_python_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "cfg.yaml").write_text("max_epochs: 2\n")
    with pytest.raises(ConfigError, match=r"a config is a Python file ending in \.py"):
        load_config(tmp_path / "cfg.yaml")


# -- building the Runner ------------------------------------------------------------------------


class CountingDataset(torch.utils.data.Dataset[Any]):
    """Records every item read, to prove that building reads no data."""

    reads: list[int] = []

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> Any:
        CountingDataset.reads.append(i)
        return torch.zeros(4), torch.zeros(1)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('default_hooks = dict(logger=dict(type="LoggerHook", internal=5))',
         "default_hooks.logger: LoggerHook got an unexpected argument 'internal'; did you mean 'interval'?"),
        ('default_hooks = dict(logger=dict(type="LogerHook"))',
         "default_hooks.logger.type: unknown hook type 'LogerHook'; did you mean 'LoggerHook'"),
        ('custom_hooks = [dict(type="LoggerHook", priority="HIGHER")]',
         "custom_hooks[0].priority: unknown priority 'HIGHER'"),
        ('optimizer = dict(type="SDG", lr=0.1)',
         "optimizer.type: unknown optimizer type 'SDG'; did you mean 'SGD'"),
        ('optimizer = dict(type="SGD", lr=0.1, momentun=0.9)',
         "optimizer: SGD got an unexpected argument 'momentun'; did you mean 'momentum'?"),
        ('scheduler = dict(type="StepLR", step_sise=2)', "did you mean 'step_size'?"),
        ("max_epochs = 0", "max_epochs: must be a positive int, got 0"),
    ],
)
def test_every_registry_or_argument_mistake_names_file_key_path_and_fix_before_reading_data(
    tmp_path: Path, extra: str, expected: str
) -> None:
    CountingDataset.reads.clear()
    path = write(tmp_path, f"""
        from {__name__} import CountingDataset
        train_dataloader = DataLoader(CountingDataset(), batch_size=4)
        {extra}
    """)
    with pytest.raises(ConfigError) as info:
        build_runner(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert CountingDataset.reads == []


def test_a_misspelled_default_hooks_key_is_refused_but_a_new_key_is_a_hook_of_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, 'default_hooks = dict(chekpoint=dict(type="CheckpointHook", interval=2))\n')
    with pytest.raises(ConfigError) as info:
        build_runner(path)
    assert str(info.value).startswith(f"{path}: default_hooks.chekpoint: not a default hook; "
                                      "did you mean 'checkpoint'?")
    runner = build_runner(write(tmp_path, 'default_hooks = dict(extra=dict(type="IterTimerHook"))\n'))
    assert "IterTimerHook-1" in " ".join(runner.get_hooks_info()["before_train_iter"])


def test_build_runner_defaults_the_work_dir_to_the_config_name(tmp_path: Path) -> None:
    runner = build_runner(write(tmp_path, name="my_exp.py"))
    assert isinstance(runner, Runner) and runner.work_dir == Path("work_dirs/my_exp")
    assert build_runner(write(tmp_path, "work_dir = 'elsewhere'\n")).work_dir == Path("elsewhere")
    assert build_runner(write(tmp_path), work_dir=tmp_path / "w").work_dir == tmp_path / "w"


def test_a_config_without_a_model_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cfg\.py: model: the config defines no model"):
        build_runner(write(tmp_path, base="max_epochs = 1\n"))


def test_an_override_that_is_not_a_runner_argument_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="this Runner has no argument 'work_dri'; did you mean 'work_dir'"):
        build_runner(write(tmp_path), work_dri="x")


def test_a_cfg_option_that_breaks_the_runner_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_runner(write(tmp_path), {"default_hooks.logger.internal": 5})
    message = str(info.value)
    assert "did you mean 'interval'?" in message
    assert message.endswith("(set by --cfg-options default_hooks.logger.internal=5)")


# -- --cfg-options ------------------------------------------------------------------------------


def test_option_values_are_python_literals_and_anything_else_a_string() -> None:
    options = parse_options([
        "max_epochs=3", "optimizer.lr=0.1", "a=[8, 11]", "b=True", "c=None", "d='quoted'",
        "e=SGD", "f=true", "g=NULL", "h=work_dirs/x", "i=", "j=a=b",
    ])
    assert options == {"max_epochs": 3, "optimizer.lr": 0.1, "a": [8, 11], "b": True, "c": None,
                       "d": "quoted", "e": "SGD", "f": True, "g": None, "h": "work_dirs/x", "i": "",
                       "j": "a=b"}


@pytest.mark.parametrize("item", ["max_epochs", "=3", " =3"])
def test_an_option_without_key_and_value_is_a_config_error(item: str) -> None:
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE, e\.g\. max_epochs=3"):
        parse_options([item])


def test_nested_options_set_values_and_start_default_hooks_from_the_built_in() -> None:
    optimizer = {"type": "SGD", "lr": 0.01}
    config: dict[str, Any] = {"optimizer": optimizer, "custom_hooks": [{"type": "A", "interval": 1}]}
    apply_options(config, {
        "max_epochs": 3,
        "optimizer.lr": 0.1,
        "default_hooks.logger.interval": 2,
        "default_hooks.timer": None,
        "custom_hooks[0].interval": 5,
        "custom_hooks.0.priority": "LOW",
        "scheduler.milestones": [8, 11],
    })
    assert config["max_epochs"] == 3
    assert config["optimizer"] == {"type": "SGD", "lr": 0.1}
    assert optimizer["lr"] == 0.01, "the config's own dict was changed in place"
    assert config["default_hooks"] == {"logger": {"type": "LoggerHook", "interval": 2}, "timer": None}
    assert config["custom_hooks"] == [{"type": "A", "interval": 5, "priority": "LOW"}]
    assert config["scheduler"] == {"milestones": [8, 11]}


def test_an_option_on_a_configured_default_hook_keeps_the_configs_other_values() -> None:
    logger = {"type": "LoggerHook", "interval": 7, "by_epoch": True}
    config: dict[str, Any] = {"default_hooks": {"logger": logger}}
    apply_options(config, {"default_hooks.logger.interval": 3})
    assert config["default_hooks"]["logger"] == {"type": "LoggerHook", "interval": 3, "by_epoch": True}


@pytest.mark.parametrize(
    ("key", "config", "expected"),
    [
        ("max_epoch", {},
         "--cfg-options max_epoch: 'max_epoch' is not a Runner argument; did you mean 'max_epochs'?"),
        ("default_hooks.loger.interval", {},
         "--cfg-options default_hooks.loger.interval: there is no default hook 'loger'; "
         "did you mean 'logger'?"),
        ("custom_hooks[2].interval", {"custom_hooks": [{}]},
         "custom_hooks.2: index out of range (the list has 1"),
        ("optimizer.lr", {"optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1)},
         "optimizer is a SGD object built in the config, not a dict or list; change it in the config file"),
        ("optimizer..lr", {}, "empty part in the key path"),
    ],
)
def test_a_bad_option_path_names_the_option_and_the_fix(
    key: str, config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        apply_options(config, {key: 1})
    assert expected in str(info.value)


def test_runner_arguments_follow_the_runner_signature() -> None:
    names = runner_arguments()
    assert names[0] == "model" and "self" not in names
    assert {"max_epochs", "default_hooks", "custom_hooks", "resume", "disable_plugins"} <= set(names)

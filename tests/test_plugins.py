"""Entry-point plugins (pluginloop.plugins) and the pytest fixtures of pluginloop.testing.

Plugins here are real distributions as importlib-metadata sees them: ``*.dist-info``
directories with ``entry_points.txt`` on a temporary sys.path entry. The ``fake_site``
fixture also hides every other installed plugin (CI installs plugins/), so each test sees
exactly the plugins it made. Real pip installs are in test_plugin_install.py.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import importlib_metadata
import pytest
import torch
from torch import nn

from pluginloop import ConfigError, Hook, Runner, checkpoint
from pluginloop import plugins as plugins_mod
from pluginloop._manager import PluginManager
from pluginloop.errors import PluginLoadError
from pluginloop.plugins import ENV_DISABLE_AUTOLOAD, ENV_PLUGINS, PluginInfo, format_plugins, list_plugins
from pluginloop.testing import HookRecorder

COUNT_HOOK = """
from pluginloop import Hook, Priority

class CountHook(Hook):
    priority = Priority.NORMAL
    def __init__(self, step=1):
        self.step, self.count = step, 0
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.count += self.step
    def state_dict(self):
        return {"count": self.count}
    def load_state_dict(self, state):
        self.count = state["count"]
"""

HOOKIMPL_MODULE = """
import pluginloop

CALLS = []

@pluginloop.hookimpl
def after_train_epoch(runner):
    CALLS.append(runner.epoch)
"""


class FakeSite:
    """Installs fake plugin distributions into one sys.path entry."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dists: set[str] = set()
        self.modules: list[str] = []

    def install(
        self,
        dist: str,
        entry_points: dict[str, str],
        modules: dict[str, str] | None = None,
        version: str = "1.0",
        root: Path | None = None,
    ) -> None:
        """Write ``<dist>-<version>.dist-info`` declaring ``entry_points`` plus module files."""
        site = root or self.root
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[pluginloop]\n{lines}")
        for module, source in (modules or {}).items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            self.modules.append(module)
        self.dists.add(dist)
        plugins_mod.clear_cache()


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A FakeSite on sys.path; only its distributions are visible as installed plugins."""
    site = FakeSite(tmp_path / "site")
    site.root.mkdir()
    monkeypatch.syspath_prepend(str(site.root))
    real = importlib_metadata.entry_points

    def only_fakes(**params: Any) -> importlib_metadata.EntryPoints:
        return importlib_metadata.EntryPoints(
            ep for ep in real(**params) if ep.dist is not None and ep.dist.name in site.dists
        )

    monkeypatch.setattr(importlib_metadata, "entry_points", only_fakes)
    plugins_mod.clear_cache()
    yield site
    for module in site.modules:
        sys.modules.pop(module, None)
    plugins_mod.clear_cache()


def _runner(tmp_path: Path, **kwargs: Any) -> Runner:
    x = torch.randn(8, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=4)
    base: dict[str, Any] = dict(
        model=nn.Linear(4, 1),
        work_dir=tmp_path / "work",
        train_dataloader=loader,
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.01),
        max_epochs=1,
        device="cpu",
        seed=0,
    )
    base.update(kwargs)
    return Runner(**base)


def _names(runner: Runner, point: str) -> list[str]:
    return [entry.rsplit(" (", 1)[0] for entry in runner.get_hooks_info()[point]]


class Tag(Hook):
    """A NORMAL hook at after_train_iter, to place plugins between defaults and customs."""

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        pass


# -- loading --------------------------------------------------------------------------------


@pytest.mark.autoload
def test_plugins_register_sorted_by_name_after_default_hooks_and_before_custom_hooks(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    # Installed in reverse name order, from distributions named the other way round.
    fake_site.install("pluginloop-a", {"zeta": "zeta_mod:CountHook"}, {"zeta_mod": COUNT_HOOK})
    fake_site.install("pluginloop-b", {"alpha": "alpha_mod:CountHook"}, {"alpha_mod": COUNT_HOOK})
    runner = _runner(tmp_path, default_hooks={"tag": dict(type=Tag)}, custom_hooks=[Tag()])
    order = [n for n in _names(runner, "after_train_iter") if n in ("Tag", "alpha", "zeta", "Tag-1")]
    assert order == ["Tag", "alpha", "zeta", "Tag-1"]
    assert [(p.name, p.status, p.distribution) for p in runner.plugins] == [
        ("alpha", "loaded", "pluginloop-b"),
        ("zeta", "loaded", "pluginloop-a"),
    ]


@pytest.mark.autoload
def test_an_entry_point_may_name_a_hook_class_a_hook_instance_or_a_hookimpl_module(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    fake_site.install(
        "pluginloop-kinds",
        {"cls": "kinds_cls:CountHook", "inst": "kinds_inst:instance", "mod": "kinds_mod"},
        {
            "kinds_cls": COUNT_HOOK,
            "kinds_inst": COUNT_HOOK + "\ninstance = CountHook(step=10)\n",
            "kinds_mod": HOOKIMPL_MODULE,
        },
    )
    runner = _runner(tmp_path, max_epochs=2)
    info = {p.name: p for p in runner.plugins}
    assert {n: (p.status, p.object) for n, p in info.items()} == {
        "cls": ("loaded", "kinds_cls:CountHook"),
        "inst": ("loaded", "kinds_inst:CountHook instance"),
        "mod": ("loaded", "kinds_mod"),
    }
    assert info["mod"].hook_points == ("after_train_epoch",)
    runner.train()
    assert sys.modules["kinds_inst"].instance.count == 10 * 4  # 2 iterations x 2 epochs, step 10
    assert sys.modules["kinds_mod"].CALLS == [0, 1]


@pytest.mark.autoload
def test_a_plugin_that_fails_to_import_names_distribution_version_entry_point_cause_and_fix(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    fake_site.install(
        "pluginloop-broken",
        {"broken": "broken_mod:Hook"},
        {"broken_mod": "raise RuntimeError('boom at import')"},
        version="1.2.3",
    )
    with pytest.raises(PluginLoadError) as info:
        _runner(tmp_path)
    message = str(info.value)
    for part in (
        "pluginloop-broken 1.2.3",
        "'broken = broken_mod:Hook'",
        "RuntimeError: boom at import",
        "disable_plugins=['broken']",
        "-p no:broken",
        f"{ENV_DISABLE_AUTOLOAD}=1",
    ):
        assert part in message
    assert isinstance(info.value.__cause__, RuntimeError)
    _runner(tmp_path, disable_plugins=["broken"])  # the advertised fix works


@pytest.mark.autoload
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            COUNT_HOOK + "\nclass Bad(CountHook):\n    def after_train_itr(self, runner): pass\n",
            "did you mean 'after_train_iter'",
        ),
        (
            COUNT_HOOK
            + "\nclass Bad(CountHook):\n    def __init__(self):\n        raise ValueError('no config')\n",
            "could not be instantiated with no arguments: ValueError: no config",
        ),
        ("def Bad():\n    pass\n", "not a Hook subclass, a Hook instance or a module"),
    ],
    ids=["misspelled-point", "init-raises", "not-a-plugin"],
)
def test_a_plugin_that_fails_to_register_leaves_nothing_registered(
    fake_site: FakeSite, source: str, expected: str
) -> None:
    fake_site.install("pluginloop-bad", {"bad": "bad_mod:Bad"}, {"bad_mod": source})
    pm = PluginManager()
    before = pm.get_plugins()
    with pytest.raises(PluginLoadError, match=expected) as info:
        plugins_mod.load_plugins(pm)
    assert "pluginloop-bad 1.0" in str(info.value)
    assert not pm.has_plugin("bad")
    assert pm.get_plugins() == before
    assert all(
        not caller.get_hookimpls() for caller in pm.hook.__dict__.values() if hasattr(caller, "get_hookimpls")
    )


@pytest.mark.autoload
def test_two_distributions_with_one_plugin_name_is_an_error_naming_both(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    fake_site.install("pluginloop-first", {"dup": "dup_one:CountHook"}, {"dup_one": COUNT_HOOK})
    fake_site.install(
        "pluginloop-second", {"dup": "dup_two:CountHook"}, {"dup_two": COUNT_HOOK}, version="2.0"
    )
    with pytest.raises(PluginLoadError, match="two installed distributions") as info:
        _runner(tmp_path)
    assert "pluginloop-first 1.0" in str(info.value) and "pluginloop-second 2.0" in str(info.value)
    [listed] = list_plugins()
    assert listed.status == "failed" and "pluginloop-second" in listed.reason


@pytest.mark.autoload
def test_the_same_distribution_on_two_sys_path_entries_is_one_plugin(
    fake_site: FakeSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_site.install("pluginloop-twice", {"twice": "twice_mod:CountHook"}, {"twice_mod": COUNT_HOOK})
    other = tmp_path / "other_site"
    fake_site.install("pluginloop-twice", {"twice": "twice_mod:CountHook"}, root=other)
    monkeypatch.syspath_prepend(str(other))
    plugins_mod.clear_cache()
    runner = _runner(tmp_path)
    assert [(p.name, p.status) for p in runner.plugins] == [("twice", "loaded")]
    assert _names(runner, "after_train_iter").count("twice") == 1


# -- controls -------------------------------------------------------------------------------


@pytest.fixture
def two_plugins(fake_site: FakeSite) -> FakeSite:
    fake_site.install("pluginloop-one", {"one": "one_mod:CountHook"}, {"one_mod": COUNT_HOOK})
    fake_site.install("pluginloop-two", {"two": "two_mod:CountHook"}, {"two_mod": COUNT_HOOK})
    return fake_site


@pytest.mark.autoload
@pytest.mark.parametrize(
    ("env", "kwargs", "loaded", "reason"),
    [
        ({}, {}, ["one", "two"], ""),
        ({}, {"disable_plugins": ["one"]}, ["two"], "by disable_plugins / -p no:one"),
        ({}, {"autoload_plugins": False}, [], "by autoload_plugins=False"),
        ({ENV_DISABLE_AUTOLOAD: "1"}, {}, [], f"by {ENV_DISABLE_AUTOLOAD}=1"),
        ({ENV_DISABLE_AUTOLOAD: "0"}, {}, ["one", "two"], ""),
        ({ENV_PLUGINS: "two"}, {}, ["two"], f"by {ENV_PLUGINS} (not listed)"),
        # An explicit list wins over the autoload switch, as PYTEST_PLUGINS does.
        ({ENV_PLUGINS: " two, ", ENV_DISABLE_AUTOLOAD: "1"}, {}, ["two"], f"by {ENV_PLUGINS} (not listed)"),
        ({ENV_PLUGINS: "two"}, {"autoload_plugins": False}, [], "by autoload_plugins=False"),
    ],
)
def test_controls_choose_which_plugins_load(
    two_plugins: FakeSite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    kwargs: dict[str, Any],
    loaded: list[str],
    reason: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runner = _runner(tmp_path, **kwargs)
    assert [n for n in _names(runner, "after_train_iter") if n in ("one", "two")] == loaded
    disabled = {
        p.reason
        for p in list_plugins(**{k.replace("_plugins", ""): v for k, v in kwargs.items()})
        if p.status == "disabled"
    }
    assert disabled == ({reason} if reason else set())


@pytest.mark.autoload
@pytest.mark.parametrize(
    ("kwargs", "env", "key"),
    [
        ({"disable_plugins": ["tow"]}, {}, "disable_plugins"),
        ({}, {ENV_PLUGINS: "tow"}, ENV_PLUGINS),
    ],
)
def test_an_unknown_plugin_name_fails_listing_the_installed_ones(
    two_plugins: FakeSite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kwargs: dict[str, Any],
    env: dict[str, str],
    key: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"did you mean 'two'.*installed: one, two") as info:
        _runner(tmp_path, **kwargs)
    assert info.value.key == key


def test_disable_plugins_must_be_a_list_of_names(two_plugins: FakeSite, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="disable_plugins: expected a list of plugin names"):
        _runner(tmp_path, disable_plugins="one")
    with pytest.raises(ConfigError, match="autoload_plugins: must be True or False"):
        _runner(tmp_path, autoload_plugins="no")


def test_without_autoload_no_plugin_is_imported(fake_site: FakeSite, tmp_path: Path) -> None:
    fake_site.install("pluginloop-broken", {"broken": "broken_mod"}, {"broken_mod": "raise RuntimeError"})
    assert _runner(tmp_path).plugins == []  # the autouse fixture set PLUGINLOOP_DISABLE_PLUGIN_AUTOLOAD=1
    assert _runner(tmp_path, autoload_plugins=False).plugins == []
    assert "broken_mod" not in sys.modules


def test_without_autoload_building_hook_configs_scans_no_entry_point(
    two_plugins: FakeSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans: list[Any] = []
    real = importlib_metadata.entry_points
    monkeypatch.setattr(importlib_metadata, "entry_points", lambda **p: scans.append(p) or real(**p))
    plugins_mod.clear_cache()
    _runner(tmp_path, autoload_plugins=False)  # the default hooks are configs built by HOOKS
    assert scans == []  # suggestions for unknown types are listed only when one is unknown


@pytest.mark.autoload
def test_the_entry_point_scan_is_done_once_per_process(
    two_plugins: FakeSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scans = []
    real = importlib_metadata.entry_points

    def counting(**params: Any) -> Any:
        scans.append(params)
        return real(**params)

    monkeypatch.setattr(importlib_metadata, "entry_points", counting)
    plugins_mod.clear_cache()
    for _ in range(3):
        _runner(tmp_path)
    assert scans == [{"group": "pluginloop"}]


# -- configuring an installed plugin --------------------------------------------------------


@pytest.mark.autoload
@pytest.mark.parametrize("type_", ["counter", "CountHook"])
def test_a_configured_plugin_replaces_the_autoloaded_one_and_runs_once(
    fake_site: FakeSite, tmp_path: Path, type_: str
) -> None:
    fake_site.install("pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK})
    runner = _runner(tmp_path, custom_hooks=[dict(type=type_, step=5, priority="LOWEST")])
    assert [(p.name, p.status) for p in runner.plugins] == [("counter", "replaced")]
    assert runner.get_hooks_info()["after_train_iter"][-1] == "CountHook (LOWEST)"
    assert "counter" not in _names(runner, "after_train_iter")
    runner.train()
    [hook] = [h for h in runner._pm.get_plugins() if type(h).__name__ == "CountHook"]
    assert hook.count == 2 * 5  # 2 iterations, step 5: configured, and called once per iteration


@pytest.mark.autoload
def test_a_configured_plugin_instance_or_class_also_replaces_it(fake_site: FakeSite, tmp_path: Path) -> None:
    fake_site.install("pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK})
    cls = plugins_mod._hook_type("counter")
    for custom in (cls, cls(step=3)):
        runner = _runner(tmp_path, custom_hooks=[custom])
        assert _names(runner, "after_train_iter").count("CountHook") == 1
        assert "counter" not in _names(runner, "after_train_iter")


def test_a_plugin_type_is_usable_in_custom_hooks_even_with_autoload_off(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    fake_site.install("pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK})
    runner = _runner(tmp_path, custom_hooks=dict(type="counter", step=2))
    assert "CountHook" in _names(runner, "after_train_iter")


def test_unknown_hook_types_suggest_installed_plugin_names(fake_site: FakeSite, tmp_path: Path) -> None:
    fake_site.install("pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK})
    with pytest.raises(ConfigError, match="did you mean 'counter'"):
        _runner(tmp_path, custom_hooks=[dict(type="countr")])


def test_a_hookimpl_module_plugin_cannot_be_configured(fake_site: FakeSite, tmp_path: Path) -> None:
    fake_site.install("pluginloop-mod", {"modplug": "modplug_mod"}, {"modplug_mod": HOOKIMPL_MODULE})
    with pytest.raises(ConfigError, match="takes no arguments and is loaded automatically"):
        _runner(tmp_path, custom_hooks=[dict(type="modplug")])


def test_a_class_name_of_two_plugins_is_ambiguous(fake_site: FakeSite, tmp_path: Path) -> None:
    fake_site.install("pluginloop-c1", {"c1": "c1_mod:CountHook"}, {"c1_mod": COUNT_HOOK})
    fake_site.install("pluginloop-c2", {"c2": "c2_mod:CountHook"}, {"c2_mod": COUNT_HOOK})
    with pytest.raises(ConfigError, match="give the entry-point name as the type"):
        _runner(tmp_path, custom_hooks=[dict(type="CountHook")])


@pytest.mark.autoload
def test_a_plugin_that_needs_arguments_is_available_but_not_loaded(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    source = (
        COUNT_HOOK + "\nclass Needy(CountHook):\n    autoload = False\n    def __init__(self, step):\n"
        "        super().__init__(step)\n"
    )
    fake_site.install("pluginloop-needy", {"needy": "needy_mod:Needy"}, {"needy_mod": source})
    runner = _runner(tmp_path)
    assert [(p.name, p.status) for p in runner.plugins] == [("needy", "available")]
    assert "dict(type='needy', ...)" in runner.plugins[0].reason
    assert "needy" not in _names(runner, "after_train_iter")
    configured = _runner(tmp_path, custom_hooks=[dict(type="needy", step=4)])
    assert [(p.name, p.status) for p in configured.plugins] == [("needy", "replaced")]
    assert "Needy" in _names(configured, "after_train_iter")


@pytest.mark.autoload
def test_a_plugins_state_is_checkpointed_under_its_entry_point_name(
    fake_site: FakeSite, tmp_path: Path
) -> None:
    fake_site.install("pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK})
    runner = _runner(tmp_path)
    runner.train()
    path = runner.save_checkpoint("plugins.pth")
    assert checkpoint.load_checkpoint(path)["hooks"]["counter"] == {"count": 2}


# -- listing --------------------------------------------------------------------------------


def test_list_plugins_reports_object_priority_points_and_status(
    fake_site: FakeSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_site.install(
        "pluginloop-counter", {"counter": "counter_mod:CountHook"}, {"counter_mod": COUNT_HOOK}, version="0.3"
    )
    fake_site.install("pluginloop-broken", {"broken": "broken_mod:Hook"}, {"broken_mod": "1 / 0"})
    fake_site.install("pluginloop-off", {"off": "off_mod:CountHook"}, {"off_mod": COUNT_HOOK})
    monkeypatch.delenv(ENV_DISABLE_AUTOLOAD)
    infos = {p.name: p for p in list_plugins(disable=["off"])}
    assert infos["counter"] == PluginInfo(
        "counter",
        "pluginloop-counter",
        "0.3",
        "counter_mod:CountHook",
        "loaded",
        "",
        "counter_mod:CountHook",
        "NORMAL",
        ("after_train_iter",),
    )
    assert infos["broken"].status == "failed" and "ZeroDivisionError" in infos["broken"].reason
    assert (infos["off"].status, infos["off"].reason) == ("disabled", "by disable_plugins / -p no:off")
    assert "off_mod" not in sys.modules  # a disabled plugin is not even imported

    text = format_plugins(list(infos.values()))
    assert "counter  (pluginloop-counter 0.3)  loaded" in text
    assert "priority: NORMAL" in text and "hook points: after_train_iter" in text
    assert "failed: installed plugin 'broken'" in text
    assert "disabled by disable_plugins / -p no:off" in text
    as_json = {p["name"]: p for p in json.loads(format_plugins(list(infos.values()), as_json=True))}
    assert as_json["counter"] == {**infos["counter"].__dict__, "hook_points": ["after_train_iter"]}
    assert format_plugins([]).startswith("no pluginloop plugins installed")


def test_autoload_is_off_in_this_suite_unless_a_test_is_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    assert os.environ[ENV_DISABLE_AUTOLOAD] == "1"


# -- pluginloop.testing (the pytest11 plugin) -----------------------------------------------


def test_make_runner_builds_a_small_cpu_runner_without_installed_plugins(
    make_runner: Any, tmp_path: Path
) -> None:
    runner = make_runner(max_epochs=1)
    assert runner.device == torch.device("cpu") and runner.plugins == []
    assert runner.work_dir.parent == tmp_path
    assert make_runner().work_dir != runner.work_dir
    metrics = runner.val()
    assert set(metrics) == {"loss", "acc"}


def test_hook_recorder_records_every_call_in_order(make_runner: Any, hook_recorder: HookRecorder) -> None:
    runner = make_runner(max_epochs=1, custom_hooks=[hook_recorder])
    runner.run()
    points = hook_recorder.points
    assert points[0] == "before_run" and points[-1] == "after_run"
    assert points.count("after_train_iter") == 4 and points.count("after_val_iter") == 4
    assert (
        "after_train_iter",
        {"epoch": 0, "iter": 2, "batch_idx": 2, "outputs": ["loss", "preds", "targets"]},
    ) in hook_recorder.calls
    assert ("after_val_epoch", {"epoch": 1, "iter": 4, "metrics": ["acc", "loss"]}) in hook_recorder.calls


def test_tiny_fixtures_are_small_and_learnable(tiny_model: nn.Module, tiny_loaders: Any) -> None:
    assert sum(p.numel() for p in tiny_model.parameters()) < 100
    inputs, targets = next(iter(tiny_loaders.train))
    assert tiny_model(inputs).shape == (8, 2) and set(targets.tolist()) <= {0, 1}
    assert len(tiny_loaders.train) == len(tiny_loaders.val) == 4

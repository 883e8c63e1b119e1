"""Real installs: pip puts a plugin package into a fresh virtual environment and an unchanged
script picks it up; pip uninstall takes it away; broken and duplicate packages fail clearly.

The venv reuses this environment's torch and pluginloop (``--system-site-packages``) and pip
installs with ``--no-deps --no-build-isolation --no-index``: no network. Plugins that CI
installed into this environment are visible in the venv too, so the package installed here
is the template copied under a new, unique name, exactly as its README tells authors to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

TEMPLATE = Path(__file__).resolve().parents[1] / "plugins" / "pluginloop-template"

# The script users run; it never changes between the installs below.
SCRIPT = """
import json, sys
import torch
from torch import nn
import pluginloop

x = torch.randn(8, 4)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x[:, :1]), batch_size=4)
runner = pluginloop.Runner(model=nn.Linear(4, 1), work_dir=sys.argv[1], train_dataloader=loader,
                           loss_fn=nn.functional.mse_loss, optimizer=dict(type="SGD", lr=0.01),
                           max_epochs=1, device="cpu")
print("RESULT " + json.dumps({"plugins": {p.name: p.status for p in runner.plugins},
                              "after_train_epoch": runner.get_hooks_info()["after_train_epoch"]}))
"""

# Builds one Runner per name in sys.argv[2:] with only that plugin enabled; reports the errors.
ERRORS_SCRIPT = """
import json, os, sys
import torch
import pluginloop

errors = {}
for name in sys.argv[2:]:
    os.environ["PLUGINLOOP_PLUGINS"] = name
    try:
        pluginloop.Runner(model=torch.nn.Linear(4, 1), work_dir=sys.argv[1], device="cpu")
    except pluginloop.errors.PluginLoadError as exc:
        errors[name] = str(exc)
print("RESULT " + json.dumps(errors))
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that sees this one's packages; its python."""
    root = tmp_path_factory.mktemp("venv")
    # No pip inside: this environment's pip installs into it with --python (fast, offline).
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root)],
        check=True,
        timeout=120,
    )
    return root / ("Scripts" if os.name == "nt" else "bin") / "python"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGINLOOP_")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv), *args, "-q"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _install(venv: Path, *packages: Path) -> None:
    _pip(venv, "install", "--no-deps", "--no-build-isolation", *map(str, packages))


def _run(venv: Path, script: str, tmp_path: Path, *args: str) -> Any:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    done = subprocess.run(
        [str(venv), str(path), str(tmp_path / "work"), *args],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def _copy_template(root: Path, name: str) -> Path:
    """plugins/pluginloop-template renamed to pluginloop-<name>, as its README says."""
    package = root / f"pluginloop-{name}"
    package.mkdir()
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(TEMPLATE / file, package / file)
    shutil.copy(TEMPLATE / "pluginloop_template.py", package / f"pluginloop_{name}.py")
    pyproject = package / "pyproject.toml"
    text = pyproject.read_text().replace("pluginloop-template", f"pluginloop-{name}")
    text = text.replace("pluginloop_template", f"pluginloop_{name}").replace("\ntemplate = ", f"\n{name} = ")
    pyproject.write_text(text)
    return package


def _package(root: Path, dist: str, version: str, entry_point: str, module: str, source: str) -> Path:
    """A minimal plugin distribution: one module and one entry point of group pluginloop."""
    package = root / dist
    package.mkdir()
    (package / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "{version}"

        [project.entry-points.pluginloop]
        {entry_point}

        [tool.setuptools]
        py-modules = ["{module}"]
        """)
    )
    (package / f"{module}.py").write_text(textwrap.dedent(source))
    return package


def test_pip_install_adds_the_plugin_to_an_unchanged_script_and_uninstall_removes_it(
    venv: Path, tmp_path: Path
) -> None:
    name = f"probe_{uuid.uuid4().hex[:8]}"
    _install(venv, _copy_template(tmp_path, name))
    installed = _run(venv, SCRIPT, tmp_path)
    assert installed["plugins"][name] == "loaded"
    assert f"{name} (BELOW_NORMAL)" in installed["after_train_epoch"]

    _pip(venv, "uninstall", "-y", f"pluginloop-{name}")
    removed = _run(venv, SCRIPT, tmp_path)
    assert name not in removed["plugins"]
    assert not any(entry.startswith(name) for entry in removed["after_train_epoch"])


def test_broken_and_duplicate_plugin_packages_fail_naming_their_distributions(
    venv: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    broken, dup = f"broken_{tag}", f"dup_{tag}"
    hook = "from pluginloop import Hook\n\nclass Dup(Hook):\n    def after_run(self, runner):\n        pass\n"
    packages = [
        _package(
            tmp_path,
            f"pluginloop-broken-{tag}",
            "3.1.4",
            f'{broken} = "mod_{broken}:Hook"',
            f"mod_{broken}",
            "raise ImportError('a dependency of this plugin is missing')\n",
        ),
        _package(
            tmp_path, f"pluginloop-dup-a-{tag}", "1.0", f'{dup} = "mod_a_{tag}:Dup"', f"mod_a_{tag}", hook
        ),
        _package(
            tmp_path, f"pluginloop-dup-b-{tag}", "2.0", f'{dup} = "mod_b_{tag}:Dup"', f"mod_b_{tag}", hook
        ),
    ]
    _install(venv, *packages)
    try:
        errors = _run(venv, ERRORS_SCRIPT, tmp_path, broken, dup)
    finally:
        _pip(venv, "uninstall", "-y", *(p.name for p in packages))

    message = errors[broken]
    assert f"distribution pluginloop-broken-{tag} 3.1.4" in message
    assert f"entry point '{broken} = mod_{broken}:Hook'" in message
    assert "ImportError: a dependency of this plugin is missing" in message
    assert f"disable_plugins=['{broken}']" in message and f"-p no:{broken}" in message

    message = errors[dup]
    assert "two installed distributions provide the pluginloop plugin" in message
    assert f"pluginloop-dup-a-{tag} 1.0" in message and f"pluginloop-dup-b-{tag} 2.0" in message

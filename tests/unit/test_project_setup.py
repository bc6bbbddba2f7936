"""A contributor's first steps work: the build is declared, and every test dependency too."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Set

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Installed by scripts/test on their own: the Rubin execution endpoint of
# the test labs (without its dependencies), and Prefect in the orchestrator
# environment (.venv-orchestrator).
INSTALLED_APART = {"rsp-jupyter-extensions", "prefect"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> Set[str]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in config["options.extras_require"].values():
        lines += extra.splitlines()
    names = set()
    for line in lines:
        match = re.match(r"\s*([A-Za-z0-9_.\-]+)", line)
        if match and not line.strip().startswith("%("):
            names.add(_normal(match.group(1)))
    return names


def test_pyproject_declares_the_build_system() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert "[build-system]" in text
    assert 'build-backend = "setuptools.build_meta"' in text
    # The metadata stays in setup.cfg, next to the shim for old tools.
    assert "[project]" not in text
    assert (ROOT / "setup.py").exists()


def test_scripts_rebuild_their_environments_when_the_build_changes() -> None:
    for script in ("scripts/test", "scripts/run-local"):
        text = (ROOT / script).read_text()
        stamps = [line for line in text.splitlines() if "sha256sum" in line]
        assert stamps, script
        for stamp in stamps:
            assert "pyproject.toml" in stamp, (script, stamp)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs packages_distributions")
def test_every_test_import_is_declared() -> None:
    local = {"tests", "nublado_sync", "bench", "docs", "conftest", "_common"}
    stdlib = set(sys.stdlib_module_names)
    modules = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    third_party = {m for m in modules if m not in stdlib and m not in local}
    owners = importlib.metadata.packages_distributions()
    declared = _declared() | INSTALLED_APART
    undeclared = {
        module: owners.get(module)
        for module in third_party
        if not {_normal(d) for d in owners.get(module, [module])} & declared
    }
    assert undeclared == {}


def test_run_local_keeps_the_callers_directory(tmp_path: Path) -> None:
    # A copy of the script with a ready environment whose nublado-sync
    # reports where it runs and what it got.
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("pyproject.toml", "setup.cfg", "setup.py", "scripts/run-local"):
        (root / name).write_bytes((ROOT / name).read_bytes())
    venv_bin = root / ".venv-local" / "bin"
    venv_bin.mkdir(parents=True)
    fake = venv_bin / "nublado-sync"
    fake.write_text('#!/bin/sh\necho "$PWD"\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    stamp = subprocess.run(
        ["sh", "-c", "cat pyproject.toml setup.cfg setup.py | sha256sum | cut -c1-16"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (root / ".venv-local" / ".stamp").write_text(stamp + "\n")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    done = subprocess.run(
        ["bash", str(root / "scripts" / "run-local"), "job.py"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.splitlines() == [str(elsewhere), "run", "--local", "job.py"]

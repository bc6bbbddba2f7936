"""The virtual environments the benchmark needs besides the repository's .venv.

Each is made once under ``bench/.venvs/`` and remade when what it should hold
changes (a stamp file records the interpreter version and the requirements).

- ``rnc``: ``rubin-nublado-client`` 16.1 on Python 3.13 (it installs on
  nothing older).
- ``jkc``: ``jupyter-kernel-client`` from PyPI (``Requires-Python >=3.10``),
  on Python 3.11 like nublado_sync, in its own environment so that its
  dependencies do not change the repository's.
- ``plot``: matplotlib, to draw the chart.
- ``ns``: the repository itself, installed as users install it (not in
  editable mode, whose import hook costs every interpreter start ~15 ms),
  for the cold-start comparison; remade when the package's files change.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = Path(os.environ.get("BENCH_VENVS", BENCH / ".venvs"))


@dataclass(frozen=True)
class EnvSpec:
    name: str
    python_version: str  # "3.13": found under pyenv, or on PATH
    requirements: tuple[str, ...]


RNC = EnvSpec("rnc", "3.13", ("rubin-nublado-client==16.1.0",))
JKC = EnvSpec("jkc", "3.11", ("jupyter-kernel-client==1.0.2",))
PLOT = EnvSpec("plot", "3.11", ("matplotlib>=3.8",))
NS = EnvSpec("ns", "3.11", (str(REPO),))


def source_digest() -> str:
    """A digest of what a non-editable install of the repository copies."""
    digest = hashlib.sha256()
    files = [REPO / "setup.cfg", REPO / "setup.py", *sorted((REPO / "nublado_sync").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def find_python(version: str) -> Optional[str]:
    """Find an interpreter of a version: pyenv's copy, else ``pythonX.Y`` on PATH.

    pyenv's shims run only its global version, so the interpreters are looked
    for under ``$(pyenv root)/versions/`` directly.
    """
    roots = []
    if os.environ.get("PYENV_ROOT"):
        roots.append(os.environ["PYENV_ROOT"])
    try:
        out = subprocess.run(
            ["pyenv", "root"], capture_output=True, text=True, check=True, timeout=10
        )
        roots.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    roots.append(str(Path.home() / ".pyenv"))
    for root in roots:
        for candidate in sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}")):
            if os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which(f"python{version}")
    if found:
        try:
            subprocess.run([found, "-V"], capture_output=True, check=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return found
    if sys.version_info[:2] == tuple(int(p) for p in version.split(".")):
        return getattr(sys, "_base_executable", sys.executable)
    return None


def ensure(spec: EnvSpec, log: Callable[[str], None], *, stamp_extra: str = "") -> Path:
    """Make the environment if missing or stale; return its interpreter.

    ``stamp_extra`` is recorded with the requirements: when it changes (a
    digest of a local source tree, say) the environment is remade.

    Raises
    ------
    RuntimeError
        No interpreter of the version, or an install failed (the message
        holds pip's output).
    """
    python = find_python(spec.python_version)
    if python is None:
        raise RuntimeError(f"no Python {spec.python_version} interpreter found")
    target = VENVS / spec.name
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stamp = f"{version}\n" + "\n".join(spec.requirements) + "\n" + stamp_extra
    stamp_file = target / ".bench-stamp"
    env_python = target / "bin" / "python"
    if stamp_file.is_file() and stamp_file.read_text() == stamp and env_python.exists():
        return env_python
    log(f"creating {target} (Python {version}: {' '.join(spec.requirements)})")
    shutil.rmtree(target, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    steps = [
        [python, "-m", "venv", str(target)],
        [str(env_python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(env_python), "-m", "pip", "install", "--quiet", *spec.requirements],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [
                line
                for line in (done.stdout + done.stderr).splitlines()
                if "is ignored: it is neither a file nor a directory" not in line
            ]
            raise RuntimeError(
                f"{' '.join(step[:4])}... failed ({done.returncode}):\n" + "\n".join(lines[-30:])
            )
    stamp_file.write_text(stamp)
    return env_python


def package_version(python: Path | str, distribution: str) -> Optional[str]:
    """Version of an installed distribution in an environment, or `None`."""
    code = (
        "import importlib.metadata as m, sys\n"
        "try:\n    print(m.version(sys.argv[1]))\n"
        "except m.PackageNotFoundError:\n    pass\n"
    )
    done = subprocess.run(
        [str(python), "-c", code, distribution], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def python_version(python: Path | str) -> str:
    done = subprocess.run(
        [str(python), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()

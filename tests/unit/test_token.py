"""Token lookup: our settings first, then where Rubin's labs keep the token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from nublado_sync import NubladoUsageError, find_token
from nublado_sync._token import RUBIN_MOUNTS_DEFAULT, find_token_and_source


def mounts(tmp_path: Path, secrets: str = "", environment: str = "") -> Dict[str, str]:
    root = tmp_path / "mounts"
    if secrets:
        (root / "secrets").mkdir(parents=True)
        (root / "secrets" / "token").write_text(secrets)
    if environment:
        (root / "environment").mkdir(parents=True)
        (root / "environment" / "ACCESS_TOKEN").write_text(environment)
    return {"NUBLADO_RUNTIME_MOUNTS_DIR": str(root)}


def test_order_of_places(tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.write_text("from-option\n")
    named = tmp_path / "named"
    named.write_text("  from-named-file  \n")
    env = {
        **mounts(tmp_path, secrets="from-secrets\n", environment="from-environment\n"),
        "ACCESS_TOKEN": "from-access-token",
        "NUBLADO_TOKEN": "from-variable",
        "NUBLADO_TOKEN_FILE": str(named),
    }
    assert find_token(own, environ=env) == "from-option"
    assert find_token(environ=env) == "from-named-file"
    del env["NUBLADO_TOKEN_FILE"]
    assert find_token(environ=env) == "from-variable"
    del env["NUBLADO_TOKEN"]
    # Rubin's order (lsst.rsp.get_access_token): the refreshed files first.
    assert find_token_and_source(environ=env) == (
        "from-secrets",
        f"the file {tmp_path / 'mounts' / 'secrets' / 'token'}",
    )
    (tmp_path / "mounts" / "secrets" / "token").unlink()
    assert find_token(environ=env) == "from-environment"
    (tmp_path / "mounts" / "environment" / "ACCESS_TOKEN").unlink()
    assert find_token_and_source(environ=env) == ("from-access-token", "ACCESS_TOKEN")


def test_default_mounts_directory() -> None:
    assert RUBIN_MOUNTS_DEFAULT == "/opt/lsst/software/jupyterlab"
    with pytest.raises(NubladoUsageError) as info:
        find_token(environ={})
    # Outside a lab nothing is found; the message says what to set.
    message = str(info.value)
    assert "NUBLADO_TOKEN" in message
    assert "NUBLADO_TOKEN_FILE" in message
    assert "/opt/lsst/software/jupyterlab/secrets/token" in message


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "token"
    with pytest.raises(NubladoUsageError) as info:
        find_token(missing, environ={"NUBLADO_TOKEN": "ignored"})
    assert str(missing) in str(info.value)
    assert "No such file or directory" in str(info.value)
    with pytest.raises(NubladoUsageError) as info:
        find_token(environ={"NUBLADO_TOKEN_FILE": str(missing)})
    assert str(missing) in str(info.value)
    assert "NUBLADO_TOKEN_FILE" in str(info.value)


@pytest.mark.parametrize("content", ["", "\n", "  \n\n"])
def test_empty_file_says_empty(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(NubladoUsageError) as info:
        find_token(path, environ={})
    assert (
        str(info.value)
        == f"the token file {path} (--token-file) is empty; it should hold the token"
    )
    # An empty Rubin file is reported too, not skipped in silence.
    env = mounts(tmp_path, secrets=" ")
    with pytest.raises(NubladoUsageError, match="is empty"):
        find_token(environ={**env, "ACCESS_TOKEN": "t"})


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NubladoUsageError, match="is not text"):
        find_token(path, environ={})


def test_tilde_and_real_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "token").write_text("tilde-token")
    assert find_token("~/token", environ={}) == "tilde-token"
    for name in ("NUBLADO_TOKEN_FILE", "NUBLADO_RUNTIME_MOUNTS_DIR", "ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NUBLADO_TOKEN", "from-os-environ")
    assert find_token() == "from-os-environ"
    assert os.environ["NUBLADO_TOKEN"] == "from-os-environ"


def _run_command(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    clean.pop("ACCESS_TOKEN", None)
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nublado_sync", "run", "-c", "print(1)", *args],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_command_names_the_token_file(tmp_path: Path) -> None:
    # Refused before anything starts (the hub URL is a closed port).
    hub = {"NUBLADO_USER": "alice", "NUBLADO_HUB_URL": "http://127.0.0.1:9/"}
    missing = tmp_path / "missing-token"
    run = _run_command(tmp_path, "--token-file", str(missing), **hub)
    assert run.returncode == 2, run.stderr
    assert f"cannot read the token file {missing}" in run.stderr
    assert "No such file or directory" in run.stderr
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    run = _run_command(tmp_path, **hub, NUBLADO_TOKEN_FILE=str(empty))
    assert run.returncode == 2, run.stderr
    assert f"the token file {empty} (from NUBLADO_TOKEN_FILE) is empty" in run.stderr
    assert "no token" not in run.stderr


def test_command_reads_rubin_mounts(tmp_path: Path) -> None:
    # Inside a Rubin lab the command finds the mounted token by itself: the
    # run goes on to the hub (a closed port here), past the token check.
    env = mounts(tmp_path, secrets="rubin-token-value\n")
    run = _run_command(tmp_path, NUBLADO_USER="alice", NUBLADO_HUB_URL="http://127.0.0.1:9/", **env)
    assert "token" not in run.stderr.lower(), run.stderr
    assert run.returncode != 2, run.stderr
    assert "rubin-token-value" not in run.stdout + run.stderr

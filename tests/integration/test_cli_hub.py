"""The nublado-sync command against the real test hub."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ..hub_testbed import TestHub
from .test_cli import CHILD_MAIN, nublado_sync

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _labs_stopped(hub: TestHub) -> Iterator[None]:
    yield
    hub.stop_all()


def env_for(hub: TestHub, user: str) -> dict[str, str]:
    return {"NUBLADO_HUB_URL": hub.url, "NUBLADO_USER": user, "NUBLADO_TOKEN": hub.tokens[user]}


def test_run_spawns_runs_and_stops(hub: TestHub) -> None:
    env = env_for(hub, "alice")
    assert nublado_sync("status", env=env).stdout == "stopped\n"
    result = nublado_sync(
        "run",
        "--image-class",
        "latest-daily",
        "--size",
        "Small",
        "--stop",
        "-c",
        "import os; print(os.environ['JUPYTERHUB_USER'])",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alice\n"
    assert hub.spawn_forms("alice")[-1] == {"image_class": ["latest-daily"], "size": ["Small"]}
    # Without a terminal, progress is logged as lines (cron).
    assert "Spawn progress" in result.stderr
    stop = nublado_sync("stop", "--wait", env=env)
    assert stop.returncode == 0, stop.stderr
    assert nublado_sync("status", "--json", env=env).stdout.strip() == json.dumps(
        {"user": "alice", "running": False}
    )


def test_spawn_status_stop(hub: TestHub) -> None:
    env = env_for(hub, "bob")
    spawn = nublado_sync("spawn", "--image-tag", "w_2026_40", "--log-json", env=env)
    assert spawn.returncode == 0, spawn.stderr
    for line in spawn.stderr.splitlines():
        json.loads(line)  # every log line is JSON
    assert nublado_sync("status", env=env).stdout == "running\n"
    again = nublado_sync("spawn", env=env)
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert nublado_sync("stop", "--wait", env=env).returncode == 0
    assert nublado_sync("status", env=env).stdout == "stopped\n"


def test_spawn_failure_exit_status(hub: TestHub) -> None:
    hub.set_spawn_behaviour("carol", fail=True, delay=1.5)
    try:
        result = nublado_sync("spawn", env=env_for(hub, "carol"))
    finally:
        hub.set_spawn_behaviour("carol")
    assert result.returncode == 4, result.stderr


def test_spawn_timeout_exit_status(hub: TestHub) -> None:
    hub.set_spawn_behaviour("carol", delay=60)
    try:
        result = nublado_sync("spawn", "--spawn-timeout", "2", env=env_for(hub, "carol"))
    finally:
        hub.set_spawn_behaviour("carol")
    assert result.returncode == 3, result.stderr


def test_bad_token_exit_status(hub: TestHub) -> None:
    env = env_for(hub, "alice")
    env["NUBLADO_TOKEN"] = "wrong-token"
    result = nublado_sync("status", env=env)
    assert result.returncode == 5
    assert "Status 40" in result.stderr


def test_ctrl_c_in_a_lab_leaves_no_session(hub: TestHub) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.update(env_for(hub, "bob"))
    code = "print('started', flush=True)\nimport time\ntime.sleep(120)"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "run", "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "started\n"
        assert len(hub.lab_sessions("bob")) == 1
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert hub.lab_sessions("bob") == []


def test_run_waits_for_a_lab_still_starting(hub: TestHub) -> None:
    env = env_for(hub, "carol")
    hub.set_spawn_behaviour("carol", delay=3)
    try:
        spawn = nublado_sync("spawn", "--no-wait", env=env)
        assert spawn.returncode == 0, spawn.stderr
        result = nublado_sync("run", "--stop", "-c", "print('waited')", env=env)
    finally:
        hub.set_spawn_behaviour("carol")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "waited\n"
    # --stop leaves alone a lab this command did not spawn.
    assert nublado_sync("status", env=env).stdout == "running\n"
    always = nublado_sync("run", "--stop-always", "-c", "print(1)", env=env)
    assert always.returncode == 0, always.stderr
    assert nublado_sync("stop", "--wait", env=env).returncode == 0


def test_fast_spawn_failure_is_a_spawn_failure(hub: TestHub) -> None:
    # A spawn failing within a second makes the hub answer the form with 500.
    hub.set_spawn_behaviour("carol", fail=True)
    try:
        result = nublado_sync("run", "-c", "print(1)", env=env_for(hub, "carol"))
    finally:
        hub.set_spawn_behaviour("carol")
    assert result.returncode == 4, result.stderr


def test_status_json_on_failure(hub: TestHub) -> None:
    env = env_for(hub, "alice")
    env["NUBLADO_TOKEN"] = "wrong-token"
    result = nublado_sync("status", "--json", env=env)
    assert result.returncode == 5
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["error"]["type"] == "NubladoWebError"


def test_batch_spawns_one_lab_for_many_notebooks(hub: TestHub, tmp_path: Path) -> None:
    env = env_for(hub, "carol")
    # The hub keeps every spawn form of the module's earlier tests.
    forms_before = len(hub.spawn_forms("carol"))
    for name, source in (("a", "print('a')"), ("b", "print('b')"), ("c", "1/0")):
        cell = {"cell_type": "code", "id": name, "metadata": {}, "outputs": [], "source": source}
        (tmp_path / f"{name}.ipynb").write_text(
            json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]})
        )
    result = nublado_sync(
        "run", "--size", "Small", "--jobs", "2", "--json", "--stop", str(tmp_path), env=env
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["passed"] == 2
    assert summary["counts"]["failed"] == 1
    # One spawn for the three notebooks; each had its own kernel, all gone.
    assert len(hub.spawn_forms("carol")) == forms_before + 1
    assert nublado_sync("status", env=env).stdout == "stopped\n"


def test_bad_notebook_refused_before_any_spawn(hub: TestHub, tmp_path: Path) -> None:
    # Bad input is refused before the lab is spawned (issue 13).
    env = env_for(hub, "carol")
    bad = tmp_path / "old.ipynb"
    bad.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}))
    notebook = tmp_path / "ok.ipynb"
    notebook.write_text(
        json.dumps(
            {
                "nbformat": 4,
                "nbformat_minor": 5,
                "metadata": {},
                "cells": [
                    {
                        "cell_type": "code",
                        "id": "a",
                        "metadata": {},
                        "source": "1",
                        "outputs": [],
                        "execution_count": None,
                    }
                ],
            }
        )
    )
    for args in ([str(bad)], [str(notebook), "-p", "no good", "1"]):
        result = nublado_sync("run", *args, env=env)
        assert result.returncode == 2, result.stderr
    # Nothing was spawned (the runs did not stop anything either).
    assert nublado_sync("status", env=env).stdout == "stopped\n"

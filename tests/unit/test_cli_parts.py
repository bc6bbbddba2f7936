"""Pieces of the command that need no server: progress display, exit statuses."""

from __future__ import annotations

import datetime
import io
import subprocess
import sys

import pytest

from nublado_sync import (
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    NubladoUsageError,
    NubladoWebError,
    NubladoWebSocketError,
    SpawnProgressMessage,
)
from nublado_sync._cli import ExitCode, _exit_code, _ProgressDisplay


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **kw: object) -> None:
        self.events.append((event, kw))


def test_progress_bar_on_a_terminal() -> None:
    stream, logger = Terminal(), Recorder()
    display = _ProgressDisplay(logger, stream)  # type: ignore[arg-type]
    display(SpawnProgressMessage(50, "Pulling image", ready=False))
    display(SpawnProgressMessage(100, "Server ready", ready=True))
    text = stream.getvalue()
    assert "\r[" + "#" * 15 + "-" * 15 + "]  50% Pulling image" in text
    assert text.endswith("\n")
    assert logger.events == []


def test_progress_lines_without_a_terminal() -> None:
    stream, logger = io.StringIO(), Recorder()
    display = _ProgressDisplay(logger, stream)  # type: ignore[arg-type]
    display(SpawnProgressMessage(50, "Pulling image", ready=False))
    assert stream.getvalue() == ""
    assert logger.events == [("Spawn progress", {"progress": 50, "message": "Pulling image"})]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (NubladoExecutionError("u"), ExitCode.CODE_ERROR),
        (NubladoKernelDiedError("u"), ExitCode.CODE_ERROR),
        (NubladoExecutionTimeoutError("u", timeout=datetime.timedelta(1)), ExitCode.TIMEOUT),
        (NubladoSpawnTimeoutError("slow", []), ExitCode.TIMEOUT),
        (NubladoSpawnError("failed", []), ExitCode.SPAWN_FAILED),
        (NubladoUsageError("bad"), ExitCode.USAGE),
        (NubladoWebError("Status 403"), ExitCode.WEB_ERROR),
        (NubladoRedirectError("Redirect loop", "http://x/"), ExitCode.WEB_ERROR),
        (NubladoWebSocketError("closed"), ExitCode.WEB_ERROR),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    assert _exit_code(exc) == code


def test_help_and_version() -> None:
    for args in (["--help"], ["run", "--help"], ["--version"]):
        result = subprocess.run(
            [sys.executable, "-m", "nublado_sync", *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout


def test_reconnects_option() -> None:
    from nublado_sync import ReconnectPolicy
    from nublado_sync._cli import _DEFAULT_RECONNECTS, _parser, _session_options

    assert ReconnectPolicy().max_attempts == _DEFAULT_RECONNECTS
    parser = _parser()
    assert _session_options(parser.parse_args(["run", "-c", "1"])) == {}
    assert _session_options(parser.parse_args(["run", "--reconnects", "0", "-c", "1"])) == {
        "reconnect": None
    }
    options = _session_options(parser.parse_args(["run", "--reconnects", "3", "-c", "1"]))
    assert options == {"reconnect": ReconnectPolicy(max_attempts=3)}
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--reconnects", "-1", "-c", "1"])


def test_open_timeout_option() -> None:
    from nublado_sync._cli import _parser, _session_options

    parser = _parser()
    options = _session_options(
        parser.parse_args(["run", "--open-timeout", "120", "--reconnects", "0", "-c", "1"])
    )
    assert options == {
        "websocket_open_timeout": datetime.timedelta(seconds=120),
        "reconnect": None,
    }
    for bad in ("0", "-5", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args(["run", "--open-timeout", bad, "-c", "1"])


def test_a_session_that_did_not_open_in_time_names_the_option() -> None:
    from nublado_sync import NubladoTimeoutError
    from nublado_sync._cli_messages import advice

    opening = NubladoTimeoutError("Timed out attempting to open WebSocket to lab session", "ann")
    for mode in ("hub", "server", "local"):
        line = advice(opening, mode)
        assert line is not None
        assert "--open-timeout" in line
    # Other timeouts keep their own advice (or none).
    other = NubladoTimeoutError("Timed out waiting for the lab to stop", "ann")
    assert "--open-timeout" not in (advice(other, "hub") or "")

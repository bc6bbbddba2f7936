"""What importing the package and starting the command costs, and the lazy pieces behind it.

A cron job starts cold, and a command-line run's first output waits for
everything imported before its first request to the lab: these tests pin
down that the heavy modules are not among them.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from typing import Any, Dict, List

import pytest

import nublado_sync
from nublado_sync._logging import DeferredLogger, debug_enabled, default_logger

HEAVY = [
    "requests",
    "structlog",
    "websocket",
    "asyncio",
    "nublado_sync._session",
    "papermill",
    "nbformat",
]


def _modules_after(code: str) -> List[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded: List[str] = json.loads(done.stdout.splitlines()[-1])
    return loaded


@pytest.mark.parametrize("code", ["import nublado_sync", "import nublado_sync._cli"])
def test_import_loads_no_heavy_module(code: str) -> None:
    loaded = _modules_after(code)
    assert [m for m in HEAVY if m in loaded] == []


def test_pytest_plugin_loads_no_mock() -> None:
    # pytest loads the plugin in every run of an environment with the
    # package; the mock (an HTTP server, the fake kernel) loads only for the
    # fixture.
    loaded = _modules_after("import nublado_sync.testing.pytest_plugin")
    assert [m for m in loaded if m.startswith("nublado_sync.testing._")] == []
    assert [m for m in HEAVY if m in loaded] == []


def test_client_without_the_kit_has_no_response_observer() -> None:
    # The kit hooks the HTTP layer only once a mock runs in the process.
    code = (
        "import nublado_sync.testing.pytest_plugin\n"
        "from nublado_sync import NubladoClient, _http\n"
        "NubladoClient('alice', 'token-of-alice', hub_url='http://127.0.0.1:9/').close()\n"
        "print(len(_http.response_observers))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["0"]


def test_testing_names_resolve() -> None:
    import nublado_sync.testing as testing

    for name in testing.__all__:
        assert getattr(testing, name) is not None
    assert set(testing.__all__) <= set(dir(testing))
    with pytest.raises(AttributeError):
        testing.NoSuchThing  # noqa: B018


def test_debug_message_by_default_logger_loads_no_structlog() -> None:
    code = (
        "from nublado_sync._logging import default_logger\n"
        "default_logger().bind(user='u').debug('dropped', n=1)"
    )
    assert "structlog" not in _modules_after(code)


def test_warning_by_default_logger_is_printed() -> None:
    code = (
        "from nublado_sync._logging import default_logger\n"
        "default_logger().bind(user='someone').warning('Something happened', n=1)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "event='Something happened'" in done.stderr
    assert "user='someone'" in done.stderr
    assert "n=1" in done.stderr


def test_every_public_name_resolves() -> None:
    for name in nublado_sync.__all__:
        assert getattr(nublado_sync, name) is not None
    assert set(nublado_sync.__all__) <= set(dir(nublado_sync))
    assert nublado_sync.NubladoError.__module__.startswith("nublado_sync")


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        nublado_sync.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from nublado_sync import no_such_name")


class _Recorder:
    """A stand-in for a structlog logger: records bound values and calls."""

    def __init__(self, calls: List[Any], context: Dict[str, Any]) -> None:
        self.calls = calls
        self.context = context

    def bind(self, **values: Any) -> _Recorder:
        return _Recorder(self.calls, {**self.context, **values})

    def _record(self, method: str, event: str, **kw: Any) -> None:
        self.calls.append((method, event, {**self.context, **kw}))

    def debug(self, event: str, **kw: Any) -> None:
        self._record("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._record("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._record("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._record("error", event, **kw)


def test_deferred_logger_builds_once_on_first_message_that_passes() -> None:
    calls: List[Any] = []
    builds: List[int] = []

    def build() -> _Recorder:
        builds.append(1)
        return _Recorder(calls, {})

    root = DeferredLogger(build, lambda level: level >= logging.INFO)
    session = root.bind(user="u").bind(session="s")
    session.debug("dropped", x=1)
    assert builds == []
    assert not debug_enabled(session)
    session.info("kept", x=2)
    root.warning("plain")
    session.bind(more=3).error("bound", x=4)
    assert builds == [1]
    assert calls == [
        ("info", "kept", {"user": "u", "session": "s", "x": 2}),
        ("warning", "plain", {}),
        ("error", "bound", {"user": "u", "session": "s", "more": 3, "x": 4}),
    ]


def test_default_logger_follows_the_standard_library_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = default_logger()
    with caplog.at_level(logging.DEBUG, logger="nublado_sync"):
        assert debug_enabled(logger)
        logger.bind(user="u").debug("Seen at debug", n=5)
    assert any("Seen at debug" in r.getMessage() for r in caplog.records)
    with caplog.at_level(logging.WARNING, logger="nublado_sync"):
        assert not debug_enabled(logger)


def test_session_does_not_import_the_notebook_runner() -> None:
    # Imports point one way: the runner uses the session, never the reverse.
    loaded = _modules_after("import nublado_sync._session, nublado_sync._session_manager")
    assert [m for m in loaded if m.startswith("nublado_sync._notebooks")] == []

"""Exception formats, pickling and redaction."""

from __future__ import annotations

import datetime
import pickle

import pytest

from nublado_sync import (
    CodeContext,
    ExecutionResult,
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoTimeoutError,
    NubladoWebError,
    NubladoWebSocketError,
)
from nublado_sync._redact import redact_body, redact_secrets, redact_url


def test_base_defaults() -> None:
    exc = NubladoError("boom", "alice")
    assert str(exc) == "boom"
    assert exc.user == "alice"
    assert exc.context == CodeContext()
    assert exc.failed_at.tzinfo is not None
    assert exc.started_at is None


def test_execution_error_formats() -> None:
    exc = NubladoExecutionError(
        "alice", code="1/0", error="\x1b[31mZeroDivisionError\x1b[0m", status="error"
    )
    assert str(exc) == "alice: running code '1/0' failed\nError: ZeroDivisionError"
    nb = CodeContext(notebook="a.ipynb", cell="c1")
    exc = NubladoExecutionError("alice", code="x", context=nb, status="aborted")
    assert str(exc) == "alice: cell c1 of notebook a.ipynb failed (status: aborted)\nCode: x"
    exc = NubladoExecutionError("alice")
    assert str(exc) == "alice: running code failed"


def test_timeout_error_format() -> None:
    result = ExecutionResult(code="loop", stdout="partial")
    exc = NubladoExecutionTimeoutError(
        "alice", code="loop", timeout=datetime.timedelta(seconds=2.5), result=result
    )
    assert exc.message == "Code execution timed out after 2.50s"
    assert str(exc).startswith("alice: running code 'loop' timed out")
    assert exc.output == "partial"
    assert isinstance(exc, NubladoTimeoutError)


@pytest.mark.parametrize(
    "exc",
    [
        NubladoError("m", "u", context=CodeContext(node="n")),
        NubladoExecutionError(
            "u", code="c", error="e", status="error", result=ExecutionResult("c")
        ),
        NubladoKernelDiedError("u", code="c", status="dead"),
        NubladoExecutionTimeoutError("u", code="c", timeout=datetime.timedelta(seconds=1)),
        NubladoRedirectError("Redirect loop", "http://h/x?state=s3cret", "u"),
        NubladoSpawnError("failed", ["a", "b"], "u"),
        NubladoWebError(
            "Status 500 from GET http://h/",
            "u",
            body="oops",
            method="GET",
            status=500,
            url="http://h/",
        ),
        NubladoWebSocketError("closed", "u", code=1006),
    ],
)
def test_pickle_round_trip(exc: NubladoError) -> None:
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.__dict__ == exc.__dict__


def test_web_error_format_and_redaction() -> None:
    page = 'window.x = {xsrf_token: "2|abc|def", other: 1}'
    exc = NubladoWebError(
        "Status 403 from POST http://h/hub/spawn?state=abc",
        "u",
        body=page,
        method="POST",
        status=403,
        url="http://h/hub/spawn?state=abc",
    )
    assert "2|abc|def" not in str(exc)
    assert "state=abc" not in str(exc)
    assert str(exc) == (
        "Status 403 from POST http://h/hub/spawn?state=<redacted>\nBody:\n"
        'window.x = {xsrf_token: "<redacted>", other: 1}'
    )


def test_websocket_error_prefix() -> None:
    exc = NubladoWebSocketError("closed", "u")
    assert str(exc) == "Error talking to lab WebSocket: closed"


def test_spawn_error_without_message() -> None:
    assert str(NubladoSpawnError("", [])) == "No output from spawn attempt"


def test_redact_url_encoded_state() -> None:
    url = (
        "http://h/hub/login?next=%2Fhub%2Fapi%2Foauth2%2Fauthorize%3Fclient_id%3Dx"
        "%26response_type%3Dcode%26state%3DSECRET1%26code_challenge%3DSECRET2"
    )
    clean = redact_url(url)
    assert "SECRET1" not in clean
    assert "SECRET2" not in clean
    assert "client_id%3Dx" in clean


def test_redact_secrets_is_literal() -> None:
    secret = "a.b*c(d)"
    assert redact_secrets(f"x {secret} y axbbbcd", [secret, None]) == "x <redacted> y axbbbcd"


def test_redact_hidden_input() -> None:
    html = '<input type="hidden" name="_xsrf" value="TOKENVALUE"/>'
    assert "TOKENVALUE" not in redact_body(html)


def test_long_code_is_quoted_by_its_first_line() -> None:
    # A failing 201-line file must not be echoed whole: the first line and
    # a count, the traceback (``error``) says where it failed.
    code = "import os\n" + "x = 1\n" * 199 + "1/0\n"
    exc = NubladoExecutionError("alice", code=code, error="ZeroDivisionError")
    assert str(exc) == (
        "alice: running code 'import os' (and 200 more lines) failed\nError: ZeroDivisionError"
    )
    assert exc.code == code


def test_long_cell_is_quoted_by_two_lines() -> None:
    context = CodeContext(notebook="a.ipynb", cell="c1")
    code = "a = 1\nb = '" + "x" * 300 + "'\nc = 3\nd = 4\n"
    exc = NubladoExecutionError("alice", code=code, context=context)
    lines = str(exc).splitlines()
    assert lines[1] == "Code: a = 1"
    assert lines[2] == "b = '" + "x" * 94 + "…"
    assert lines[3] == "… (2 more lines)"
    assert len(lines) == 4

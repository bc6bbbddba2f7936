"""What a person reads when something fails: failures in words, arguments checked alike."""

from __future__ import annotations

import datetime
import socket
from typing import Any, Callable

import pytest

from nublado_sync import (
    NubladoClient,
    NubladoUsageError,
    open_lab_session,
)
from nublado_sync._arguments import MIN_MESSAGE_SIZE
from nublado_sync._cli_messages import HUB, LOCAL, SERVER, advice, interrupted
from nublado_sync._exceptions import NubladoWebError
from nublado_sync._reasons import one_line, server_message, status_explanation

JUPYTER_404 = (
    """<!DOCTYPE HTML>
<html>
<head><title>404 Not Found</title><script>var x = 1;</script></head>
<body>
<div id="header" role="navigation"><a href="/">Jupyter Server</a></div>
<div class="error">
    <h1>404 : Not Found</h1>
    <p>You are requesting a page that does not exist!</p>
</div>
"""
    + "<p>filler</p>\n" * 100
    + "</body></html>"
)


def test_html_error_page_shortened_to_its_message() -> None:
    assert server_message(JUPYTER_404, "text/html") == (
        "404 : Not Found You are requesting a page that does not exist!"
    )


def test_html_page_without_error_block_gives_its_title() -> None:
    page = "<html><head><title>Bad Gateway</title></head><body>" + "x " * 2000 + "</body></html>"
    assert server_message(page, "text/html") == "Bad Gateway"


def test_json_error_gives_its_message() -> None:
    body = '{"status": 403, "message": "\'_xsrf\' argument missing from POST"}'
    assert server_message(body, "application/json") == "'_xsrf' argument missing from POST"


def test_plain_body_cut_at_a_word() -> None:
    text = server_message("word " * 200)
    assert text is not None
    assert len(text) <= 300
    assert text.endswith("word…")


def test_one_line_squeezes_and_cuts_at_words() -> None:
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("\x1b[31mred\x1b[0m") == "red"
    notice = "IOPub data rate exceeded. The Jupyter server will temporarily stop"
    assert one_line(notice, 40) == "IOPub data rate exceeded. The Jupyter…"


@pytest.mark.parametrize(
    ("status", "message", "words"),
    [
        (401, None, "the token was refused"),
        (403, "'_xsrf' argument missing from POST", "the token was refused"),
        (403, "Forbidden", "access refused"),
        (403, "403 : Forbidden Unknown token", "the token was refused"),
        (503, None, "unavailable"),
        (404, None, None),
    ],
)
def test_status_explanations(status: int, message: str | None, words: str | None) -> None:
    explanation = status_explanation(status, message)
    if words is None:
        assert explanation is None
    else:
        assert explanation is not None
        assert words in explanation


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_closed_port_message_names_the_server_and_the_setting() -> None:
    port = _refused_port()
    hub = f"http://127.0.0.1:{port}/nb"
    client = NubladoClient("alice", "a-token-of-alice", hub_url=hub)
    with client, pytest.raises(NubladoWebError) as info:
        client.auth_to_hub()
    text = str(info.value)
    assert text == (f"Cannot connect to 127.0.0.1:{port}: connection refused (GET {hub}/hub/home)")
    assert "Max retries" not in text
    assert "HTTPConnectionPool" not in text
    assert advice(info.value, HUB) == (
        "Check --hub-url or NUBLADO_HUB_URL, and that the server is running and reachable."
    )
    assert advice(info.value, SERVER) is not None
    assert "--server-url" in str(advice(info.value, SERVER))


TD = datetime.timedelta


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: NubladoClient("a", "token-of-a", timeout=5), "timeout must be a datetime"),
        (lambda: open_lab_session("http://x/", "token-of-a", timeout=5), "timeout must be a"),
        (
            lambda: open_lab_session("http://x/", "token-of-a", websocket_open_timeout=1.5),
            "websocket_open_timeout must be a datetime.timedelta, not float",
        ),
        (lambda: NubladoClient("a", "token-of-a", timeout=TD(0)), "timeout must be positive"),
        (lambda: NubladoClient("a", "t"), "too short to be a valid token"),
        (lambda: open_lab_session("http://x/", "short"), "too short to be a valid token"),
        (lambda: NubladoClient("a", "token with space"), "white space"),
        (
            lambda: NubladoClient("a", "token-of-a", hub_url="ftp://hub/"),
            "hub_url must be an http(s) URL, not 'ftp://hub/'",
        ),
        (lambda: open_lab_session("hub.example.org", "token-of-a"), "not 'hub.example.org'"),
        (
            lambda: open_lab_session("http://x/", "token-of-a", max_websocket_size=1000),
            f"max_websocket_size must be at least {MIN_MESSAGE_SIZE} bytes, not 1000",
        ),
        (
            lambda: NubladoClient("a", "token-of-a", hub_url="http://x/").lab_session(
                max_websocket_size=1000
            ),
            "max_websocket_size must be at least",
        ),
        (
            lambda: NubladoClient("a", "token-of-a", hub_url="http://x/").wait_for_lab_stopped(
                10  # type: ignore[arg-type]
            ),
            "timedelta(seconds=10)",
        ),
    ],
)
def test_public_arguments_checked_alike(call: Callable[[], Any], words: str) -> None:
    # Every bad argument is refused at the call, before any request, with
    # the same exception and a message naming the argument.
    with pytest.raises(NubladoUsageError) as info:
        call()
    assert words in str(info.value)


def test_short_token_message_does_not_show_it() -> None:
    with pytest.raises(NubladoUsageError) as info:
        NubladoClient("a", "Ma")
    assert "Ma" not in str(info.value)


@pytest.mark.parametrize(
    ("what", "started", "local", "text"),
    [
        (
            "Interrupted",
            True,
            False,
            "Interrupted; the kernel was interrupted and the session deleted",
        ),
        ("Interrupted", False, False, "Interrupted before any code ran"),
        (
            "Hung up",
            False,
            True,
            "Hung up before any code ran; the local Jupyter server was stopped",
        ),
    ],
)
def test_interrupt_message_claims_only_what_happened(
    what: str, started: bool, local: bool, text: str
) -> None:
    assert interrupted(what, started, local) == text
    assert LOCAL == "local"


def test_help_gives_units_defaults_and_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    from nublado_sync._cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "deadline of the code, or of each notebook cell, in seconds (default: none)" in text
    assert "timeout of each HTTP request, in seconds (default: 30)" in text
    assert "lab size (default: Large)" in text
    assert "default: lsst on a hub; the server's default kernel with --local or --server-url" in (
        text
    )
    for status in ("0 success", "2 usage error", "5 connection", "129 hung up", "143 terminated"):
        assert status in text


def test_a_dropped_kernel_connection_names_the_reconnect_option() -> None:
    from nublado_sync import NubladoWebSocketError

    refused = NubladoWebSocketError("refused", "alice", code=404)
    assert not refused.dropped
    assert advice(refused, SERVER) is None
    dropped = NubladoWebSocketError("The kernel WebSocket was reset", "alice")
    dropped.dropped = True
    assert "--reconnects" in str(advice(dropped, HUB))


def test_connection_failures_in_words() -> None:
    import errno

    from nublado_sync._reasons import connection_failure

    reset = ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    assert connection_failure(reset) == (
        "the connection was reset (by the lab, a proxy or the network)"
    )
    other = OSError(errno.EIO, "Input/output error")
    assert connection_failure(other) == "the connection failed: Input/output error"
    assert "OSError" not in connection_failure(OSError("odd"))

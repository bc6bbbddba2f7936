"""Error reports: Slack Block Kit messages and Sentry events, as upstream makes them."""

from __future__ import annotations

import datetime
import json
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from nublado_sync import (
    CodeContext,
    NubladoError,
    NubladoExecutionError,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoSpawnFormError,
    NubladoWebError,
    NubladoWebSocketError,
    SlackCodeBlock,
    SlackTextBlock,
    SlackTextField,
    sentry_before_send,
)

UTC = datetime.timezone.utc
STARTED = datetime.datetime(2026, 12, 2, 20, 1, 2, 345000, tzinfo=UTC)
FAILED = datetime.datetime(2026, 12, 2, 20, 1, 9, tzinfo=UTC)
FULL_CONTEXT = CodeContext(
    node="node-7", image="lab:w_2026_48", notebook="checks.ipynb", cell="c-1", cell_number="14"
)


def execution_error(context: Optional[CodeContext] = None) -> NubladoExecutionError:
    return NubladoExecutionError(
        "alice",
        code="1 / 0",
        context=context,
        error="\x1b[31mZeroDivisionError\x1b[0m: division by zero",
        status="error",
        started_at=STARTED,
        failed_at=FAILED,
    )


def test_execution_error_to_slack() -> None:
    message = execution_error().to_slack()
    assert message.message == "Error while running code"
    assert message.blocks == []
    assert [(f.heading, f.text) for f in message.fields] == [
        ("Started at", "2026-12-02 20:01:02.345"),
        ("Failed at", "2026-12-02 20:01:09"),
        ("Exception type", "NubladoExecutionError"),
        ("User", "alice"),
    ]
    error, code = message.attachments
    assert error == SlackCodeBlock("Error", "ZeroDivisionError: division by zero")
    assert code == SlackCodeBlock("Code executed", "1 / 0")


def test_execution_error_with_context_to_slack() -> None:
    message = execution_error(FULL_CONTEXT).to_slack()
    assert message.message == "Error while running `checks.ipynb` cell `c-1`"
    assert message.blocks == [
        SlackTextBlock("Node", "node-7"),
        SlackTextBlock("Cell", "`checks.ipynb` cell `c-1` (14)"),
    ]
    assert message.fields[-1] == SlackTextField("Image", "lab:w_2026_48")
    # Another status than a plain error is named, as in str().
    aborted = NubladoExecutionError("alice", code="x", context=FULL_CONTEXT, status="aborted")
    assert aborted.to_slack().message.endswith("(status: aborted)")


def test_block_kit_json() -> None:
    blocks = execution_error(FULL_CONTEXT).to_slack().to_slack()
    json.dumps(blocks)  # plain JSON, ready to post
    assert blocks["text"] == "Error while running `checks.ipynb` cell `c-1`"
    summary, node, cell, fields = blocks["blocks"]
    assert summary == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": blocks["text"], "verbatim": True},
    }
    assert node["text"]["text"] == "*Node*\nnode-7"
    assert cell["text"]["text"] == "*Cell*\n`checks.ipynb` cell `c-1` (14)"
    assert [f["text"] for f in fields["fields"]][2] == "*Exception type*\nNubladoExecutionError"
    (attachment,) = blocks["attachments"]
    texts = [b["text"]["text"] for b in attachment["blocks"]]
    assert texts == [
        "*Error*\n```\nZeroDivisionError: division by zero\n```",
        "*Code executed*\n```\n1 / 0\n```",
    ]


def test_long_text_keeps_slack_limits() -> None:
    # Slack refuses section text over 3000 characters; a traceback keeps
    # its end, where the error is.
    error = "frame\n" * 2000 + "ValueError: the end"
    exc = NubladoExecutionError("alice", code="x" * 5000, error=error)
    blocks = exc.to_slack().to_slack()
    texts = [b["text"]["text"] for b in blocks["attachments"][0]["blocks"]]
    assert all(len(t) <= 3000 for t in texts)
    assert texts[0].endswith("ValueError: the end\n```")
    assert texts[1].startswith("*Code executed*\n```\n...xxx")


def test_web_error_reports() -> None:
    exc = NubladoWebError(
        "Status 500 from POST http://hub/nb/hub/spawn",
        "alice",
        body="Internal error",
        method="POST",
        status=500,
        url="http://hub/nb/hub/spawn?state=secret-state",
        started_at=STARTED,
    )
    message = exc.to_slack()
    assert message.message == "Status 500 from POST http://hub/nb/hub/spawn"
    assert message.blocks == [
        SlackTextBlock("URL", "POST http://hub/nb/hub/spawn?state=<redacted>")
    ]
    assert message.attachments == [SlackCodeBlock("Response", "Internal error")]
    info = exc.to_sentry()
    # Upstream's tag names, so Sentry searches written for it still match.
    assert info.tags == {
        "httpx_request_method": "POST",
        "httpx_request_url": "http://hub/nb/hub/spawn?state=<redacted>",
        "httpx_request_status": "500",
    }
    assert info.contexts == {"info": {"started_at": "2026-12-02 20:01:02.345"}}
    assert info.attachments == {"httpx_response_body": "Internal error"}


def test_other_reports() -> None:
    redirect = NubladoRedirectError("Redirect loop", "http://hub/user/a/oauth_callback", "a")
    assert redirect.to_sentry().tags == {
        "httpx_request_method": "GET",
        "httpx_request_url": "http://hub/user/a/oauth_callback",
    }
    assert redirect.to_slack().blocks == [
        SlackTextBlock("URL", "GET http://hub/user/a/oauth_callback")
    ]
    spawn = NubladoSpawnError("Spawn failed!", ["Starting", "\x1b[1mSpawn failed!\x1b[0m"], "a")
    assert spawn.to_sentry().attachments == {"spawn_log.txt": "Starting\nSpawn failed!"}
    assert spawn.to_slack().attachments == [SlackCodeBlock("Spawn log", "Starting\nSpawn failed!")]
    socket = NubladoWebSocketError("refused", "a", code=403, body="Forbidden")
    assert socket.to_sentry().tags == {"code": "403"}
    assert socket.to_sentry().attachments == {"body.txt": "Forbidden"}
    assert SlackTextField("Code", "403") in socket.to_slack().fields
    plain = NubladoError("boom")
    assert plain.to_sentry().tags == {}
    assert plain.to_sentry().contexts == {}
    assert [f.heading for f in plain.to_slack().fields] == ["Failed at", "Exception type"]
    form = NubladoSpawnFormError(
        "Spawn failed: the hub answered the spawn form with status 500: boom",
        ["boom"],
        "a",
        method="POST",
        status=500,
        url="http://hub/hub/spawn",
    )
    info = form.to_sentry()
    assert info.attachments["spawn_log.txt"] == "boom"
    assert info.tags["httpx_request_status"] == "500"


class _Captured(Transport):
    """A Sentry transport that keeps envelopes instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: List[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> List[Tuple[Dict[str, Any], Dict[str, bytes]]]:
        found = []
        for envelope in self.envelopes:
            event: Dict[str, Any] = {}
            files: Dict[str, bytes] = {}
            for item in envelope.items:
                if item.headers.get("type") == "event":
                    event = item.payload.json or {}
                elif item.headers.get("type") == "attachment":
                    files[item.headers["filename"]] = item.payload.get_bytes()
            if event:
                found.append((event, files))
        return found


@pytest.fixture
def sentry() -> Iterator[_Captured]:
    transport = _Captured()
    sentry_sdk.init(
        # A DSN is required for events to be made; the transport keeps them.
        dsn="http://public@127.0.0.1:9/1",
        transport=transport,
        before_send=sentry_before_send,
        default_integrations=False,
    )
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: disabled again


def test_sentry_before_send_with_sentry_sdk(sentry: _Captured) -> None:
    try:
        raise execution_error(FULL_CONTEXT)
    except NubladoExecutionError as e:
        sentry_sdk.capture_exception(e)
    try:
        raise ValueError("not ours")
    except ValueError as e:
        sentry_sdk.capture_exception(e)
    sentry_sdk.flush()
    (ours, files), (other, other_files) = sentry.events()
    assert ours["tags"] == {
        "image": "lab:w_2026_48",
        "node": "node-7",
        "notebook": "checks.ipynb",
        "cell": "c-1",
        "cell_number": "14",
    }
    assert ours["contexts"]["info"] == {"started_at": "2026-12-02 20:01:02.345"}
    assert files == {
        "nublado_error.txt": b"ZeroDivisionError: division by zero",
        "nublado_code.txt": b"1 / 0",
    }
    assert ours["exception"]["values"][0]["type"] == "NubladoExecutionError"
    assert "tags" not in other or other["tags"] == {}
    assert other_files == {}

"""The server-sent event parser and the progress events."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nublado_sync import NubladoProtocolError, SpawnProgressMessage
from nublado_sync._sse import SSEParser, iter_events, parse_progress_event

HUB_STREAM = (
    b"\n\n"  # the hub's opening keepalive
    b'data: {"progress": 10, "message": "Pulling image"}\n\n'
    b"\n\n"
    b'data: {"progress": 100, "ready": true, "message": "Server ready", "url": "/user/a/"}\n\n'
)


def test_hub_stream() -> None:
    events = [parse_progress_event(d) for d in iter_events([HUB_STREAM])]
    assert events == [
        SpawnProgressMessage(progress=10, message="Pulling image", ready=False),
        SpawnProgressMessage(progress=100, message="Server ready", ready=True),
    ]


def test_split_anywhere_gives_the_same_events() -> None:
    whole = list(iter_events([HUB_STREAM]))
    for cut in range(len(HUB_STREAM)):
        assert list(iter_events([HUB_STREAM[:cut], HUB_STREAM[cut:]])) == whole
    assert list(iter_events(HUB_STREAM[i : i + 1] for i in range(len(HUB_STREAM)))) == whole


def test_other_fields_comments_and_line_endings() -> None:
    stream = (
        b": comment\r\nevent: progress\r\nid: 7\r\nretry: 100\r\n"
        b"data: a\r\ndata:b\r\n\r\ndata: c\r\r\n"
    )
    assert list(iter_events([stream])) == ["a\nb", "c"]


def test_failed_event() -> None:
    event = parse_progress_event('{"progress": 100, "failed": true, "message": "Spawn failed: x"}')
    assert event.failed
    assert not event.ready


@pytest.mark.parametrize("data", ["", "nope", "[]", '{"progress": "x"}', '{"progress": true}'])
def test_bad_events(data: str) -> None:
    with pytest.raises(NubladoProtocolError):
        parse_progress_event(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_parser_fuzz(chunks: list[bytes]) -> None:
    parser = SSEParser()
    for chunk in chunks:
        for data in parser.feed(chunk):
            assert isinstance(data, str)
            with contextlib.suppress(NubladoProtocolError):
                parse_progress_event(data)

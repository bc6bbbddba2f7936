"""Session options are refused before anything is asked of the server."""

from __future__ import annotations

from typing import Any, Dict

import pytest

from nublado_sync import AckPolicy, NubladoUsageError, ReconnectPolicy, open_lab_session

# Nothing listens there: a request would fail with another error.
NOWHERE = "http://127.0.0.1:9/"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"prompt_acks": "yes"}, "prompt_acks must be"),
        ({"reconnect": 3}, "reconnect must be a ReconnectPolicy"),
        ({"heartbeat_timeout": 60}, "heartbeat_timeout must be a datetime.timedelta"),
        ({"keepalive_intervall": None}, "Unknown session option(s): keepalive_intervall"),
    ],
)
def test_bad_session_option_is_refused_at_once(options: Dict[str, Any], words: str) -> None:
    with pytest.raises(NubladoUsageError) as info:
        open_lab_session(NOWHERE, "a-token-for-the-test", **options)
    assert words in str(info.value)


def test_good_session_options_pass() -> None:
    manager = open_lab_session(
        NOWHERE,
        "a-token-for-the-test",
        prompt_acks=AckPolicy(method="quickack"),
        reconnect=ReconnectPolicy(max_attempts=2),
        keepalive_interval=None,
    )
    assert manager.username

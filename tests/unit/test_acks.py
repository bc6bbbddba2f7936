"""The early-acknowledgement policy, without I/O."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator

import pytest

from nublado_sync import AckPolicy, JupyterLabSession, NubladoUsageError
from nublado_sync._acks import _TCP_QUICKACK, CALLS_IN_FLIGHT


@pytest.fixture
def calls() -> Iterator[None]:
    """Restore the process's count of calls in flight after the test."""
    before = CALLS_IN_FLIGHT.count
    yield
    CALLS_IN_FLIGHT.count = before


def test_acks_are_due_up_to_the_limit(calls: None) -> None:
    policy = AckPolicy(max_calls=2)
    CALLS_IN_FLIGHT.count = 0
    CALLS_IN_FLIGHT.enter()
    CALLS_IN_FLIGHT.enter()
    assert policy.due()
    CALLS_IN_FLIGHT.enter()
    assert not policy.due()
    CALLS_IN_FLIGHT.leave()
    assert policy.due()
    assert CALLS_IN_FLIGHT.count == 2


def test_no_limit_is_always_due_and_off_is_never_active(calls: None) -> None:
    CALLS_IN_FLIGHT.count = 10_000
    assert AckPolicy(max_calls=None).due()
    assert not AckPolicy().due()
    assert AckPolicy().active
    assert not AckPolicy.off().active
    # Where the system call does not exist, that method does nothing.
    assert AckPolicy(method="quickack").active == (_TCP_QUICKACK is not None)


def test_policy_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AckPolicy().method = "quickack"  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "ping"},
        {"method": None},
        {"max_calls": -1},
        {"max_calls": 1.5},
        {"max_calls": True},
    ],
)
def test_policy_refuses_bad_values(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(NubladoUsageError, match="AckPolicy"):
        AckPolicy(**kwargs)


def test_session_refuses_a_bad_prompt_acks_before_touching_the_socket() -> None:
    with pytest.raises(NubladoUsageError, match="prompt_acks must be"):
        JupyterLabSession(
            username="someone",
            session_id="s",
            socket=None,  # type: ignore[arg-type]
            prompt_acks="yes",  # type: ignore[arg-type]
        )

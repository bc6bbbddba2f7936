"""The reconnect policy and the continuity check, without I/O."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Iterable

import pytest

from nublado_sync import NubladoUsageError, ReconnectPolicy
from nublado_sync._reconnect import Continuity


def test_policy_backoff_grows_to_its_cap() -> None:
    policy = ReconnectPolicy(jitter=0)
    assert [policy.delay(n) for n in range(1, 9)] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.worst_case() == 15.75


def test_policy_jitter_only_shortens() -> None:
    policy = ReconnectPolicy(jitter=0.5)
    for _ in range(200):
        assert 0.5 <= policy.delay(4) <= 1.0


def test_policy_is_immutable() -> None:
    policy = ReconnectPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": True},
        {"max_attempts": 2.5},
        {"first_delay": 1},
        {"max_delay": -datetime.timedelta(seconds=1)},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_policy_refuses_bad_values(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(NubladoUsageError):
        ReconnectPolicy(**kwargs)


def ids(numbers: Iterable[int]) -> list:  # type: ignore[type-arg]
    return [f"a1b2-c3_4242_{n}" for n in numbers]


def test_no_reconnect_no_loss() -> None:
    continuity = Continuity()
    for msg_id in ids(range(10)):
        assert not continuity.seen(msg_id)
    assert not continuity.lost()


def test_replayed_gap_is_complete_and_duplicates_dropped() -> None:
    continuity = Continuity()
    for msg_id in ids(range(5)):
        continuity.seen(msg_id)
    continuity.dropped()
    # A server that replays may send one already seen again: dropped.
    assert continuity.seen(ids(range(4, 5))[0])
    for msg_id in ids(range(5, 9)):
        assert not continuity.seen(msg_id)
        continuity.ours(msg_id)
    assert not continuity.lost()
    assert continuity.reconnects == 1


def test_numbers_missing_after_a_drop_mean_loss() -> None:
    continuity = Continuity()
    for msg_id in ids(range(5)):
        continuity.seen(msg_id)
    continuity.dropped()
    for msg_id in ids(range(8, 10)):
        continuity.seen(msg_id)
        continuity.ours(msg_id)
    assert continuity.lost()
    assert continuity.missing() == [5, 6, 7]


def test_numbers_after_the_calls_last_message_do_not_count() -> None:
    # The call's last message is 7; 8 (the barrier's busy status, or the
    # server's own nudge) is still on its way, 9 has overtaken it.
    continuity = Continuity()
    for msg_id in ids(range(5)):
        continuity.seen(msg_id)
    continuity.dropped()
    for msg_id in ids([5, 6, 7, 9]):
        continuity.seen(msg_id)
    for msg_id in ids(range(5, 8)):
        continuity.ours(msg_id)
    assert not continuity.lost()
    assert continuity.missing() == []
    # The same gap inside the call's own numbers is a loss.
    continuity.ours(ids(range(9, 10))[0])
    assert continuity.lost()
    assert continuity.missing() == [8]


def test_ids_without_numbers_count_as_possible_loss() -> None:
    continuity = Continuity()
    continuity.seen("9f0c5e8e1d8c4b7a")
    continuity.dropped()
    continuity.seen("0a1b2c3d4e5f6789")
    assert continuity.lost()


def test_loss_is_told_for_the_stretch_between_two_messages() -> None:
    # A queue of three cells: the first completed by 6, the second by 10,
    # the third by 13. The drop came after 4, and 7 and 8 never arrived.
    continuity = Continuity()
    first, second, third = ids([6, 10, 13])
    for msg_id in ids(range(5)):
        continuity.seen(msg_id)
    assert not continuity.lost_between(None, ids([4])[0])
    continuity.dropped()
    for msg_id in ids([5, 6, 9, 10, 11, 12, 13]):
        continuity.seen(msg_id)
        continuity.ours(msg_id)
    assert not continuity.lost_between(None, first)
    assert continuity.lost_between(first, second)
    assert not continuity.lost_between(second, third)
    # Up to the call's last message so far when the end is not known.
    assert not continuity.lost_between(second, None)
    assert continuity.lost_between(None, None)


def test_stretch_without_numbers_counts_as_possible_loss() -> None:
    continuity = Continuity()
    continuity.seen("9f0c5e8e1d8c4b7a")
    assert not continuity.lost_between(None, "9f0c5e8e1d8c4b7a")
    continuity.dropped()
    continuity.seen("0a1b2c3d4e5f6789")
    assert continuity.lost_between("9f0c5e8e1d8c4b7a", "0a1b2c3d4e5f6789")

"""Random bytes drawn in batches: fresh for every caller, thread and forked child."""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from typing import List
from unittest import mock

import pytest

from nublado_sync._messages import make_request
from nublado_sync._random_pool import new_message_id, random_bytes


def test_slices_do_not_repeat_across_batches() -> None:
    # More than one batch's worth: the refill is crossed.
    keys = [random_bytes(16) for _ in range(1000)]
    assert all(len(key) == 16 for key in keys)
    assert len(set(keys)) == len(keys)


def test_one_system_call_serves_many_keys() -> None:
    with mock.patch("nublado_sync._random_pool.os.urandom", wraps=os.urandom) as urandom:
        for _ in range(1000):
            random_bytes(4)
    # 4,000 bytes: at most one batch drawn now, plus one if the thread's
    # batch was nearly spent.
    assert urandom.call_count <= 2


def test_threads_draw_their_own_bytes() -> None:
    drawn: List[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [random_bytes(8) for _ in range(200)]
        with lock:
            drawn.extend(mine)

    workers = [threading.Thread(target=draw) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(set(drawn)) == len(drawn) == 1600


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    random_bytes(4)  # the parent's batch exists
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads; the
        # child here only draws bytes and writes them.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave at once
        os.write(writer, random_bytes(16))
        os._exit(0)
    os.close(writer)
    child = os.read(reader, 16)
    os.close(reader)
    os.waitpid(pid, 0)
    # The parent's next bytes are what the child would have repeated.
    assert random_bytes(16) != child


def test_message_ids_are_version_4_uuids_and_unique() -> None:
    ids = {new_message_id() for _ in range(2000)}
    assert len(ids) == 2000
    for value in list(ids)[:50]:
        assert uuid.UUID(hex=value).version == 4
    request = make_request("shell", "kernel_info_request", {}, session="s", username="u")
    assert uuid.UUID(hex=request.header["msg_id"]).version == 4


def test_more_than_a_batch_is_drawn_whole() -> None:
    big = random_bytes(10_000)
    assert len(big) == 10_000
    assert random_bytes(10_000) != big

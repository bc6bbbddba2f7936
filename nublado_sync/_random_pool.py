"""Random bytes from the operating system, drawn in batches.

Every frame a client sends needs a fresh random masking key (RFC 6455), and
every request a fresh message id. Asked for one at a time, ``os.urandom``
is a system call each, and CPython lets go of the GIL around it: with many
sessions busy in threads, each such call can hand the GIL to another thread
and back, which costs more than the call itself. Drawing 4 KiB at a time
and handing out slices keeps the bytes as unpredictable (they are the
operating system's) at one system call per few hundred requests.

Each thread draws its own batch (no lock), and a forked child draws anew:
bytes it inherited are its parent's, and would repeat there.
"""

from __future__ import annotations

import os
import threading
import uuid

__all__ = ["new_message_id", "random_bytes"]

_BATCH = 4096

_local = threading.local()
# Bumped in a forked child: a batch from before the fork is not used again.
_generation = [0]


def _forked() -> None:
    _generation[0] += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def random_bytes(count: int) -> bytes:
    """Return ``count`` bytes from the operating system's random source."""
    if count > _BATCH:
        return os.urandom(count)
    batch: bytes = getattr(_local, "batch", b"")
    offset: int = getattr(_local, "offset", 0)
    if offset + count > len(batch) or getattr(_local, "generation", None) != _generation[0]:
        batch, offset = os.urandom(_BATCH), 0
        _local.batch, _local.generation = batch, _generation[0]
    _local.offset = offset + count
    return batch[offset : offset + count]


def new_message_id() -> str:
    """Return a fresh message id: a random (version 4) UUID, as hex."""
    return uuid.UUID(bytes=random_bytes(16), version=4).hex

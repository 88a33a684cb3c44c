"""shmq: a crash-safe, lock-free ``multiprocessing.Queue`` in POSIX shared memory.

``shmq.Queue`` has the interface of ``multiprocessing.Queue`` (``put``, ``get``,
``put_nowait``, ``get_nowait``, ``qsize``, ``empty``, ``full``, ``close``, raising
``queue.Full`` / ``queue.Empty``), plus ``put_bytes`` / ``get_bytes`` (no pickling),
``put_many`` / ``get_many`` (batches) and zero-copy receives. Messages live in a ring
in ``/dev/shm``; a process killed with ``kill -9`` at any point neither blocks the
others nor loses a message whose ``put`` returned: a message it was holding goes to
another consumer.
"""

import atexit as _atexit
import os as _os

from ._errors import (
    DecodeError,
    Error,
    InvalidOptions,
    MessageTooLarge,
    QueueClosed,
    SegmentNotFound,
)
from ._shmq import HeldView, Queue, unlink
from ._shmq import _after_fork_in_child, _unlink_private_segments

__all__ = [
    "DecodeError",
    "Error",
    "HeldView",
    "InvalidOptions",
    "MessageTooLarge",
    "Queue",
    "QueueClosed",
    "SegmentNotFound",
    "unlink",
]

_atexit.register(_unlink_private_segments)
_os.register_at_fork(after_in_child=_after_fork_in_child)

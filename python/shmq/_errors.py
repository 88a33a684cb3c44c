"""Exceptions raised by shmq (besides the standard ``queue.Full`` and ``queue.Empty``)."""


class Error(Exception):
    """Base class of shmq's own errors; the message says what to do about it."""


class MessageTooLarge(Error, ValueError):
    """A message (after pickling) is larger than the queue's ``max_message_size``.

    Nothing was sent: the queue is as it was before the call.
    """


class SegmentNotFound(Error, FileNotFoundError):
    """No shared-memory segment has this name (``Queue.open`` of a missing queue)."""


class InvalidOptions(Error, ValueError):
    """A name, capacity or message size shmq cannot make a queue with."""


class QueueClosed(Error, ValueError):
    """The queue was closed in this process (``close()``): open it again to use it."""


class DecodeError(Error, ValueError):
    """A received message could not be unpickled (or decoded by the queue's ``loads``).

    Nothing is lost: the message was taken from the queue, and its bytes are here.
    ``data`` holds the bytes of the (first) message that failed; ``__cause__`` is
    the decoder's exception. From ``get_many``, ``objects`` holds every message of
    the batch that did decode, in order, and ``undecodable`` a ``(position, bytes)``
    pair for each that did not.
    """

    data = b""
    objects = ()
    undecodable = ()

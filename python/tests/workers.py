"""Functions run in other processes by the tests (importable by name under spawn)."""

import os
import queue
import time

STOP = "stop"

_worker_queue = None


def produce(q, producer, count):
    for seq in range(count):
        q.put((producer, seq))


def produce_in_batches(q, producer, count, batch=37):
    for start in range(0, count, batch):
        q.put_many([(producer, seq) for seq in range(start, min(start + batch, count))])


def consume(q, results):
    """Gets until STOP; reports everything received, in order, on `results`."""
    received = []
    while True:
        batch = q.get_many(64, timeout=30)
        for i, item in enumerate(batch):
            if item == STOP:
                # Producers were done before the STOPs went out: what follows in
                # this batch is other consumers' STOPs. Hand them on.
                q.put_many(batch[i + 1 :])
                results.put(received)
                return
            received.append(item)


def consume_one_at_a_time(q, results):
    received = []
    while True:
        item = q.get(timeout=30)
        if item == STOP:
            results.put(received)
            return
        received.append(item)


def echo(q, replies):
    replies.put(("echo", q.get(timeout=30), os.getpid()))


def install(q):
    """Pool / executor initializer: the queue arrives once per worker."""
    global _worker_queue
    _worker_queue = q


def take_and_double(_):
    return _worker_queue.get(timeout=30) * 2


class Stall:
    """A `loads` that announces it holds a message, then never returns."""

    def __init__(self, announce_path):
        self.announce_path = announce_path

    def __call__(self, data):
        with open(self.announce_path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)


def hold_forever(name, announce_path):
    """Receives a message with a `loads` that stalls while the message is held."""
    import shmq

    q = shmq.Queue.open(name, loads=Stall(announce_path))
    q.get(timeout=30)


def hold_view_forever(name, announce_path):
    """Holds a message in a zero-copy view, announcing it, until killed."""
    import shmq

    q = shmq.Queue.open(name)
    with q.get_view(timeout=30) as view:
        with open(announce_path, "w") as f:
            f.write(bytes(view).decode())
        time.sleep(3600)


def get_or_none(q):
    try:
        return q.get(timeout=10)
    except queue.Empty:
        return None

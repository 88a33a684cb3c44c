"""Across processes: exactly-once delivery with 4 producers and 4 consumers, every
start method, and a consumer killed with kill -9 while holding a message."""

import collections
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

import shmq
import workers

START_METHODS = multiprocessing.get_all_start_methods()


def check_exactly_once(received_by_consumer, producers, count):
    every = [item for received in received_by_consumer for item in received]
    counts = collections.Counter(every)
    duplicated = {item: n for item, n in counts.items() if n > 1}
    missing = [(p, s) for p in range(producers) for s in range(count) if (p, s) not in counts]
    assert not duplicated, f"delivered more than once: {list(duplicated)[:10]}"
    assert not missing, f"lost: {missing[:10]}"
    assert len(every) == producers * count
    # Per-producer order, as each consumer saw it.
    for received in received_by_consumer:
        last = {}
        for producer, seq in received:
            assert seq > last.get(producer, -1), (producer, seq)
            last[producer] = seq


@pytest.mark.parametrize("batches", [False, True], ids=["put-get", "put_many-get_many"])
def test_four_producers_four_consumers_deliver_each_message_exactly_once(batches):
    ctx = multiprocessing.get_context("fork")
    q = shmq.Queue(capacity=64)
    results = ctx.Queue()
    count = 3000
    produce = workers.produce_in_batches if batches else workers.produce
    consume = workers.consume if batches else workers.consume_one_at_a_time
    consumers = [ctx.Process(target=consume, args=(q, results)) for _ in range(4)]
    producers = [ctx.Process(target=produce, args=(q, p, count)) for p in range(4)]
    for process in consumers + producers:
        process.start()
    for process in producers:
        process.join(120)
        assert process.exitcode == 0
    for _ in consumers:
        q.put(workers.STOP)
    received = [results.get(timeout=120) for _ in consumers]
    for process in consumers:
        process.join(30)
        assert process.exitcode == 0
    check_exactly_once(received, 4, count)
    assert q.empty()


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_passes_to_a_process_under_each_start_method(method):
    ctx = multiprocessing.get_context(method)
    q = shmq.Queue()
    replies = shmq.Queue()
    q.put({"method": method})
    child = ctx.Process(target=workers.echo, args=(q, replies))
    child.start()
    tag, payload, pid = replies.get(timeout=60)
    child.join(30)
    assert child.exitcode == 0
    assert (tag, payload) == ("echo", {"method": method})
    assert pid == child.pid


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_reaches_pool_and_executor_workers_through_initializer(method):
    ctx = multiprocessing.get_context(method)
    q = shmq.Queue()
    q.put_many(range(8))
    with ctx.Pool(2, initializer=workers.install, initargs=(q,)) as pool:
        doubled = pool.map(workers.take_and_double, range(4))
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=workers.install, initargs=(q,)) as ex:
        doubled += list(ex.map(workers.take_and_double, range(4)))
    assert sorted(doubled) == [n * 2 for n in range(8)]
    assert q.empty()


def wait_for_file(path, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or os.path.getsize(path) == 0:
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)
    with open(path) as f:
        return f.read()


@pytest.mark.parametrize("holder", ["loads", "view"])
def test_consumer_killed_while_holding_a_message_hands_it_to_another(name, tmp_path, holder):
    ctx = multiprocessing.get_context("spawn")
    q = shmq.Queue(name, capacity=8)
    announce = str(tmp_path / "holding")
    if holder == "loads":
        q.put("the only message")
        target = workers.hold_forever
    else:
        q.put_bytes(b"the only message")
        target = workers.hold_view_forever
    child = ctx.Process(target=target, args=(name, announce))
    child.start()
    wait_for_file(announce)
    assert q.empty() or q.qsize() == 0  # the child holds it
    with pytest.raises(Exception):
        q.get_nowait()
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    # The dead consumer's message comes to the next consumer that looks.
    if holder == "loads":
        assert q.get(timeout=10) == "the only message"
    else:
        assert q.get_bytes(timeout=10) == b"the only message"
    with pytest.raises(Exception):
        q.get(timeout=0.2)

"""Throughput of shmq.Queue against multiprocessing.Queue, multiprocessing.SimpleQueue
and faster-fifo, in one run.

Workloads: faster-fifo's six published configurations (producers -> consumers, its
5-tuple message `(i,) * 5`, consumers using `get` and, where the queue has one,
`get_many`), and raw bytes of 64 B and 4 KiB from one producer to one consumer
(shmq's `put_bytes`/`get_bytes`; the others put `bytes` objects).

Each (workload, queue) is run `--rounds` times: each round runs every workload, the
queues taking turns; the table shows the median time and how many times shmq's time the other
queue's is (above 1: shmq is faster). Message counts are faster-fifo's times
`--scale`.

    pip install ./python faster-fifo
    python python/benchmarks/bench.py --scale 0.1 --rounds 3
"""

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time

import shmq

try:
    import faster_fifo
except ImportError:  # the table says so
    faster_fifo = None

CTX = multiprocessing.get_context("fork")

# (name, producers, consumers, messages per producer at scale 1), as faster-fifo
# publishes them.
CONFIGS = [
    ("1->1", 1, 1, 200_000),
    ("1->10", 1, 10, 200_000),
    ("10->1", 10, 1, 100_000),
    ("3->20", 3, 20, 100_000),
    ("20->3", 20, 3, 50_000),
    ("20->20", 20, 20, 50_000),
]
RAW = [("1->1 bytes 64 B", 64, 200_000), ("1->1 bytes 4 KiB", 4096, 100_000)]
QUEUES = ["shmq", "multiprocessing.Queue", "multiprocessing.SimpleQueue", "faster-fifo"]


def make_queue(kind, message_size):
    if kind == "shmq":
        return shmq.Queue(capacity=8192, max_message_size=max(128, message_size + 64))
    if kind == "multiprocessing.Queue":
        return CTX.Queue()
    if kind == "multiprocessing.SimpleQueue":
        return CTX.SimpleQueue()
    # Room for as many messages as shmq's 8192 slots, or more.
    return faster_fifo.Queue(max_size_bytes=8192 * (message_size + 256))


def producer(q, kind, count, payload, go):
    put = q.put_bytes if payload is not None and kind == "shmq" else q.put
    go.wait()
    if payload is None:
        for i in range(count):
            put((i,) * 5)
    else:
        for _ in range(count):
            put(payload)


def consumer(q, kind, batch, raw, stop, go, report):
    """Counts messages until `stop`; reports the count and when the last came.
    The loops are kept as plain as possible: their cost is in every queue's time."""
    clock = time.perf_counter
    count = 0
    go.wait()
    last = clock()
    if not batch:
        get = q.get_bytes if raw and kind == "shmq" else q.get
        while True:
            message = get()
            if message == stop:
                report.put((count, last))
                return
            count += 1
            last = clock()
    if kind == "shmq":
        get_many = lambda: q.get_many(1000)  # noqa: E731
    else:
        get_many = lambda: q.get_many(max_messages_to_get=1000)  # noqa: E731
    while True:
        messages = get_many()
        if stop in messages:
            i = messages.index(stop)
            # Everything after a stop in a batch is other consumers' stops.
            for other in messages[i + 1 :]:
                q.put(other)
            report.put((count + i, clock() if i else last))
            return
        count += len(messages)
        last = clock()


def run_once(kind, producers, consumers, per_producer, batch, payload):
    raw = payload is not None
    q = make_queue(kind, len(payload) if raw else 64)
    stop = b"" if raw else None
    go = CTX.Event()
    report = CTX.Queue()
    workers = [
        CTX.Process(target=consumer, args=(q, kind, batch, raw, stop, go, report))
        for _ in range(consumers)
    ] + [
        CTX.Process(target=producer, args=(q, kind, per_producer, payload, go))
        for _ in range(producers)
    ]
    for w in workers:
        w.start()
    time.sleep(0.2)  # let every process reach the start line
    start = time.perf_counter()
    go.set()
    for w in workers[consumers:]:
        w.join()
    for _ in range(consumers):
        if raw and kind == "shmq":
            q.put_bytes(stop)
        else:
            q.put(stop)
    results = [report.get(timeout=600) for _ in range(consumers)]
    for w in workers[:consumers]:
        w.join()
    received = sum(count for count, _ in results)
    expected = producers * per_producer
    if received != expected:
        raise RuntimeError(f"{kind}: received {received} of {expected} messages")
    if kind == "shmq":
        q.unlink()
    return max(last for _, last in results) - start


def workloads(scale):
    for name, producers, consumers, per in CONFIGS:
        n = max(1, int(per * scale))
        yield f"{name} get", producers, consumers, n, False, None
        yield f"{name} get_many", producers, consumers, n, True, None
    for name, size, per in RAW:
        yield name, 1, 1, max(1, int(per * scale)), False, bytes(size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=0.1, help="fraction of faster-fifo's message counts")
    parser.add_argument("--rounds", type=int, default=3, help="runs per (workload, queue); the median is shown")
    parser.add_argument("--only", default="", help="run only workloads whose name contains this")
    args = parser.parse_args()

    kinds = [k for k in QUEUES if k != "faster-fifo" or faster_fifo is not None]
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"scale {args.scale}, median of {args.rounds}; command: python {' '.join(sys.argv)}"
    )
    if faster_fifo is None:
        print("# faster-fifo is not installed (pip install faster-fifo): its column is missing")
    header = ["workload", "messages"] + [f"{k} (s)" for k in kinds] + [f"{k} / shmq" for k in kinds[1:]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    chosen = [w for w in workloads(args.scale) if args.only in w[0]]
    # Rounds are the outer loop, so that a burst of other work on the machine spoils
    # one run of many workloads rather than every run of one; the queues take turns.
    times = {}
    for round_ in range(args.rounds):
        for name, producers, consumers, per, batch, payload in chosen:
            # get_many exists only on shmq and faster-fifo.
            here = [k for k in kinds if not batch or k in ("shmq", "faster-fifo")]
            order = here[round_ % len(here):] + here[: round_ % len(here)]
            for kind in order:
                seconds = run_once(kind, producers, consumers, per, batch, payload)
                times.setdefault(name, {}).setdefault(kind, []).append(seconds)
        print(f"# round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    for name, producers, consumers, per, batch, payload in chosen:
        median = {k: statistics.median(v) for k, v in times[name].items()}
        cells = [name, str(producers * per)]
        cells += [f"{median[k]:.3f}" if k in median else "-" for k in kinds]
        cells += [f"{median[k] / median['shmq']:.2f}x" if k in median else "-" for k in kinds[1:]]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

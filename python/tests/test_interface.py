"""The multiprocessing.Queue interface, bytes, batches and errors, in one process."""

import json
import pickle
import queue
import time

import pytest

import shmq


def test_objects_come_back_equal_and_in_order():
    q = shmq.Queue()
    sent = [None, 1, "two", [3.0, {"four": (5,)}], b"\x00six", {"n": list(range(100))}]
    for obj in sent:
        q.put(obj)
    assert [q.get() for _ in sent] == sent


def test_get_nowait_on_empty_raises_queue_empty_and_put_nowait_on_full_raises_queue_full():
    q = shmq.Queue(capacity=2)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait("a")
    q.put_nowait("b")
    with pytest.raises(queue.Full):
        q.put_nowait("c")
    with pytest.raises(queue.Full):
        q.put("c", block=False, timeout=10)  # timeout ignored when not blocking
    assert (q.get_nowait(), q.get_nowait()) == ("a", "b")


def test_timeouts_wait_about_as_long_as_asked_then_raise():
    q = shmq.Queue(capacity=2)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    waited = time.monotonic() - start
    assert 0.19 <= waited < 2.0, waited
    q.put(1)
    q.put(2)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    waited = time.monotonic() - start
    assert 0.19 <= waited < 2.0, waited
    with pytest.raises(queue.Full):
        q.put(3, timeout=0)
    assert q.get(timeout=0) == 1


def test_negative_timeout_is_a_value_error():
    q = shmq.Queue()
    with pytest.raises(ValueError):
        q.get(timeout=-1)
    with pytest.raises(ValueError):
        q.put(1, timeout=-0.5)


def test_bytes_skip_pickling_and_take_any_bytes_like_object():
    q = shmq.Queue(max_message_size=16)
    q.put_bytes(b"raw")
    q.put_bytes(bytearray(b"array"))
    q.put_bytes(memoryview(b"view"))
    q.put_bytes(b"")
    assert [q.get_bytes() for _ in range(4)] == [b"raw", b"array", b"view", b""]
    q.put("x")
    assert pickle.loads(q.get_bytes()) == "x"
    with pytest.raises(TypeError):
        q.put_bytes("text is not bytes")
    assert q.empty()


def test_large_messages_round_trip():
    size = 1 << 20
    q = shmq.Queue(capacity=4, max_message_size=size + 64)
    payload = bytes(range(256)) * (size // 256)
    q.put_bytes(payload)
    q.put(payload)
    assert q.get_bytes() == payload
    assert q.get() == payload


def test_qsize_empty_full_follow_the_contents():
    q = shmq.Queue(capacity=4)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    q.put(1)
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
    for n in range(3):
        q.put(n)
    assert (q.qsize(), q.empty(), q.full()) == (4, False, True)


def test_oversized_object_is_refused_as_value_error_and_nothing_is_lost():
    q = shmq.Queue(capacity=8, max_message_size=100)
    q.put("before")
    with pytest.raises(shmq.MessageTooLarge) as refused:
        q.put("x" * 1000)
    assert isinstance(refused.value, ValueError)
    assert isinstance(refused.value, shmq.Error)
    assert "exceeds this segment's maximum of 100 bytes" in str(refused.value)
    with pytest.raises(ValueError):
        q.put_bytes(b"y" * 101)
    q.put("after")
    assert q.qsize() == 2
    assert (q.get(), q.get()) == ("before", "after")


def test_put_many_get_many_keep_order_across_claims():
    q = shmq.Queue(capacity=1024)
    q.put_many(range(600))
    assert q.get_many(10) == list(range(10))
    rest = []
    while len(rest) < 590:
        rest += q.get_many(1000, timeout=1)
    assert rest == list(range(10, 600))
    with pytest.raises(queue.Empty):
        q.get_many(block=False)
    with pytest.raises(queue.Empty):
        q.get_many(timeout=0.05)
    with pytest.raises(ValueError):
        q.get_many(0)


def test_put_many_with_one_oversized_object_sends_none():
    q = shmq.Queue(capacity=16, max_message_size=64)
    with pytest.raises(shmq.MessageTooLarge):
        q.put_many(["small", "x" * 200, "small"])
    assert q.qsize() == 0


def test_put_many_that_does_not_fit_says_how_many_went():
    q = shmq.Queue(capacity=4)
    with pytest.raises(queue.Full) as full:
        q.put_many(range(6), timeout=0.05)
    assert full.value.sent == 4
    with pytest.raises(queue.Full) as full:
        q.put_many(range(2), block=False)
    assert full.value.sent == 0
    assert q.get_many(10) == [0, 1, 2, 3]


def test_custom_dumps_and_loads_replace_pickle():
    q = shmq.Queue(dumps=lambda obj: json.dumps(obj).encode(), loads=json.loads)
    q.put({"a": [1, 2]})
    assert q.get_bytes() == b'{"a": [1, 2]}'
    q.put_many([1, "two"])
    assert q.get_many() == [1, "two"]


def test_named_queue_is_created_or_attached_and_open_needs_it_to_exist(name):
    with pytest.raises(shmq.SegmentNotFound) as missing:
        shmq.Queue.open(name)
    assert isinstance(missing.value, FileNotFoundError)
    assert "create it first" in str(missing.value)
    first = shmq.Queue(name, capacity=8, max_message_size=128)
    second = shmq.Queue(name, capacity=64)  # attaches: keeps the segment's geometry
    third = shmq.Queue.open(name)
    assert (second.capacity, third.max_message_size) == (8, 128)
    first.put("hello")
    assert third.get() == "hello"
    first.unlink()
    with pytest.raises(shmq.SegmentNotFound):
        shmq.Queue.open(name)
    second.put("still works")  # attached handles outlive the name
    assert first.get() == "still works"


def test_invalid_options_are_value_errors_with_the_reason():
    with pytest.raises(shmq.InvalidOptions, match="power of two"):
        shmq.Queue(capacity=1000)
    with pytest.raises(ValueError, match="invalid segment name"):
        shmq.Queue("no/slashes")


def test_closed_queue_refuses_further_use():
    q = shmq.Queue()
    q.put(1)
    q.close()
    with pytest.raises(shmq.QueueClosed):
        q.put(2)
    with pytest.raises(shmq.QueueClosed):
        q.get()
    assert shmq.Queue.open(q.name).get() == 1  # the segment and its message stay


def test_queue_pickles_by_name():
    q = shmq.Queue()
    copy = pickle.loads(pickle.dumps(q))
    assert copy.name == q.name
    q.put("across")
    assert copy.get() == "across"
    assert "shmq.Queue(name=" in repr(copy)


def test_type_stubs_describe_every_public_method():
    import ast
    import pathlib

    stub = pathlib.Path(shmq.__file__).with_name("_shmq.pyi")
    assert pathlib.Path(shmq.__file__).with_name("py.typed").exists()
    classes = {
        node.name: {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        for node in ast.parse(stub.read_text()).body
        if isinstance(node, ast.ClassDef)
    }
    for cls in (shmq.Queue, shmq.HeldView):
        public = {n for n in dir(cls) if not n.startswith("_")} | {"__enter__", "__exit__"} & set(dir(cls))
        missing = public - classes[cls.__name__]
        assert not missing, f"{cls.__name__} methods without stubs: {missing}"
        for method in public:
            if not method.startswith("_"):
                assert getattr(cls, method).__doc__, f"{cls.__name__}.{method} has no docstring"


def refuse_bad(data):
    if data == b"bad":
        raise ValueError("not decodable")
    return data.decode()


def test_an_undecodable_message_is_handed_back_in_the_error_not_lost():
    q = shmq.Queue(dumps=lambda obj: obj.encode(), loads=refuse_bad)
    q.put("one")
    q.put_bytes(b"bad")
    q.put("three")
    assert q.get() == "one"
    with pytest.raises(shmq.DecodeError) as refused:
        q.get()
    assert refused.value.data == b"bad"
    assert isinstance(refused.value.__cause__, ValueError)
    assert isinstance(refused.value, ValueError)
    assert q.get_nowait() == "three"


def test_get_many_hands_back_a_batch_with_an_undecodable_message_whole():
    q = shmq.Queue(dumps=lambda obj: obj.encode(), loads=refuse_bad)
    q.put_many(["a", "b"])
    q.put_bytes(b"bad")
    q.put("c")
    with pytest.raises(shmq.DecodeError) as refused:
        q.get_many(10)
    assert list(refused.value.objects) == ["a", "b", "c"]
    assert [tuple(pair) for pair in refused.value.undecodable] == [(2, b"bad")]
    assert refused.value.data == b"bad"
    assert q.empty()

"""Zero-copy receives: a memoryview of the message in its slot, valid inside a
callback or a with block and released after; acknowledged, or given back on error."""

import queue

import pytest

import shmq


def test_view_shows_the_message_and_is_released_when_the_block_ends():
    q = shmq.Queue()
    q.put_bytes(b"in place")
    with q.get_view() as view:
        assert isinstance(view, memoryview)
        assert view.readonly
        assert bytes(view) == b"in place"
        assert view[3:5].tobytes() == b"pl"
        with pytest.raises(TypeError):
            view[0] = 0
    with pytest.raises(ValueError):
        bytes(view)  # released: no access to a slot that may hold another message
    with pytest.raises(queue.Empty):
        q.get_nowait()  # acknowledged


def test_callback_gets_a_view_valid_only_during_the_call():
    q = shmq.Queue()
    q.put_bytes(b"abc")
    kept = []

    def callback(view):
        kept.append(view)
        return bytes(view).upper()

    assert q.get_with(callback) == b"ABC"
    with pytest.raises(ValueError):
        kept[0].tobytes()
    with pytest.raises(queue.Empty):
        q.get_with(callback, block=False)
    with pytest.raises(queue.Empty):
        q.get_with(callback, timeout=0.05)


def test_exception_in_the_block_gives_the_message_back_for_another_delivery():
    q = shmq.Queue()
    q.put_bytes(b"retry me")
    with pytest.raises(RuntimeError):
        with q.get_view() as view:
            assert bytes(view) == b"retry me"
            raise RuntimeError("handler failed")
    again = q.get_view(timeout=5)
    with again as view:
        assert bytes(view) == b"retry me"
    assert again.deliveries == 2
    with pytest.raises(ZeroDivisionError):
        q.put_bytes(b"and me")
        q.get_with(lambda view: 1 / 0)
    assert q.get_bytes(timeout=5) == b"and me"


def test_a_view_made_from_the_view_keeps_the_message_held_and_readable_until_released():
    q = shmq.Queue(capacity=2)
    q.put_bytes(b"A-message")
    with q.get_view() as view:
        tail = view[2:]
    with pytest.raises(ValueError):
        bytes(view)
    q.put_bytes(b"B")
    # The ring would reuse A's slot next: it is still held, so there is no room.
    with pytest.raises(queue.Full):
        q.put_bytes(b"C", block=False)
    assert bytes(tail) == b"message"
    tail.release()
    q.put_bytes(b"C", timeout=5)  # A was acknowledged when its last view went
    assert [q.get_bytes(), q.get_bytes()] == [b"B", b"C"]


def test_an_unused_held_view_gives_its_message_back_when_dropped():
    q = shmq.Queue()
    q.put_bytes(b"unread")
    held = q.get_view()
    assert held.deliveries == 1
    del held
    assert q.get_bytes(timeout=5) == b"unread"

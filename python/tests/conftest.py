import os
import uuid

import pytest

import shmq

# Every segment a test names starts with this (CI looks for leftovers under it).
PREFIX = "pytest."


def unique_name():
    return f"{PREFIX}{os.getpid()}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def name():
    """A fresh segment name, removed (with its dead-letter segment) after the test."""
    segment = unique_name()
    yield segment
    for leftover in (segment, segment + ".dead"):
        try:
            shmq.unlink(leftover)
        except shmq.SegmentNotFound:
            pass


@pytest.fixture(autouse=True)
def private_segments_removed_after_each_test():
    """Private queues live until their creating process exits; one test run makes many,
    so remove the ones each test made when it ends (as exiting would)."""
    yield
    shmq._unlink_private_segments()


@pytest.fixture(scope="session", autouse=True)
def no_segments_left_behind():
    yield
    left = [f for f in os.listdir("/dev/shm") if f.startswith("shmq." + PREFIX)]
    assert not left, f"tests left segments behind: {left}"

"""MemoryBackend.join: the deterministic drain the contract suite uses instead of polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from queue_beanstalk import MemoryBackend, Message, QueueError, Timeout, factory


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    """A memory backend of its own, closed after the test."""
    made = MemoryBackend()
    yield made
    made.close()


def test_join_on_a_tube_with_no_jobs_returns_at_once(backend: MemoryBackend) -> None:
    backend.put("other", b"elsewhere", priority=0, delay=0, ttr=60)
    started = time.monotonic()
    backend.join("empty", 5)
    assert time.monotonic() - started < 0.5


def test_join_waits_for_ready_and_reserved_jobs_but_not_buried_ones(
    backend: MemoryBackend,
) -> None:
    backend.put("jobs", b"to bury", priority=0, delay=0, ttr=60)
    backend.put("jobs", b"to delete", priority=1, delay=0, ttr=60)
    backend.bury(backend.reserve(["jobs"], 0).lease, priority=0)
    held = backend.reserve(["jobs"], 0)
    with pytest.raises(Timeout):
        backend.join("jobs", 0.2)  # one job still reserved
    timer = threading.Timer(0.2, backend.delete, args=(held.lease,))
    # Read before the timer starts: it fires 0.2 s after its start, which a
    # clock read after it would make (by that read's delay) less than 0.2 s ago.
    started = time.monotonic()
    timer.start()
    try:
        backend.join("jobs", 5)
    finally:
        timer.join()
    assert time.monotonic() - started >= 0.2


def test_join_waits_out_a_delay_and_the_job_handled_after_it() -> None:
    handled: list[float] = []
    with factory("memory://") as queues:
        backend = queues.backend
        assert isinstance(backend, MemoryBackend)
        handler = queues.handler(lambda message: handled.append(time.monotonic()), "jobs")
        put_at = time.monotonic()
        queues.get("jobs").put(Message("later"), delay=1)
        handler.start()
        try:
            backend.join("jobs", 5)
            assert len(handled) == 1
            assert handled[0] - put_at >= 1.0
        finally:
            handler.stop()
            assert handler.wait(5)


def test_a_join_that_times_out_raises_timeout_not_early(backend: MemoryBackend) -> None:
    backend.put("jobs", b"nobody takes it", priority=0, delay=0, ttr=60)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 job"):
        backend.join("jobs", 0.3)
    assert time.monotonic() - started >= 0.3


def test_closing_the_backend_ends_a_join(backend: MemoryBackend) -> None:
    backend.put("jobs", b"left", priority=0, delay=0, ttr=60)
    timer = threading.Timer(0.2, backend.close)
    timer.start()
    try:
        with pytest.raises(QueueError, match="closed"):
            backend.join("jobs", 5)
    finally:
        timer.join()

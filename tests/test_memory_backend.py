"""What only memory:// needs testing for: how much it keeps, and how it stands in for connections.

The contract every backend shares is in ``test_contract.py``; these tests
look at the in-memory backend's own bookkeeping.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from queue_beanstalk import MemoryBackend, Message, NotFound, factory
from queue_beanstalk.backend import Lease
from queue_beanstalk.backends.memory import PRUNE_AT

from .support import ref

JOBS = 10_000


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    """A memory backend of its own, closed after the test."""
    made = MemoryBackend()
    yield made
    made.close()


def _live_leases() -> int:
    gc.collect()
    return sum(isinstance(thing, Lease) for thing in gc.get_objects())


def test_a_consumer_keeps_no_lease_once_settled(backend: MemoryBackend) -> None:
    consumer = backend.consumer(["jobs"])
    before = _live_leases()
    for number in range(JOBS):
        backend.put("jobs", b"%d" % number, priority=0, delay=0, ttr=60)
        reserved = consumer.reserve(0)
        assert reserved is not None
        assert reserved.lease.claim()
        backend.delete(reserved.lease)
    del reserved
    assert _live_leases() - before <= PRUNE_AT
    consumer.close()


def test_delete_and_reserve_keeps_no_lease_once_settled(backend: MemoryBackend) -> None:
    for number in range(JOBS):
        backend.put("jobs", b"%d" % number, priority=0, delay=0, ttr=60)
    consumer = backend.consumer(["jobs"])
    before = _live_leases()
    reserved = consumer.reserve(0)
    while reserved is not None:
        assert reserved.lease.claim()
        deleted, reserved = consumer.delete_and_reserve(reserved.lease, 0)
        assert deleted
    assert _live_leases() - before <= PRUNE_AT
    consumer.close()


def test_close_gives_back_what_is_still_reserved_among_many_settled(
    backend: MemoryBackend,
) -> None:
    consumer = backend.consumer(["jobs"])
    held = []
    for number in range(10 * PRUNE_AT):
        backend.put("jobs", b"%d" % number, priority=0, delay=0, ttr=60)
        reserved = consumer.reserve(0)
        assert reserved is not None
        if number % 3 == 0:
            held.append(reserved.lease.ref)
        else:
            backend.delete(reserved.lease)
    consumer.close()
    assert {backend.stats_job(job).state for job in held} == {"ready"}
    assert sorted(backend.reserve(["jobs"], 0).lease.ref for _ in held) == held


def test_close_leaves_a_job_another_client_reserved_after_a_timeout(
    backend: MemoryBackend,
) -> None:
    backend.put("jobs", b"x", priority=0, delay=0, ttr=1)
    consumer = backend.consumer(["jobs"])
    assert consumer.reserve(0) is not None
    other = backend.reserve(["jobs"], 3)  # after the consumer's time-to-run ran out
    consumer.close()
    assert backend.stats_job(other.lease.ref).state == "reserved"
    backend.delete(other.lease)


def test_a_lease_from_another_memory_factory_is_not_found() -> None:
    # Both factories number their jobs from 1: the ids alone would match.
    with factory("memory://") as first, factory("memory://") as second:
        first.get("jobs").put(Message("first's"))
        seconds = Message("second's")
        second.get("jobs").put(seconds)
        got = first.get("jobs").get(0)
        with pytest.raises(NotFound, match="not reserved through this factory"):
            second.get("jobs").delete(got)
        assert got.id == seconds.id  # the same id, on two servers
        with pytest.raises(NotFound, match="is on server memory:"):
            second.backend.stats_job(ref(got))
        assert second.backend.stats_job(ref(seconds)).state == "ready"
        assert first.backend.stats_job(ref(got)).state == "reserved"


def test_a_lease_made_by_hand_is_not_found(backend: MemoryBackend) -> None:
    job = backend.put("jobs", b"x", priority=0, delay=0, ttr=60)
    for settle in (
        backend.delete,
        backend.touch,
        lambda lease: backend.release(lease, priority=0, delay=0),
        lambda lease: backend.bury(lease, priority=0),
    ):
        with pytest.raises(NotFound):
            settle(Lease(job.id, "jobs", job.server))
    assert backend.stats_job(job).state == "ready"


def test_settling_after_close_says_the_factory_was_closed(backend: MemoryBackend) -> None:
    backend.put("jobs", b"x", priority=0, delay=0, ttr=60)
    reserved = backend.reserve(["jobs"], 0)
    backend.close()
    with pytest.raises(NotFound, match="reservation was lost: the queue factory was closed"):
        backend.delete(reserved.lease)


def test_settling_after_the_consumer_closed_says_so(backend: MemoryBackend) -> None:
    backend.put("jobs", b"x", priority=0, delay=0, ttr=60)
    consumer = backend.consumer(["jobs"])
    reserved = consumer.reserve(0)
    assert reserved is not None
    consumer.close()
    with pytest.raises(NotFound, match="consumer was closed"):
        backend.delete(reserved.lease)

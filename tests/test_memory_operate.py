"""What only memory:// needs testing for when operated: pauses on the reserve path, orders, counts.

The contract every backend shares is in ``tests/contract/operate.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from queue_beanstalk import MemoryBackend, NotFound, QueueError
from queue_beanstalk.backend import JobRef, Reserved
from queue_beanstalk.backends.memory import PRUNE_AT

from .support import eventually


@pytest.fixture
def backend() -> Iterator[MemoryBackend]:
    """A memory backend of its own, closed after the test."""
    made = MemoryBackend()
    yield made
    made.close()


def _put(backend: MemoryBackend, body: bytes, *, priority: int = 0, delay: int = 0) -> JobRef:
    return backend.put("jobs", body, priority=priority, delay=delay, ttr=60)


def _in_thread(call: Callable[[], Reserved | None]) -> tuple[threading.Thread, list[object]]:
    """Run ``call`` in a thread of its own; its result (or exception) lands in the list."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_reserve_waiting_on_a_paused_tube_takes_the_job_when_the_pause_ends(
    backend: MemoryBackend,
) -> None:
    _put(backend, b"held back")
    backend.pause_tube("jobs", 1)
    started = time.monotonic()
    reserved = backend.reserve(["jobs"], 5)
    assert reserved.body == b"held back"
    assert 0.9 <= time.monotonic() - started < 3
    assert not backend.stats_tube("jobs").paused


def test_resuming_wakes_a_consumer_waiting_on_the_paused_tube(backend: MemoryBackend) -> None:
    _put(backend, b"held back")
    backend.pause_tube("jobs", 60)
    consumer = backend.consumer(["jobs"])
    thread, result = _in_thread(lambda: consumer.reserve(10))
    eventually(lambda: backend.stats_tube("jobs").waiting == 1)
    assert not result
    backend.pause_tube("jobs", 0)
    thread.join(5)
    assert isinstance(result[0], Reserved)
    consumer.close()


def test_a_paused_tube_is_skipped_not_the_others_watched(backend: MemoryBackend) -> None:
    _put(backend, b"paused", priority=0)
    backend.put("other", b"open", priority=9, delay=0, ttr=60)
    backend.pause_tube("jobs", 60)
    assert backend.reserve(["jobs", "other"], 0).body == b"open"
    assert backend.peek("jobs", "ready") is not None  # a peek ignores the pause


def test_pause_left_is_rounded_up_and_ends(backend: MemoryBackend) -> None:
    backend.pause_tube("jobs", 2)
    assert backend.stats_tube("jobs").pause_left == 2
    assert "jobs" in backend.tubes()
    eventually(lambda: not backend.stats_tube("jobs").paused, timeout=5)
    assert "jobs" not in backend.tubes()


def test_waiting_and_watching_count_consumers_and_waiting_reserves(
    backend: MemoryBackend,
) -> None:
    consumer = backend.consumer(["jobs", "more"])
    assert backend.stats_tube("jobs").watching == 0  # not connected before its first reserve
    assert consumer.reserve(0) is None
    assert (backend.stats_tube("jobs").watching, backend.stats_tube("jobs").waiting) == (1, 0)
    assert backend.tubes() == ["default", "jobs", "more"]
    thread, result = _in_thread(lambda: backend.reserve(["jobs"], 10))
    eventually(lambda: backend.stats_tube("jobs").waiting == 1)
    assert backend.stats_tube("jobs").watching == 2
    _put(backend, b"wakes it")
    thread.join(5)
    assert isinstance(result[0], Reserved)
    consumer.close()
    stats = backend.stats_tube("jobs")
    assert (stats.watching, stats.waiting, stats.reserved, stats.total) == (0, 0, 1, 1)
    assert backend.tubes() == ["default", "jobs"]


def test_a_tube_leaves_the_list_with_its_last_job(backend: MemoryBackend) -> None:
    assert backend.tubes() == ["default"]
    job = _put(backend, b"only")
    assert backend.tubes() == ["default", "jobs"]
    backend.delete_job(job)
    assert backend.tubes() == ["default"]
    assert backend.stats_tube("jobs").total == 1


def test_buried_jobs_are_peeked_and_kicked_in_the_order_they_were_buried(
    backend: MemoryBackend,
) -> None:
    first, second, third = (
        _put(backend, body, priority=3 - n) for n, body in enumerate((b"a", b"b", b"c"))
    )
    for _ in range(3):  # reserved most urgent first: c, b, a
        backend.bury(backend.reserve(["jobs"], 0).lease, priority=0)
    assert backend.kick("jobs", 1) == 1
    again = backend.reserve(["jobs"], 0)  # c, kicked first, buried again: now last
    assert again.job_id == third.id
    backend.bury(again.lease, priority=0)
    peeked = backend.peek("jobs", "buried")
    assert peeked is not None
    assert peeked[0] == second
    order = []
    while backend.kick("jobs", 1):
        order.append(backend.reserve(["jobs"], 0).job_id)
    assert order == [second.id, first.id, third.id]


def test_delayed_jobs_are_peeked_and_kicked_due_first(backend: MemoryBackend) -> None:
    late = _put(backend, b"late", delay=30)
    soon = _put(backend, b"soon", delay=10)
    assert backend.peek("jobs", "delayed") == (soon, b"soon")
    assert backend.kick("jobs", 1) == 1
    assert backend.reserve(["jobs"], 0).job_id == soon.id
    assert backend.stats_job(late).state == "delayed"
    assert backend.stats_job(soon).kicks == 1


def test_delete_job_refuses_a_reserved_job_and_another_servers(backend: MemoryBackend) -> None:
    job = _put(backend, b"x")
    reserved = backend.reserve(["jobs"], 0)
    with pytest.raises(NotFound, match="reserved"):
        backend.delete_job(job)
    with pytest.raises(NotFound, match="server"):
        backend.delete_job(JobRef(job.id, "memory:elsewhere"))
    backend.release(reserved.lease, priority=0, delay=0)
    backend.delete_job(job)
    with pytest.raises(NotFound, match="does not exist"):
        backend.delete_job(job)


def test_delete_job_takes_a_job_whose_time_to_run_ran_out(backend: MemoryBackend) -> None:
    job = backend.put("jobs", b"x", priority=0, delay=0, ttr=1)
    backend.reserve(["jobs"], 0)
    eventually(lambda: backend.stats_job(job).state == "ready", timeout=5)
    backend.delete_job(job)
    assert backend.stats_tube("jobs").ready == 0


@pytest.mark.parametrize("state", ["buried", "delayed"])
def test_a_backlog_drops_what_went_stale_under_a_job_that_stays_first(
    backend: MemoryBackend, state: str
) -> None:
    def to_state() -> JobRef:
        if state == "delayed":
            return _put(backend, b"delayed", delay=3600)
        job = _put(backend, b"buried")
        backend.bury(backend.reserve(["jobs"], 0).lease, priority=0)
        return job

    first = to_state()
    for _ in range(100 * PRUNE_AT):
        job = to_state()
        backend.kick_job(job)  # out of order: the first job stays on top
        backend.delete_job(job)
    assert backend.peek("jobs", state) == (first, state.encode())
    backlogs = backend._delayed if state == "delayed" else backend._buried
    assert len(backlogs["jobs"].items) <= 2 * PRUNE_AT


def test_operating_a_closed_backend_raises(backend: MemoryBackend) -> None:
    backend.close()
    for call in (
        backend.tubes,
        lambda: backend.stats_tube("jobs"),
        lambda: backend.peek("jobs", "ready"),
        lambda: backend.kick("jobs", 1),
        lambda: backend.delete_job(JobRef(1, backend.server)),
        lambda: backend.pause_tube("jobs", 1),
    ):
        with pytest.raises(QueueError, match="closed"):
            call()

"""Settling a message after what reserved it was closed: every backend raises NotFound.

On beanstalkd a reservation lives on its connection: closing the factory, or
the consumer that reserved the job, ends it and the server hands the job out
again. memory:// must say the same rather than settle a job it no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from queue_beanstalk import Message, NotFound, Queue, QueueError, QueueFactory
from queue_beanstalk.backend import Backend, Lease

from .cases import BackendCase

SETTLES: dict[str, Callable[[Queue, Message], None]] = {
    "delete": lambda queue, message: queue.delete(message),
    "release": lambda queue, message: queue.release(message),
    "bury": lambda queue, message: queue.bury(message),
    "touch": lambda queue, message: queue.touch(message),
}

LEASE_SETTLES: dict[str, Callable[[Backend, Lease], None]] = {
    "delete": lambda backend, lease: backend.delete(lease),
    "release": lambda backend, lease: backend.release(lease, priority=0, delay=0),
    "bury": lambda backend, lease: backend.bury(lease, priority=0),
    "touch": lambda backend, lease: backend.touch(lease),
}


class SettleAfterCloseContract(BackendCase):
    """What settling after a close does on every backend."""

    @pytest.mark.parametrize("settle", SETTLES)
    def test_settling_after_the_factory_closed_raises_not_found(
        self, queues: QueueFactory, tube: str, settle: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("held", [settle]))
        got = queue.get(timeout=1)
        queues.close()
        with pytest.raises(NotFound):
            SETTLES[settle](queue, got)

    @pytest.mark.parametrize("settle", LEASE_SETTLES)
    def test_settling_after_the_consumer_closed_raises_not_found(
        self, queues: QueueFactory, tube: str, settle: str
    ) -> None:
        backend = queues.backend
        job = backend.put(tube, b"held", priority=0, delay=0, ttr=60)
        consumer = backend.consumer([tube])
        reserved = consumer.reserve(1)
        assert reserved is not None
        consumer.close()
        with pytest.raises(NotFound):
            LEASE_SETTLES[settle](backend, reserved.lease)
        # The job went back, untouched by the settle.
        stats = backend.stats_job(job)
        assert (stats.state, stats.releases, stats.buries) == ("ready", 0, 0)

    def test_a_consumer_reserves_again_after_close(self, queues: QueueFactory, tube: str) -> None:
        backend = queues.backend
        backend.put(tube, b"held", priority=0, delay=0, ttr=60)
        consumer = backend.consumer([tube])
        first = consumer.reserve(1)
        assert first is not None
        consumer.close()
        again = consumer.reserve(1)
        assert again is not None
        assert again.job_id == first.job_id
        backend.delete(again.lease)
        with pytest.raises(NotFound):
            backend.stats_job(first.lease.ref)
        consumer.close()

    def test_job_commands_after_the_factory_closed_raise(
        self, queues: QueueFactory, tube: str
    ) -> None:
        backend = queues.backend
        buried = backend.put(tube, b"buried", priority=0, delay=0, ttr=60)
        backend.bury(backend.reserve([tube], 1).lease, priority=0)
        queues.close()
        with pytest.raises(QueueError, match="closed"):
            backend.stats_job(buried)
        with pytest.raises(QueueError, match="closed"):
            backend.kick_job(buried)

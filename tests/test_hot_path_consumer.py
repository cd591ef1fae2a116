"""A consumer's reserve and interrupt() decide, without a lock, which of them ends the reserve.

While a reserve is under way the consumer has one token out; the worker takes
it back when the reserve is over, or interrupt() takes it and shuts the
socket. Exactly one of them gets it: these tests put interrupt() in each
window around it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import greenstalk
import pytest

from queue_beanstalk.backend import Lease
from queue_beanstalk.backends.beanstalk import BeanstalkBackend, _BeanstalkConsumer, _BeanstalkLease
from queue_beanstalk.backends.connections import Connection

from .support import eventually


@pytest.fixture
def backend(beanstalkd_url: str) -> Iterator[BeanstalkBackend]:
    host, port = beanstalkd_url.removeprefix("beanstalk://").rsplit(":", 1)
    made = BeanstalkBackend(host, int(port))
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def tube() -> str:
    return f"hot-{uuid.uuid4().hex[:12]}"


def _put(backend: BeanstalkBackend, tube: str, body: bytes) -> int:
    return backend.put(tube, body, priority=0, delay=0, ttr=60).id


def _ready(beanstalkd_url: str, tube: str, count: int) -> None:
    """Wait until ``tube`` has ``count`` ready jobs (the server sees a close a moment later)."""
    host, port = beanstalkd_url.removeprefix("beanstalk://").rsplit(":", 1)
    with greenstalk.Client((host, int(port)), use=tube, watch=tube) as client:
        eventually(lambda: int(client.stats_tube(tube)["current-jobs-ready"]) == count)


def test_an_interrupt_as_a_batch_arrives_takes_it_back_to_the_server(
    backend: BeanstalkBackend, tube: str, beanstalkd_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(backend, tube, b"one")
    consumer = backend.consumer([tube])
    assert isinstance(consumer, _BeanstalkConsumer)
    read = _BeanstalkConsumer._read_batch

    def read_then_interrupted(self: _BeanstalkConsumer, *args: object) -> object:
        batch = read(self, *args)  # type: ignore[arg-type]
        self.interrupt()  # the reply is read, the token still out: interrupt() takes it
        return batch

    monkeypatch.setattr(_BeanstalkConsumer, "_read_batch", read_then_interrupted)
    lost, batch = consumer.reserve_batch([], 1, 1.0)
    assert (lost, batch) == ([], [])  # it returns nothing ...
    # ... and the job goes back with the socket interrupt() shut.
    assert consumer._conn is not None
    assert consumer._conn.broken
    consumer.close()
    _ready(beanstalkd_url, tube, 1)


def test_an_interrupt_as_one_job_arrives_takes_it_back_to_the_server(
    backend: BeanstalkBackend, tube: str, beanstalkd_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put(backend, tube, b"one")
    consumer = backend.consumer([tube])
    assert isinstance(consumer, _BeanstalkConsumer)
    reserve_on = BeanstalkBackend._reserve_on

    def reserved_then_interrupted(self: BeanstalkBackend, *args: object) -> object:
        reserved = reserve_on(self, *args)  # type: ignore[arg-type]
        consumer.interrupt()
        return reserved

    monkeypatch.setattr(BeanstalkBackend, "_reserve_on", reserved_then_interrupted)
    assert consumer.reserve(1.0) is None
    consumer.close()
    _ready(beanstalkd_url, tube, 1)


def test_an_interrupt_after_a_reserve_leaves_its_jobs_reserved(
    backend: BeanstalkBackend, tube: str, beanstalkd_url: str
) -> None:
    for body in (b"one", b"two"):
        _put(backend, tube, body)
    consumer = backend.consumer([tube])
    lost, batch = consumer.reserve_batch([], 2, 1.0)
    assert not lost
    assert [reserved.body for reserved in batch] == [b"one", b"two"]
    consumer.interrupt()  # no reserve under way: nothing is shut
    for reserved in batch:
        assert reserved.lease.claim()
        backend.delete(reserved.lease)  # settled on its connection, still open
    assert consumer.reserve_batch([], 1, 0.0) == ([], [])  # every later reserve: nothing
    consumer.close()
    _ready(beanstalkd_url, tube, 0)


def test_an_interrupt_before_a_batch_starts_sends_no_reserve_and_keeps_the_deletes(
    backend: BeanstalkBackend, tube: str, beanstalkd_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for body in (b"one", b"two"):
        _put(backend, tube, body)
    consumer = backend.consumer([tube])
    assert isinstance(consumer, _BeanstalkConsumer)
    _, batch = consumer.reserve_batch([], 1, 1.0)
    (done,) = batch
    assert done.lease.claim()
    send = _BeanstalkConsumer._send_batch

    def sent_then_interrupted(self: _BeanstalkConsumer, *args: object) -> object:
        lost = send(self, *args)  # type: ignore[arg-type]
        self.interrupt()  # the deletes are answered; no token is out yet
        return lost

    monkeypatch.setattr(_BeanstalkConsumer, "_send_batch", sent_then_interrupted)
    assert consumer.reserve_batch([done.lease], 1, 1.0) == ([], [])
    consumer.close()
    # The delete went through; the job the dropped reserve may have taken is back.
    _ready(beanstalkd_url, tube, 1)


def test_a_beanstalk_lease_sets_every_field_of_a_lease(backend: BeanstalkBackend) -> None:
    # _BeanstalkLease sets Lease's fields itself, without Lease.__init__ (a
    # frame on every job reserved): a field Lease gains must be set there too.
    connection = cast(Connection, object())
    ours = _BeanstalkLease(7, "a-tube", connection, backend)
    plain = Lease(7, "a-tube", backend.address)
    for field in Lease.__slots__:
        assert getattr(ours, field) == getattr(plain, field), field
    assert ours.connection is connection
    assert ours.backend is backend
    assert ours.claim()
    assert not ours.claim()

"""Prefetch against faults a real beanstalkd shows: a cut connection, touches that must wait.

A connection is cut through a proxy on loopback (:class:`~tests.support.CuttingProxy`),
as a network fault would: beanstalkd hands the jobs it held out again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from queue_beanstalk import Message, QueueFactory, factory
from queue_beanstalk.backends.beanstalk import _BeanstalkLease
from queue_beanstalk.backends.wire import Wire

from .support import CuttingProxy, eventually, gone, ref


@pytest.fixture
def queues(beanstalkd_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_url) as made:
        yield made


@pytest.fixture
def proxy(beanstalkd_url: str) -> Iterator[CuttingProxy]:
    host, port = beanstalkd_url.removeprefix("beanstalk://").split(":")
    made = CuttingProxy((host, int(port)))
    yield made
    made.stop()


def test_prefetched_messages_whose_connection_was_cut_are_not_started(
    proxy: CuttingProxy, queues: QueueFactory, tube: str
) -> None:
    messages = [Message("cut", [str(n)]) for n in range(5)]
    queues.get(tube).put_many(messages)
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def cut_at_first(message: Message) -> None:
        with lock:
            calls[message.args[0]] += 1
            first = sum(calls.values()) == 1
        if first:
            proxy.cut()  # the server hands the other four out again
            time.sleep(0.3)

    with factory(proxy.url()) as through_proxy:
        handler = through_proxy.handler(cut_at_first, tube, prefetch=5)
        handler.start()
        try:
            eventually(lambda: all(gone(queues, ref(m)) for m in messages[1:]))
        finally:
            handler.stop()
            assert handler.wait(10)
    # Each of the four was called once, by the worker's next reservation of
    # it: not also in the batch whose reservations the cut ended.
    assert [calls[str(n)] for n in range(1, 5)] == [1, 1, 1, 1]


def test_a_touch_of_a_handled_message_waits_for_its_busy_connection(
    queues: QueueFactory, tube: str
) -> None:
    # A handled message whose delete waits for the next reserve is claimed,
    # and still reserved: its touch must wait for the connection, not give up.
    job = queues.get(tube).put(Message("held"), ttr=5)
    consumer = queues.backend.consumer([tube])
    try:
        lost, batch = consumer.reserve_batch((), 1, 1)
        (reserved,) = batch
        lease = reserved.lease
        assert isinstance(lease, _BeanstalkLease)
        assert lease.claim()
        lease.connection.lock.acquire()  # another touch on it, say
        threading.Timer(0.3, lease.connection.lock.release).start()
        queues.backend.touch(lease)
        assert queues.backend.stats_job(lease.ref).time_left >= 4
        lost, _ = consumer.reserve_batch([lease], 1, 0)
        assert lost == []
        assert gone(queues, lease.ref)
    finally:
        consumer.close()
    assert job == reserved.job_id


def test_a_batch_is_looked_at_for_a_cut_without_a_system_call_a_message(
    proxy: CuttingProxy, queues: QueueFactory, tube: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues.get(tube).put_many([Message("held", [str(n)]) for n in range(8)])
    polls: list[float] = []
    readable = Wire.readable

    def counted(self: Wire, seconds: float) -> bool:
        if seconds == 0:  # a look for stray input, not a wait for a reply
            polls.append(seconds)
        return readable(self, seconds)

    monkeypatch.setattr(Wire, "readable", counted)
    with factory(proxy.url()) as through_proxy:
        consumer = through_proxy.backend.consumer([tube])
        try:
            _, batch = consumer.reserve_batch((), 8, 1)
            assert len(batch) == 8
            polls.clear()
            assert not any(reserved.lease.lost for reserved in batch)
            assert len(polls) <= 1, "a poll for every message of the batch"
            proxy.cut()
            lease = batch[0].lease
            assert isinstance(lease, _BeanstalkLease)
            # Found in step a moment ago: the cut shows once that moment has passed.
            eventually(lambda: lease.lost)
        finally:
            consumer.close()

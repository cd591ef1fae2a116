"""The shortcuts of the hot paths read what the long way reads, whatever the replies.

A put_many reads a run of ``INSERTED`` replies in one call, a handler's batch
its deletes' ``DELETED`` replies in one, and both fall back to reading one
reply at a time at anything else; NamedTuples are built in place. These tests
put a refusal among the usual replies, cut the replies into pieces, and check
that nothing is misplaced.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import cast

import pytest

from queue_beanstalk import Message, MessageTooBig, QueueFactory, ServerError, factory
from queue_beanstalk.backend import Consumer, JobRef, Lease, Reserved
from queue_beanstalk.backends.beanstalk import BeanstalkBackend, _PutMany
from queue_beanstalk.backends.connections import Connection
from queue_beanstalk.backends.wire import BodyLimit

from .conftest import StartFake
from .support import Reply

JOB = b'RESERVED %d 24\r\n{"action":"a","args":[]}\r\n'


class ChunkedSocket:
    """A connected socket whose replies, scripted, come ``size`` bytes a receive.

    ``fileno`` is one end of a socketpair with a byte waiting that is never
    read: a poll always finds input, so each receive gets the next piece.
    """

    def __init__(self, replies: bytes, size: int) -> None:
        self._ends = socket.socketpair()
        self._ends[1].sendall(b"x")
        self._replies = replies
        self._size = size
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        piece = self._replies[: min(size, self._size)]
        self._replies = self._replies[len(piece) :]
        return piece

    def fileno(self) -> int:
        return self._ends[0].fileno()

    def setsockopt(self, *args: object) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def close(self) -> None:
        for end in self._ends:
            end.close()


@pytest.fixture
def backend() -> Iterator[BeanstalkBackend]:
    made = BeanstalkBackend("127.0.0.1", 1)  # never connects: the tests hand it a connection
    try:
        yield made
    finally:
        made.close()


@pytest.mark.parametrize("piece", [4096, 1, 3, 7], ids=lambda size: f"{size}-byte-pieces")
def test_refusals_among_inserted_replies_are_each_in_their_place(
    backend: BeanstalkBackend, piece: int
) -> None:
    replies = b"INSERTED 1\r\nJOB_TOO_BIG\r\nBURIED 3\r\nDRAINING\r\nINSERTED 5\r\nINSERTED 6\r\n"
    sock = ChunkedSocket(replies, piece)
    conn = Connection(cast(socket.socket, sock), 2.0, BodyLimit())
    done = _PutMany((0, 0, 60), 20)
    done.ids += [11, 12]  # an earlier batch's: this one's positions start at 2
    try:
        backend._put_batch(conn, b"the batch", [5, 30, 7, 9, 5, 5], done)
    finally:
        sock.close()
    assert done.ids == [11, 12, 1, None, 3, None, 5, 6]
    assert sorted(done.errors) == [3, 5]
    too_big = done.errors[3]
    assert isinstance(too_big, MessageTooBig)
    assert too_big.size == 30  # the size of that very put
    assert isinstance(done.errors[5], ServerError)
    assert done.unanswered == 0
    assert not conn.wire.replies.unread


def _consumer_holding_three(
    fake_beanstalkd: StartFake, deletes: list[Reply]
) -> tuple[QueueFactory, Consumer, list[Lease]]:
    """A consumer of queue "q" on a scripted server, holding jobs 1 to 3; job 4 is next."""
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n")],
            b"ignore": [Reply(b"WATCHING 1\r\n")],
            b"reserve-with-timeout": [Reply(JOB % n) for n in (1, 2, 3, 4)],
            b"delete": deletes,
        }
    )
    queues = factory(server.url, timeout=2)
    consumer = queues.backend.consumer(["q"])
    _, held = consumer.reserve_batch((), 3, 1)
    assert [reserved.job_id for reserved in held] == [1, 2, 3]
    return queues, consumer, [reserved.lease for reserved in held]


@pytest.mark.parametrize(
    ("replies", "gone"),
    [
        ([b"DELETED\r\n", b"NOT_FOUND\r\n", b"DELETED\r\n"], [2]),
        ([b"NOT_FOUND\r\n", b"DELETED\r\n", b"DELETED\r\n"], [1]),
        ([b"DELETED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n"], [3]),
        ([b"NOT_FOUND\r\n", b"NOT_FOUND\r\n", b"NOT_FOUND\r\n"], [1, 2, 3]),
    ],
    ids=["middle", "first", "last", "all"],
)
def test_a_batch_names_each_delete_that_found_no_job(
    fake_beanstalkd: StartFake, replies: list[bytes], gone: list[int]
) -> None:
    queues, consumer, leases = _consumer_holding_three(
        fake_beanstalkd, [Reply(reply) for reply in replies]
    )
    with queues:
        for lease in leases:
            lease.claim()
        lost, batch = consumer.reserve_batch(leases, 1, 1)
        assert [lease.job_id for lease in lost] == gone
        assert [reserved.job_id for reserved in batch] == [4]
        consumer.close()


def test_tuples_built_in_place_have_every_field(beanstalkd_url: str, tube: str) -> None:
    # JobRef and Reserved are built with tuple.__new__ on the hot paths, which
    # would build them a field short, silently, were a field added.
    with factory(beanstalkd_url) as queues:
        backend = queues.backend
        refs = [
            backend.put(tube, b"one", priority=0, delay=0, ttr=60),
            *backend.put_many(tube, [b"two", b"three"], priority=0, delay=0, ttr=60),
        ]
        for ref in refs:
            assert len(ref) == len(JobRef._fields)
            assert JobRef(*ref) == ref
        consumer = backend.consumer([tube])
        try:
            _, batch = consumer.reserve_batch((), 2, 1)
            taken = [*batch, backend.reserve((tube,), 1)]
        finally:
            consumer.close()
        for reserved in taken:
            assert len(reserved) == len(Reserved._fields)
            assert Reserved(*reserved) == reserved


@pytest.mark.parametrize("delay", [False, True], ids=["False", "True"])
def test_a_put_refuses_a_bool_delay(delay: bool) -> None:
    # Queue.put's shortcut for the defaults must not take False for 0.
    with factory("memory://") as queues, pytest.raises(TypeError):
        queues.get("q").put(Message("a"), delay=delay)

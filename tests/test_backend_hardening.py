"""The beanstalkd backend against misbehaving servers and awkward use.

Server misbehaviour a real beanstalkd will not produce (a BURIED put, a refused
pipelined delete, a refused watch, silence) comes from a scripted server on
loopback; everything else runs against a real beanstalkd. A get after a
message was dropped unsettled, which a real beanstalkd answers DEADLINE_SOON,
is in the contract (``tests/contract/queue_api.py``): every backend owes it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import greenstalk
import pytest

from queue_beanstalk import (
    Handler,
    Message,
    MessageTooBig,
    QueueConnectionError,
    QueueFactory,
    factory,
)
from queue_beanstalk.backend import Consumer, Reserved
from queue_beanstalk.backends.beanstalk import BeanstalkBackend, _BeanstalkLease
from queue_beanstalk.backends.wire import Wire
from queue_beanstalk.testing import BeanstalkdServer

from .conftest import StartFake
from .support import STATS_OK, Reply, eventually, stats_reply


def _backend(queues: QueueFactory) -> BeanstalkBackend:
    backend = queues.backend
    assert isinstance(backend, BeanstalkBackend)
    return backend


# A put answered BURIED <id>: stored, not failed.


def test_a_put_answered_buried_returns_its_id_and_warns(
    fake_beanstalkd: StartFake, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_beanstalkd({b"put": [Reply(b"BURIED 7\r\n")]})
    with factory(server.url, timeout=2) as queues:
        message = Message("kept")
        assert queues.get("q").put(message) == 7
        assert message.id == 7
    assert any("buried" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_put_many_counts_a_buried_put_as_stored(fake_beanstalkd: StartFake) -> None:
    server = fake_beanstalkd(
        {b"put": [Reply(b"INSERTED 1\r\n"), Reply(b"BURIED 2\r\n"), Reply(b"INSERTED 3\r\n")]}
    )
    with factory(server.url, timeout=2) as queues:
        assert queues.get("q").put_many([Message("a"), Message("b"), Message("c")]) == [1, 2, 3]


# DEADLINE_SOON: a reserve on a connection whose job is about to time out.


JOB = b'RESERVED %d 24\r\n{"action":"a","args":[]}\r\n'


def _first_job(
    fake_beanstalkd: StartFake, reserves: list[Reply], deletes: list[Reply]
) -> tuple[QueueFactory, Consumer, Reserved]:
    """A consumer of queue "q" on a scripted server, and the first job it reserved."""
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n")],
            b"ignore": [Reply(b"WATCHING 1\r\n")],
            b"reserve-with-timeout": reserves,
            b"delete": deletes,
        }
    )
    queues = factory(server.url, timeout=2)
    consumer = _backend(queues).consumer(["q"])
    first = consumer.reserve(1)
    assert first is not None
    first.lease.claim()
    return queues, consumer, first


def test_deadline_soon_after_a_pipelined_delete_is_waited_out(fake_beanstalkd: StartFake) -> None:
    reserves = [Reply(JOB % 1), Reply(b"DEADLINE_SOON\r\n"), Reply(JOB % 2)]
    queues, consumer, first = _first_job(fake_beanstalkd, reserves, [Reply(b"DELETED\r\n")])
    with queues:
        deleted, second = consumer.delete_and_reserve(first.lease, 3)
        assert deleted
        assert second is not None
        assert second.job_id == 2
        consumer.close()


# A pipelined delete refused: the reserve's reply is still to come.


def test_a_pipelined_delete_refused_drops_the_connection_out_of_step(
    fake_beanstalkd: StartFake,
) -> None:
    reserves = [Reply(JOB % 1), Reply(JOB % 2)]
    queues, consumer, first = _first_job(fake_beanstalkd, reserves, [Reply(b"INTERNAL_ERROR\r\n")])
    with queues:
        assert isinstance(first.lease, _BeanstalkLease)
        conn = first.lease.connection
        with pytest.raises(QueueConnectionError, match="INTERNAL_ERROR"):
            consumer.delete_and_reserve(first.lease, 1)
        assert conn.broken, "a connection with a reply pending was kept"
        consumer.close()


# A prefetch batch: deletes and reserves in one write, replies read in order.


def test_a_batch_cut_short_by_deadline_soon_waits_for_one_job(fake_beanstalkd: StartFake) -> None:
    reserves = [
        Reply(JOB % 1),
        Reply(b"DEADLINE_SOON\r\n"),
        Reply(b"DEADLINE_SOON\r\n"),
        Reply(b"DEADLINE_SOON\r\n"),
        Reply(JOB % 2),
    ]
    queues, consumer, first = _first_job(fake_beanstalkd, reserves, [Reply(b"DELETED\r\n")])
    with queues:
        lost, batch = consumer.reserve_batch([first.lease], 3, 3)
        assert lost == []
        assert [reserved.job_id for reserved in batch] == [2]
        consumer.close()


def test_a_reserve_refused_inside_a_batch_drops_the_connection_out_of_step(
    fake_beanstalkd: StartFake,
) -> None:
    reserves = [Reply(JOB % 1), Reply(JOB % 2), Reply(b"INTERNAL_ERROR\r\n"), Reply(JOB % 3)]
    queues, consumer, first = _first_job(fake_beanstalkd, reserves, [Reply(b"DELETED\r\n")])
    with queues:
        assert isinstance(first.lease, _BeanstalkLease)
        conn = first.lease.connection
        with pytest.raises(QueueConnectionError, match="INTERNAL_ERROR"):
            consumer.reserve_batch([first.lease], 3, 1)
        assert conn.broken, "a connection with replies pending was kept"
        consumer.close()


def test_a_tube_lookup_refused_inside_a_batch_drops_the_connection_out_of_step(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n"), Reply(b"WATCHING 3\r\n")],
            b"ignore": [Reply(b"WATCHING 2\r\n")],
            b"reserve-with-timeout": [Reply(JOB % 1), Reply(JOB % 2)],
            b"stats-job": [Reply(b"NOT_FOUND\r\n"), stats_reply(b"---\nid: 2\ntube: b\n")],
        }
    )
    with factory(server.url, timeout=2) as queues:
        consumer = _backend(queues).consumer(["a", "b"])
        with pytest.raises(QueueConnectionError, match="NOT_FOUND"):
            consumer.reserve_batch((), 2, 1)
        consumer.close()


def test_give_back_skips_a_job_already_gone_and_stays_in_step(
    fake_beanstalkd: StartFake,
) -> None:
    reserves = [Reply(JOB % 1), Reply(JOB % 2), Reply(JOB % 3)]
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n")],
            b"ignore": [Reply(b"WATCHING 1\r\n")],
            b"reserve-with-timeout": reserves,
            b"stats-job": [
                stats_reply(b"---\nid: 1\ntube: q\npri: 9\n"),
                Reply(b"NOT_FOUND\r\n"),
                stats_reply(b"---\nid: 3\ntube: q\npri: 4\n"),
            ],
            b"release": [Reply(b"RELEASED\r\n"), Reply(b"RELEASED\r\n")],
        }
    )
    with factory(server.url, timeout=2) as queues:
        consumer = _backend(queues).consumer(["q"])
        _, batch = consumer.reserve_batch((), 3, 1)
        assert [reserved.job_id for reserved in batch] == [1, 2, 3]
        consumer.give_back([reserved.lease for reserved in batch])
        assert server.commands.count(b"release") == 2  # not job 2's, gone already
        conn = batch[0].lease.connection  # type: ignore[attr-defined]
        assert not conn.broken
        assert conn.holding() == 0
        consumer.close()


# watch refused part way: what the connection watches stays true.


def test_a_watch_refused_part_way_leaves_the_watch_list_true(fake_beanstalkd: StartFake) -> None:
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n"), Reply(b"OUT_OF_MEMORY\r\n")],
            b"reserve-with-timeout": [Reply(b"TIMED_OUT\r\n")],
        }
    )
    with factory(server.url, timeout=2) as queues:
        backend = _backend(queues)
        with pytest.raises(Exception, match="OUT_OF_MEMORY"):
            backend.reserve(("a", "b"), 0)
        conn = next(iter(backend._pool.open))
        assert not conn.broken
        # "a" was watched before the refusal; the server knows it, so must we.
        assert conn.watched == {"default", "a"}


# Connections: bounded, trimmed after settling, puts away from reservations.


def test_one_thread_holding_many_messages_opens_at_most_max_connections(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url, max_connections=4, max_idle=1) as queues:
        queue = queues.get(tube)
        queue.put_many([Message("batch", [str(n)]) for n in range(60)])
        held = [queue.get(timeout=1) for _ in range(60)]
        backend = _backend(queues)
        assert len(backend._pool.open) <= 4
        for message in held:
            queue.delete(message)
        # Once settled, free idle connections beyond max_idle are closed.
        assert len(backend._pool.open) <= 2


def test_at_the_bound_a_command_waits_then_fails_clearly(beanstalkd_url: str, tube: str) -> None:
    with factory(beanstalkd_url, max_connections=1, timeout=0.5) as queues:
        queue = queues.get(tube)
        with ThreadPoolExecutor(1) as pool:
            blocked = pool.submit(queue.get, 3)  # holds the only connection
            pool_ = _backend(queues)._pool
            eventually(lambda: any(conn.lock.locked() for conn in list(pool_.open)))
            started = time.monotonic()
            with pytest.raises(QueueConnectionError, match="max_connections"):
                queue.put(Message("no room"))
            assert time.monotonic() - started < 2
            queue_other = queues.get(tube + "-x")
            with pytest.raises(TimeoutError):
                blocked.result(timeout=10)
            queue_other.put(Message("room again"))


def test_a_put_does_not_share_a_connection_holding_a_reservation(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        queue.put(Message("held"))
        held = queue.get(timeout=1)
        assert isinstance(held._lease, _BeanstalkLease)
        queue.put(Message("another"))
        # A failing put would drop its connection; the reservation is not on it.
        assert _backend(queues)._pool._affinity.conn is not held._lease.connection
        queue.delete(held)


# Timeouts.


def test_a_timeout_below_a_microsecond_still_bounds_a_reply(fake_beanstalkd: StartFake) -> None:
    server = fake_beanstalkd({})  # stats and use answered, then silence for the put
    with factory(server.url, timeout=1e-9) as queues:
        backend = _backend(queues)
        backend._max_job_size = 65535  # known: the put is the first command
        raised: list[BaseException] = []

        def put() -> None:
            try:
                queues.get("q").put(Message("x"))
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                raised.append(exc)

        # A daemon thread: were the put to hang, the test fails instead of hanging.
        putter = threading.Thread(target=put, daemon=True)
        putter.start()
        putter.join(5)
        assert not putter.is_alive(), "a put with timeout=1e-9 hung"
        assert isinstance(raised[0], QueueConnectionError)


def test_stop_interrupts_a_worker_that_is_connecting() -> None:
    # A listener whose backlog is full: connects to it hang, as to a host that drops SYNs.
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        with factory(f"beanstalk://127.0.0.1:{port}", connect_timeout=30) as queues:
            handler: Handler = queues.handler(lambda message: None, "q", concurrency=2)
            handler.start()
            consumers = handler._consumers
            eventually(lambda: all(c._connecting is not None for c in consumers))  # type: ignore[attr-defined]
            started = time.monotonic()
            handler.stop()
            assert handler.wait(5)
            assert time.monotonic() - started < 2
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_max_job_size_is_asked_again_after_the_server_restarts(tmp_path: object) -> None:
    first = BeanstalkdServer(max_job_size=1000).start()
    port = first.port
    try:
        with factory(first.url) as queues:
            queue = queues.get("sizes")
            with pytest.raises(MessageTooBig):
                queue.put(Message("big", ["x" * 5000]))
            first.stop()
            second = BeanstalkdServer(port, max_job_size=100_000).start()
            try:
                eventually(lambda: _puts(queue), timeout=10)
            finally:
                second.stop()
    finally:
        first.stop()


def _puts(queue: object) -> bool:
    try:
        queue.put(Message("big", ["x" * 5000]))  # type: ignore[attr-defined]
    except QueueConnectionError:
        return False
    return True


# URLs.


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("beanstalk://127.0.0.1:0", "port"),
        ("beanstalk://user:secret@127.0.0.1:11300", "no user or password"),
        ("beanstalk://user@127.0.0.1", "no user or password"),
    ],
)
def test_a_url_the_backend_cannot_honour_is_a_value_error(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        factory(url)
    assert "secret" not in str(caught.value)


def test_an_interrupt_while_a_connection_is_checked_leaves_it_unlocked(
    beanstalkd_url: str, tube: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        queue.put(Message("warm-up"))  # the thread now has a connection of its own
        conn = _backend(queues)._pool._affinity.conn
        conn.checked_at -= 1  # no longer fresh: the next checkout polls it

        def interrupted(self: object, seconds: float) -> bool:
            raise KeyboardInterrupt  # Ctrl-C arriving in the poll

        with monkeypatch.context() as patch:
            patch.setattr(Wire, "readable", interrupted)
            with pytest.raises(KeyboardInterrupt):
                queue.put(Message("interrupted"))
        assert not conn.lock.locked(), "the connection stayed locked for good"
        assert queue.put(Message("after"))


# Replies that would hang or exhaust a client, through the public API.


def test_a_put_whose_reply_trickles_is_cut_off_at_its_timeout(fake_beanstalkd: StartFake) -> None:
    server = fake_beanstalkd({b"put": [Reply(b"INSERTED 12345678\r\n", trickle=0.4)]})
    with factory(server.url, timeout=1) as queues:
        queues.backend.max_job_size()
        started = time.monotonic()
        with pytest.raises(QueueConnectionError):
            queues.get("q").put(Message("x"))
        assert time.monotonic() - started < 2.5  # not the 7 s the reply would take


@pytest.mark.parametrize(
    "reply",
    [b"RESERVED 1 1000000000000000000000000000000\r\n", b"RESERVED 1 209715200\r\nabc"],
    ids=["absurd", "200MB-claim"],
)
def test_a_handler_survives_replies_announcing_absurd_sizes(
    fake_beanstalkd: StartFake, reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n")],
            b"ignore": [Reply(b"WATCHING 1\r\n")],
            b"reserve-with-timeout": [Reply(reply)],
        }
    )
    with factory(server.url, timeout=1) as queues:
        queues.backend.max_job_size()  # the server's limit is now known: 65535
        handler = queues.handler(lambda message: None, "q")
        handler.start()
        try:
            eventually(lambda: "lost the server" in caplog.text)
            assert handler.running
        finally:
            handler.stop()
            assert handler.wait(10)
    assert "over the limit" in caplog.text or "at most 20 digits" in caplog.text


def test_the_body_limit_follows_a_restart_with_a_higher_max_job_size(
    server: BeanstalkdServer,
) -> None:
    small = BeanstalkdServer(max_job_size=1000).start()
    try:
        with factory(small.url) as queues:
            queue = queues.get("sizes")
            assert queues.backend.max_job_size() == 1000  # every reply is now held to it
            small.stop()
            bigger = BeanstalkdServer(small.port, max_job_size=100_000).start()
            try:
                # Another client puts a job the old limit would refuse to read.
                host, port = bigger.url.removeprefix("beanstalk://").split(":")
                with greenstalk.Client((host, int(port)), encoding=None, use="sizes") as other:
                    other.put(b'{"action":"big","args":["' + b"x" * 5000 + b'"]}')
                got = queue.get(timeout=2)
                assert got.action == "big"
                queue.delete(got)
            finally:
                bigger.stop()
    finally:
        small.stop()


def test_a_put_too_big_for_the_server_is_message_too_big_at_the_bound(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd(
        {b"put": [Reply(b"JOB_TOO_BIG\r\n")], b"stats": [STATS_OK, stats_reply(SMALL)]}
    )
    with factory(server.url, timeout=1, max_connections=1) as queues:
        with pytest.raises(MessageTooBig) as caught:
            queues.get("q").put(Message("x", ["y" * 100]))
        assert caught.value.limit == 10  # the server's own, asked once the put was over


SMALL = b"---\nmax-job-size: 10\n"


def test_a_reserve_waiting_out_deadline_soon_lets_the_job_be_settled(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url, max_connections=1) as queues:
        queue = queues.get(tube)
        queue.put(Message("held"), ttr=2)
        held = queue.get(timeout=1)
        started = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            # Shares the only connection, and hears DEADLINE_SOON for "held".
            waiting = pool.submit(queue.get, 3)
            eventually(lambda: time.monotonic() - started > 0.2)
            queue.delete(held)  # gets the connection while the reserve pauses
            deleted_after = time.monotonic() - started
            with pytest.raises(TimeoutError):
                waiting.result(timeout=10)
        assert deleted_after < 1.8, "the settle waited for the job to run out"


def test_a_programming_error_in_a_command_passes_through_and_drops_the_connection(
    beanstalkd_url: str, tube: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        queue.put(Message("held"))
        held = queue.get(timeout=1)
        assert isinstance(held._lease, _BeanstalkLease)
        conn = held._lease.connection
        bug = ValueError("a bug below the backend")

        def buggy(self: object, command: bytes, expected: bytes) -> None:
            raise bug

        with monkeypatch.context() as patch:
            patch.setattr(Wire, "simple", buggy)
            with pytest.raises(ValueError, match="a bug below") as caught:
                queue.delete(held)
        assert caught.value is bug, "a bug was taken for a connection error"
        assert conn.broken  # a reply may be left unread: the connection cannot be reused

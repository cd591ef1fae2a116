"""What only the beanstalkd backend has: its connections, the server's own limits, restarts."""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Callable
from functools import partial

import greenstalk
import pytest

from queue_beanstalk import (
    BeanstalkBackend,
    JsonCodec,
    Message,
    MessageTooBig,
    NotFound,
    QueueConnectionError,
    Timeout,
    factory,
)
from queue_beanstalk.backends.beanstalk import _BeanstalkLease
from queue_beanstalk.testing import BeanstalkdServer

from .conftest import StartFake
from .support import Reply


def _counters(url: str) -> dict[str, int]:
    host, port = url.removeprefix("beanstalk://").split(":")
    with greenstalk.Client((host, int(port))) as client:
        stats: dict[str, object] = dict(client.stats())
    return {key: int(str(value)) for key, value in stats.items() if key.startswith("cmd-")}


def test_max_job_size_is_read_from_the_server() -> None:
    with BeanstalkdServer(max_job_size=1000) as server, factory(server.url) as queues:
        assert queues.backend.max_job_size() == 1000
        queue = queues.get("small")
        with pytest.raises(MessageTooBig) as caught:
            queue.put(Message("big", ["x" * 1000]))
        assert caught.value.limit == 1000
        queue.put(Message("fits", ["x" * 900]))


def test_use_and_watch_cost_a_round_trip_only_when_the_tube_changes(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        queue.put(Message("warm-up"))  # also reads max-job-size once
        queue.delete(queue.get(timeout=1))
        before = _counters(beanstalkd_url)
        for _ in range(5):
            queue.put(Message("same tube"))
        for _ in range(5):
            queue.delete(queue.get(timeout=1))
        after = _counters(beanstalkd_url)
    delta = {key: after[key] - before[key] for key in after if after[key] != before[key]}
    assert delta.get("cmd-use", 0) == 0
    assert delta.get("cmd-watch", 0) == 0
    assert delta.get("cmd-ignore", 0) == 0
    assert delta["cmd-put"] == 5
    assert delta["cmd-reserve-with-timeout"] == 5
    assert delta["cmd-delete"] == 5


def test_a_reserve_watches_the_tubes_it_is_given_each_time(beanstalkd_url: str, tube: str) -> None:
    # A connection remembers the very tuple of tubes it watches for; a list is
    # copied into a new tuple each call, so changing it between calls tells.
    # Reserved.tube comes from the caller's list for one tube: what was
    # reserved is told by the body and by the server's stats-job.
    with factory(beanstalkd_url) as queues:
        backend = queues.backend
        codec = queues.codec
        first, second = queues.get(f"{tube}-a"), queues.get(f"{tube}-b")
        # The second's go first: a reserve that also watched its tube would take one.
        for _ in range(3):
            second.put(Message("second"))
        for _ in range(3):
            first.put(Message("first"))
        tubes = [first.name]
        reserved = backend.reserve(tubes, 1)
        assert codec.decode(reserved.body).action == "first"
        assert backend.stats_job(reserved.lease.ref).tube == first.name
        backend.delete(reserved.lease)
        tubes[0] = second.name
        reserved = backend.reserve(tubes, 1)
        assert codec.decode(reserved.body).action == "second"
        assert backend.stats_job(reserved.lease.ref).tube == second.name
        backend.delete(reserved.lease)
        # Two queues taking turns in one thread share its connection: each get
        # must watch its own tube again.
        for _ in range(2):
            got = first.get(timeout=1)
            assert got.action == "first"
            first.delete(got)
            got = second.get(timeout=1)
            assert got.action == "second"
            second.delete(got)


def test_watch_and_ignore_cost_a_round_trip_only_when_the_tubes_change(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as queues:
        backend = queues.backend
        assert isinstance(backend, BeanstalkBackend)
        first, second = queues.get(tube), queues.get(f"{tube}-other")
        for _ in range(6):
            first.put(Message("first"))
        second.put(Message("second"))
        names = [tube]
        backend.delete(backend.reserve(tuple(names), 1).lease)  # warm-up: watches once
        before = _counters(beanstalkd_url)
        for _ in range(3):
            # The same tubes in a new tuple each time: the sets match, nothing is sent.
            backend.delete(backend.reserve(tuple(names), 1).lease)
        after = _counters(beanstalkd_url)
        assert after["cmd-reserve-with-timeout"] - before["cmd-reserve-with-timeout"] == 3
        assert after["cmd-watch"] - before["cmd-watch"] == 0
        assert after["cmd-ignore"] - before["cmd-ignore"] == 0
        before = after
        first.delete(first.get(timeout=1))  # watches what the tuples did: nothing sent
        second.delete(second.get(timeout=1))  # watch other, ignore tube
        first.delete(first.get(timeout=1))  # watch tube, ignore other
        after = _counters(beanstalkd_url)
        assert len(backend._pool.open) == 1, "the queues did not take turns on one connection"
    assert after["cmd-watch"] - before["cmd-watch"] == 2
    assert after["cmd-ignore"] - before["cmd-ignore"] == 2


INTERRUPT = KeyboardInterrupt("interrupted mid-command")


def _interrupt(data: object, flags: int = 0) -> None:
    """Stand in for a socket's sendall, as a Ctrl-C arriving mid-command would."""
    raise INTERRUPT


@pytest.mark.parametrize("operation", ["put", "get", "delete"])
def test_an_interrupt_mid_command_passes_through_and_drops_the_connection(
    beanstalkd_url: str, tube: str, operation: str
) -> None:
    with factory(beanstalkd_url) as queues:
        backend = queues.backend
        assert isinstance(backend, BeanstalkBackend)
        queue = queues.get(tube)
        queue.put(Message("warm-up"))  # the thread now has a connection of its own
        queue.delete(queue.get(timeout=1))
        if operation == "delete":
            queue.put(Message("held"))
            held = queue.get(timeout=1)
            lease = held._lease
            assert isinstance(lease, _BeanstalkLease)
            conn = lease.connection
            command: Callable[[], object] = partial(queue.delete, held)
        else:
            conn = backend._pool._affinity.conn
            if operation == "put":
                command = partial(queue.put, Message("interrupted"))
            else:
                command = partial(queue.get, 0)
        assert conn in backend._pool.open
        conn.wire.send = _interrupt
        with pytest.raises(KeyboardInterrupt) as caught:
            command()
        assert caught.value is INTERRUPT
        assert conn.broken
        assert conn not in backend._pool.open
        # Most urgent, so it comes before "held", which the server takes back.
        queue.put(Message("after"), priority=0)
        got = queue.get(timeout=1)
        assert got.action == "after"
        queue.delete(got)


def test_connections_disable_nagle(beanstalkd_url: str, tube: str) -> None:
    with factory(beanstalkd_url) as queues:
        queues.get(tube).put(Message("x"))
        backend = queues.backend
        assert isinstance(backend, BeanstalkBackend)
        sockets = [conn.sock for conn in backend._pool.open]
        assert sockets
        for sock in sockets:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_a_restarted_server_is_used_again_by_the_same_factory(server: BeanstalkdServer) -> None:
    with factory(server.url, connect_timeout=1) as queues:
        queue = queues.get("restart")
        queue.put(Message("before"))
        held = queue.get(timeout=1)
        server.kill()
        with pytest.raises(QueueConnectionError) as caught:
            queue.put(Message("while down"))
        assert f"127.0.0.1:{server.port}" in str(caught.value)
        server.start()
        queue.put(Message("after"))
        got = queue.get(timeout=1)
        assert got == Message("after")
        queue.delete(got)
        # The reservation died with the old server's connection.
        with pytest.raises(NotFound, match="lost"):
            queue.delete(held)


def test_a_closed_connection_returns_its_reservations_to_the_server(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as producer:
        job_id = producer.get(tube).put(Message("x"))
    consumer = factory(beanstalkd_url)
    held = consumer.get(tube).get(timeout=1)
    assert held.id == job_id
    consumer.close()
    with factory(beanstalkd_url) as other:
        again = other.get(tube).get(timeout=1)
        assert again.id == job_id
        other.get(tube).delete(again)


def test_put_to_a_server_that_is_not_there_fails_fast(server: BeanstalkdServer) -> None:
    server.stop()
    with factory(server.url, connect_timeout=1) as queues:
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{server.port}"):
            queues.get("nowhere").put(Message("x"))
        assert time.monotonic() - started < 2


def test_an_abandoned_message_does_not_pin_its_connection(beanstalkd_url: str, tube: str) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        backend = queues.backend
        assert isinstance(backend, BeanstalkBackend)
        for _ in range(5):
            queue.put(Message("dropped"), ttr=1)
            message = queue.get(timeout=1)
            del message  # never settled: the server takes it back after its ttr
            gc.collect()
        assert len(backend._pool.open) == 1


def test_a_long_get_does_not_stretch_the_next_replys_timeout(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd(
        {
            b"watch": [Reply(b"WATCHING 2\r\n")],
            b"ignore": [Reply(b"WATCHING 1\r\n")],
            b"reserve-with-timeout": [Reply(b"TIMED_OUT\r\n")] * 100_000,
        }
    )
    with factory(server.url, timeout=0.1) as queues:
        queue = queues.get("q")
        with pytest.raises(Timeout):
            queue.get(timeout=2)
        started = time.monotonic()
        with pytest.raises(QueueConnectionError, match="socket timeout"):
            queue.put(Message("into silence"))
        # 0.1 s, not the 1.1 s the last reserve of the get waited.
        assert time.monotonic() - started < 0.8


def test_a_server_restarted_with_a_lower_limit_refuses_with_its_new_limit(
    server: BeanstalkdServer,
) -> None:
    with factory(server.url) as queues:
        queue = queues.get("limits")
        queue.put(Message("small"))  # the factory learns the server's limit, 65,535
        server.stop()
        with BeanstalkdServer(port=server.port, max_job_size=100):
            # The thread now uses this connection in place; asking the new limit
            # from inside the refused put must take another, never wait for it.
            queue.put(Message("small"))
            big = Message("big", ["x" * 500])
            with pytest.raises(MessageTooBig) as caught:
                queue.put(big)
            assert (caught.value.size, caught.value.limit) == (len(JsonCodec().encode(big)), 100)
            queue.put(Message("small again"))  # the connection is still good


def test_a_get_never_waits_on_the_connection_that_holds_the_threads_last_message(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as queues:
        queue = queues.get(tube)
        queue.put(Message("held"))
        held = queue.get(timeout=1)
        settled_after: list[float] = []
        started = time.monotonic()

        def settle() -> None:
            queue.delete(held)
            settled_after.append(time.monotonic() - started)

        settler = threading.Timer(0.2, settle)
        settler.start()
        try:
            with pytest.raises(Timeout):
                queue.get(timeout=2)  # on another connection: the delete goes through at once
        finally:
            settler.join()
        assert settled_after[0] < 1.5


def test_idle_connections_beyond_max_idle_are_closed_when_one_comes_back(
    beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url, max_idle=1) as queues:
        queue = queues.get(tube)
        backend = queues.backend
        assert isinstance(backend, BeanstalkBackend)
        for number in range(3):
            queue.put(Message("held", [str(number)]))
        # A connection holding a message is never used for a get: three of them.
        held = [queue.get(timeout=1) for _ in range(3)]
        assert len(backend._pool.open) == 3
        for message in held:
            queue.delete(message)
        # Another thread's put borrows one from the pool and brings it back.
        producer = threading.Thread(target=queue.put, args=(Message("trim"),))
        producer.start()
        producer.join()
        assert len(backend._pool.open) == 1

"""Wire's bounds: the time a reply may take, the size it may announce, and hostile bytes."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_beanstalk.backends import protocol, wire
from queue_beanstalk.backends.connections import set_timeouts
from queue_beanstalk.backends.protocol import ProtocolError, Refused
from queue_beanstalk.backends.wire import BodyLimit, Wire
from queue_beanstalk.testing import BeanstalkdNotFound, BeanstalkdServer

from .conftest import StartFake
from .support import Reply

# beanstalkd refuses a larger -z: it lowers it to this (its JOB_DATA_SIZE_LIMIT_MAX).
CEILING = 1_073_741_824

fuzz = settings(max_examples=300, deadline=None)


def _wire(sock: socket.socket, timeout: float, limit: BodyLimit | None = None) -> Wire:
    """A Wire on ``sock`` with the socket's own timeouts set as a Connection sets them."""
    set_timeouts(sock, timeout)
    return Wire(sock, timeout=timeout, limit=limit)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Both ends of a socket pair: ours for a Wire, theirs to play the server."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        yield ours, theirs


@contextlib.contextmanager
def _sending_later(sock: socket.socket, *pieces: tuple[float, bytes]) -> Iterator[None]:
    """Send each ``(seconds, data)`` that many seconds after the start, until the block ends."""
    stop = threading.Event()
    started = time.monotonic()

    def send() -> None:
        for at, data in pieces:
            if stop.wait(max(0.0, started + at - time.monotonic())):
                return
            sock.sendall(data)

    thread = threading.Thread(target=send)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _trickled(data: bytes, start: float, pace: float) -> list[tuple[float, bytes]]:
    """``data`` as pieces of one byte, the first at ``start``, then one every ``pace`` seconds."""
    return [(start + pace * n, data[n : n + 1]) for n in range(len(data))]


# --- Finding 6: the timeout bounds a whole reply, not each receive ---------------------

_STATS = b"---\nmax-job-size: 65535\ncurrent-jobs-ready: 0\n"


def _put(ours: Wire) -> object:
    ours.send(protocol.put(b"body", 0, 0, 60)[0])
    return ours.reply_int(b"INSERTED")


def _reserve(ours: Wire) -> object:
    ours.send(protocol.reserve(5)[0])
    return ours.reserved(time.monotonic() + 5)


def _stats(ours: Wire) -> object:
    return wire.stats(ours, protocol.STATS)


@pytest.mark.parametrize(
    ("word", "data", "command"),
    [
        (b"put", b"INSERTED 1234567890\r\n", _put),
        (b"reserve-with-timeout", b"RESERVED 7 10\r\n0123456789\r\n", _reserve),
        (b"stats", b"OK %d\r\n%b\r\n" % (len(_STATS), _STATS), _stats),
    ],
    ids=["put", "reserve", "stats"],
)
def test_a_server_trickling_a_reply_cannot_hold_it_past_the_timeout(
    fake_beanstalkd: StartFake, word: bytes, data: bytes, command: Callable[[Wire], object]
) -> None:
    # One byte every 0.2 s: every receive gets something well within the
    # socket's timeout, but the whole reply would take 4 s or more.
    server = fake_beanstalkd({word: [Reply(data, trickle=0.2)]})
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        ours = _wire(sock, 0.5)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            command(ours)
        # A reserve's reply is timed from its first byte (0.2 s in); the others at once.
        assert 0.45 <= time.monotonic() - started < 1.5


def test_a_data_block_shares_the_time_of_its_line(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, server = pair
    reader = _wire(ours, 0.6)
    body = b"0123456789" * 3
    # The line takes 0.4 s of the 0.6 s; the body does not get 0.6 s of its own.
    pieces = [(0, b"OK 3"), (0.4, b"0\r\n"), *_trickled(body + b"\r\n", 0.5, 0.1)]
    with _sending_later(server, *pieces):
        started = time.monotonic()
        assert reader.reply(b"OK", 1) == [b"30"]
        with pytest.raises(TimeoutError):
            reader.body(len(body))
        assert 0.55 <= time.monotonic() - started < 0.9


@pytest.mark.parametrize("timeout", [set_timeouts, socket.socket.settimeout])
def test_a_reserve_reply_may_start_late_and_then_has_the_timeout_to_arrive(
    pair: tuple[socket.socket, socket.socket], timeout: Callable[[socket.socket, float], None]
) -> None:
    ours, server = pair
    timeout(ours, 0.5)
    reader = Wire(ours, timeout=0.5)
    # The reply starts 0.8 s in, after the socket's timeout and the reply's
    # own; its body follows 0.2 s later, within the timeout of its start.
    with _sending_later(server, (0.8, b"RESERVED 3 2\r\n"), (1.0, b"hi\r\n")):
        started = time.monotonic()
        assert reader.reserved(started + 5) == (3, b"hi")
        assert time.monotonic() - started >= 0.9


@pytest.mark.parametrize("timeout", [set_timeouts, socket.socket.settimeout])
def test_a_reserve_reply_that_starts_late_and_trickles_times_out(
    pair: tuple[socket.socket, socket.socket], timeout: Callable[[socket.socket, float], None]
) -> None:
    ours, server = pair
    timeout(ours, 0.5)
    reader = Wire(ours, timeout=0.5)
    late = _trickled(b"RESERVED 3 20\r\n01234567890123456789\r\n", 0.7, 0.2)
    with _sending_later(server, *late):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            reader.reserved(started + 30)
        # The reply started 0.7 s in; it had 0.5 s from then, not 7 s.
        assert 1.15 <= time.monotonic() - started < 2


def test_a_reply_is_timed_from_when_it_begins_to_be_read(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, server = pair
    now = [0.0]
    monkeypatch.setattr(wire, "time", SimpleNamespace(monotonic=lambda: now[0]))
    reader = _wire(ours, 0.5)
    # Pipelined replies: the first read brings the start of the second.
    server.sendall(b"INSERTED 1\r\nINSERT")
    assert reader.reply_int(b"INSERTED") == 1
    now[0] = 100.0  # the caller took its time before reading the next reply
    server.sendall(b"ED 2\r\n")
    assert reader.reply_int(b"INSERTED") == 2


# --- Finding 7: the size a reply announces is bounded, and so is each receive ----------


def test_the_default_limit_is_beanstalkds_ceiling() -> None:
    assert BodyLimit().size == CEILING
    assert BodyLimit(10).size == 10


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"RESERVED 1 %d\r\n", lambda w: w.reserved(time.monotonic() + 5)),
        (b"OK %d\r\n", lambda w: wire.stats(w, protocol.STATS)),
    ],
    ids=["reserve", "stats"],
)
@pytest.mark.parametrize("size", [CEILING + 1, 2**63, 10**20 - 1])
def test_a_size_over_the_limit_is_a_protocol_error_before_anything_is_received(
    pair: tuple[socket.socket, socket.socket],
    data: bytes,
    read: Callable[[Wire], object],
    size: int,
) -> None:
    ours, server = pair
    reader = _wire(ours, 0.5)
    server.sendall(data % size)  # and no body: nothing is waited for
    started = time.monotonic()
    with pytest.raises(ProtocolError, match=rf"{size}-byte data block.*limit of {CEILING} bytes"):
        read(reader)
    assert time.monotonic() - started < 0.4


def _reserved(reader: Wire) -> object:
    return reader.reserved(time.monotonic() + 5)


def _inserted(reader: Wire) -> object:
    return reader.reply_int(b"INSERTED")


@pytest.mark.parametrize(
    ("data", "read"),
    [
        (b"RESERVED 1 1000000000000000000000000000000\r\n", _reserved),
        (b"OK 1000000000000000000000000000000\r\n", _stats),
        (b"RESERVED 1 " + b"9" * 5000 + b"\r\n", _reserved),
        (b"INSERTED " + b"9" * 5000 + b"\r\n", _inserted),
        (b"INSERTED 123456789012345678901\r\n", _inserted),
        (b"RESERVED 123456789012345678901 1\r\nx\r\n", _reserved),
    ],
    ids=["reserve-size", "stats-size", "long-size", "long-id", "21-digit-id", "21-digit-job"],
)
def test_an_absurd_number_is_a_protocol_error(
    pair: tuple[socket.socket, socket.socket], data: bytes, read: Callable[[Wire], object]
) -> None:
    ours, server = pair
    reader = _wire(ours, 0.5)
    server.sendall(data)
    with pytest.raises(ProtocolError):
        read(reader)


def test_number_takes_at_most_twenty_ascii_digits() -> None:
    assert protocol.number(b"18446744073709551615") == 2**64 - 1
    for bad in (b"1" * 21, b"\xb2", b"\xd9\xa1", b"+1", b"-1", b" 1", b""):
        with pytest.raises(ProtocolError):
            protocol.number(bad)


def test_a_shared_limit_lowered_later_bounds_every_wire_sharing_it() -> None:
    limit = BodyLimit()
    with contextlib.ExitStack() as stack:
        pairs = [[stack.enter_context(s) for s in socket.socketpair()] for _ in range(2)]
        readers = [_wire(ours, 0.5, limit) for ours, _ in pairs]
        limit.size = 5  # the server's max-job-size, once known
        for (_, server), reader in zip(pairs, readers, strict=True):
            server.sendall(b"RESERVED 1 5\r\nhello\r\nRESERVED 2 6\r\n")
            assert reader.reserved(time.monotonic() + 5) == (1, b"hello")
            with pytest.raises(ProtocolError, match=r"6-byte data block.*limit of 5 bytes"):
                reader.reserved(time.monotonic() + 5)


def test_a_stats_reply_is_read_whatever_the_job_limit(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, server = pair
    reader = _wire(ours, 0.5, BodyLimit(10))
    yaml = b"---\n" + b"".join(b"field-%d: %d\n" % (n, n) for n in range(100))
    server.sendall(b"OK %d\r\n%b\r\n" % (len(yaml), yaml))
    assert wire.stats(reader, protocol.STATS)["field-99"] == "99"


def test_memory_grows_only_as_the_body_arrives(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, server = pair
    reader = _wire(ours, 5)
    # Claims 200 MB, sends 100 kB, then ends.
    server.sendall(b"RESERVED 1 200000000\r\n" + b"x" * 100_000)
    server.shutdown(socket.SHUT_WR)
    tracemalloc.start()
    try:
        with pytest.raises(ConnectionError, match="EOF"):
            reader.reserved(time.monotonic() + 5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def _real_server(max_job_size: int) -> BeanstalkdServer:
    try:
        return BeanstalkdServer(max_job_size=max_job_size)
    except BeanstalkdNotFound as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and no beanstalkd: {exc}")
        pytest.skip(str(exc))


@pytest.mark.parametrize(
    ("asked", "limit"),
    [(2**31, None), (10, BodyLimit(10))],
    ids=["over-the-ceiling", "tiny-limit"],
)
def test_beanstalkd_agrees_about_its_job_size_limit(asked: int, limit: BodyLimit | None) -> None:
    # A -z over the ceiling is lowered to it; and a server whose max-job-size is
    # far below its own stats reply (about 900 bytes) can still say so.
    with (
        _real_server(asked) as server,
        socket.create_connection((server.host, server.port or 0)) as sock,
    ):
        reader = _wire(sock, 5, limit)
        size = int(wire.stats(reader, protocol.STATS)["max-job-size"])
    assert size == min(asked, BodyLimit().size)


# --- Hostile bytes: only ProtocolError, Refused or an OSError, and never a hang ------------

# Each reader, with the status and the number of values of the reply it expects.
_READERS: dict[str, tuple[bytes, int, Callable[[Wire], object]]] = {
    "reply": (b"USING", 1, lambda w: w.reply(b"USING", 1)),
    "reply_int": (b"INSERTED", 1, lambda w: w.reply_int(b"INSERTED")),
    "reserved": (b"RESERVED", 2, lambda w: w.reserved(time.monotonic() + 0.02)),
    "simple": (b"DELETED", 0, lambda w: w.simple(b"delete 1\r\n", b"DELETED")),
    "stats": (b"OK", 1, lambda w: wire.stats(w, protocol.STATS)),
}
_STATUSES = [b"RESERVED", b"OK", b"INSERTED", b"DELETED", b"BURIED", b"TIMED_OUT", b"-1", b""]
_VALUES = st.one_of(
    st.integers(0, 200).map(lambda n: b"%d" % n),
    st.integers(-3, 10**30).map(lambda n: b"%d" % n),
    st.binary(max_size=6),
    st.sampled_from([b"\xb2", b"\xd9\xa1", b"0" * 30, b"9" * 5000]),
)


def _replies(status: bytes, count: int) -> st.SearchStrategy[bytes]:
    """Any bytes, or a line much like the expected reply's, and then any bytes."""
    return st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda status, values, crlf, rest: b" ".join([status, *values]) + crlf + rest,
            st.one_of(st.just(status), st.sampled_from(_STATUSES)),
            st.one_of(
                st.lists(_VALUES, min_size=count, max_size=count), st.lists(_VALUES, max_size=3)
            ),
            st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
            st.binary(max_size=300),
        ),
    )


@fuzz
@given(draw=st.data())
def test_any_reply_raises_only_wire_refused_or_os_errors(draw: st.DataObject) -> None:
    status, count, read = _READERS[draw.draw(st.sampled_from(sorted(_READERS)), label="reader")]
    data = draw.draw(_replies(status, count), label="reply")
    limit = draw.draw(st.sampled_from([None, 0, 3, 100]), label="limit")
    end = draw.draw(st.booleans(), label="then the end of the stream")
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = _wire(ours, 0.02, None if limit is None else BodyLimit(limit))
        theirs.sendall(data)
        if end:
            theirs.shutdown(socket.SHUT_WR)
        started = time.monotonic()
        with contextlib.suppress(ProtocolError, Refused, OSError):
            read(reader)
        assert time.monotonic() - started < 1.0

"""The wire protocol: replies read in order, whatever pieces they arrive in, and checked."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from queue_beanstalk.backends import protocol, wire
from queue_beanstalk.backends.connections import set_timeouts
from queue_beanstalk.backends.protocol import ProtocolError, Refused
from queue_beanstalk.backends.wire import Wire


@pytest.fixture
def pair() -> Iterator[tuple[Wire, socket.socket]]:
    """A Wire on one end of a socket pair, and the other end to play the server."""
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    with ours, theirs:
        yield Wire(ours), theirs


def _soon() -> float:
    """A reply deadline that a reply already sent (or never coming) meets at once."""
    return time.monotonic() + 5


def _send_in_pieces(sock: socket.socket, data: bytes, piece: int) -> threading.Thread:
    def send() -> None:
        for start in range(0, len(data), piece):
            sock.sendall(data[start : start + piece])

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_replies_are_read_in_order_whatever_the_pieces(
    pair: tuple[Wire, socket.socket], piece: int
) -> None:
    ours, server = pair
    body = bytes(range(256)) * 300  # 76,800 bytes: more than one receive
    data = b"INSERTED 7\r\nRESERVED 7 %d\r\n%b\r\nDELETED\r\nWATCHING 2\r\n" % (len(body), body)
    sender = _send_in_pieces(server, data, piece)
    assert ours.reply_int(b"INSERTED") == 7
    assert ours.reserved(_soon()) == (7, body)
    assert ours.reply(b"DELETED", 0) == []
    assert ours.reply_int(b"WATCHING") == 2
    sender.join()


def test_an_error_status_is_refused_with_its_values(pair: tuple[Wire, socket.socket]) -> None:
    ours, server = pair
    server.sendall(b"BURIED 12\r\nNOT_FOUND\r\n")
    with pytest.raises(Refused) as caught:
        ours.reply_int(b"INSERTED")
    assert (caught.value.status, caught.value.values) == ("BURIED", [b"12"])
    with pytest.raises(Refused, match="NOT_FOUND"):
        ours.reply(b"DELETED", 0)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GARBAGE\r\n", "unexpected reply"),
        (b"INSERTED\r\n", "0 values"),
        (b"INSERTED 1 2\r\n", "2 values"),
        (b"INSERTED -1\r\n", "number"),
        (b"INSERTED one\r\n", "number"),
        (b"INSERTED \xb2\r\n", "number"),  # a digit, but not an ASCII one
        (b"INSERTED 123456789012345678901\r\n", "number"),  # 21 digits: more than 64 bits
        (b"\r\n", "unexpected reply"),
        (b"x" * 2000, "longer than"),
        (b"INSERTED " + b"1" * 2000 + b"\r\n", "longer than"),  # even with its CRLF
    ],
)
def test_a_reply_that_breaks_the_protocol_is_a_protocol_error(
    pair: tuple[Wire, socket.socket], data: bytes, words: str
) -> None:
    ours, server = pair
    server.sendall(data)
    with pytest.raises(ProtocolError, match=words):
        ours.reply_int(b"INSERTED")


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (b"NOT_FOUND\r\n", Refused, "NOT_FOUND"),
        (b"DELETED 7\r\n", ProtocolError, "1 values"),
        (b"RELEASED\r\n", ProtocolError, "unexpected reply"),
    ],
)
def test_a_one_word_command_takes_its_word_and_nothing_else(
    pair: tuple[Wire, socket.socket], reply: bytes, error: type[Exception], words: str
) -> None:
    ours, server = pair
    server.sendall(b"DELETED\r\n" + reply)
    ours.simple(b"delete 1\r\n", b"DELETED")
    with pytest.raises(error, match=words):
        ours.simple(b"delete 2\r\n", b"DELETED")
    sent = b""
    while len(sent) < 20:
        sent += server.recv(100)
    assert sent == b"delete 1\r\ndelete 2\r\n"


def test_a_body_without_its_crlf_is_a_protocol_error(pair: tuple[Wire, socket.socket]) -> None:
    ours, server = pair
    server.sendall(b"RESERVED 1 3\r\nabcXY")
    with pytest.raises(ProtocolError, match="CRLF"):
        ours.reserved(_soon())


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"RESERVED 7\r\n", "1 values"),
        (b"RESERVED 7 3 1\r\n", "3 values"),
        (b"RESERVED x 3\r\nabc\r\n", "number"),
    ],
    ids=["without-size", "one-value-too-many", "id-not-a-number"],
)
def test_a_reserve_reply_that_breaks_the_protocol_is_a_protocol_error(
    pair: tuple[Wire, socket.socket], data: bytes, words: str
) -> None:
    ours, server = pair
    server.sendall(data)
    with pytest.raises(ProtocolError, match=words):
        ours.reserved(_soon())


@pytest.mark.parametrize("status", ["TIMED_OUT", "DEADLINE_SOON"])
def test_a_reserve_refused_says_why(pair: tuple[Wire, socket.socket], status: str) -> None:
    ours, server = pair
    server.sendall(b"%b\r\n" % status.encode())
    with pytest.raises(Refused) as caught:
        ours.reserved(_soon())
    assert caught.value.status == status


def test_a_reserve_reply_already_received_behind_another_is_read(
    pair: tuple[Wire, socket.socket],
) -> None:
    ours, server = pair
    server.sendall(b"DELETED\r\nRESERVED 7 3\r\nabc\r\n")
    # Nothing more comes: a reserved() that waited for another receive would hit the end.
    server.shutdown(socket.SHUT_WR)
    ours.simple(b"delete 1\r\n", b"DELETED")
    assert ours.reserved(_soon()) == (7, b"abc")
    assert not ours.replies.unread
    assert server.recv(100) == b"delete 1\r\n"


@pytest.mark.parametrize("data", [b"", b"INSERT", b"RESERVED 1 10\r\nabc"])
def test_the_end_of_the_stream_is_a_connection_error(
    pair: tuple[Wire, socket.socket], data: bytes
) -> None:
    ours, server = pair
    server.sendall(data)
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionError, match="EOF"):
        ours.reserved(_soon())


def test_stats_are_parsed_and_checked(pair: tuple[Wire, socket.socket]) -> None:
    ours, server = pair
    yaml = b'---\nid: 5\ntube: "jobs"\nstate: ready\n'
    server.sendall(b"OK %d\r\n%b\r\n" % (len(yaml), yaml))
    assert wire.stats(ours, protocol.stats_job(5)) == {"id": "5", "tube": "jobs", "state": "ready"}
    assert server.recv(100) == b"stats-job 5\r\n"
    for bad in (b"id: 5\n", b"---\nno value here\n"):
        server.sendall(b"OK %d\r\n%b\r\n" % (len(bad), bad))
        with pytest.raises(ProtocolError):
            wire.stats(ours, protocol.STATS)


def test_put_command_carries_the_body_and_its_length() -> None:
    assert protocol.put(b"a\r\nb", 1, 2, 3)[0] == b"put 1 2 3 4\r\na\r\nb\r\n"


def _kernel_timeout(sock: socket.socket, seconds: float) -> None:
    set_timeouts(sock, seconds)


def _python_timeout(sock: socket.socket, seconds: float) -> None:
    sock.settimeout(seconds)


@pytest.mark.parametrize("timeout", [_kernel_timeout, _python_timeout])
@pytest.mark.parametrize("wait", [5, 40 * 86_400], ids=["5s", "40days"])
def test_a_reply_may_come_after_the_socket_timeout_but_before_the_deadline(
    pair: tuple[Wire, socket.socket], timeout: Callable[[socket.socket, float], None], wait: float
) -> None:
    ours, server = pair
    timeout(ours.sock, 0.1)
    late = threading.Timer(0.4, server.sendall, (b"RESERVED 3 2\r\nhi\r\n",))
    late.start()
    try:
        started = time.monotonic()
        # 40 days is past the longest single poll (2**31 - 1 ms).
        assert ours.reserved(started + wait) == (3, b"hi")
        assert time.monotonic() - started >= 0.3
    finally:
        # Never left to fire into a closed socket during the next test.
        late.cancel()
        late.join()


@pytest.mark.parametrize("timeout", [_kernel_timeout, _python_timeout])
def test_waiting_for_a_reply_ends_at_the_deadline(
    pair: tuple[Wire, socket.socket], timeout: Callable[[socket.socket, float], None]
) -> None:
    ours, _ = pair
    timeout(ours.sock, 0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        ours.reserved(started + 0.5)
    assert 0.45 <= time.monotonic() - started < 2

"""beanstalkd's wire protocol: commands out, replies in, every reply checked.

A :class:`Wire` owns one connected socket and a receive buffer. ``send`` may
write many commands at once; their replies are then read in order, which is
how pipelining works: one write and one wait for a whole batch instead of a
round trip per command. Replies are checked with explicit tests, never
``assert`` (gone under ``python -O``): the end of the stream, a line longer
than any the server sends, a status the command cannot get, a value that is
not a number, or a body without its CRLF all raise, and the connection must
then be dropped, since the stream can no longer be trusted.

The replies on every job's path (a reserve's, and the one word that answers
delete, release, bury and touch) are read by methods of ``Wire``; the
functions below are the other commands, one each: each sends it and reads its
reply. ``Wire`` and these functions are not thread-safe; the backend holds a
lock per connection.
"""

from __future__ import annotations

import math
import select
import socket
import time

__all__ = [
    "ERROR_STATUSES",
    "Refused",
    "Wire",
    "WireError",
    "ignore",
    "number",
    "put_command",
    "reserve_command",
    "stats",
    "use",
    "watch",
]

#: Statuses with which beanstalkd refuses a command (protocol.txt), as bytes.
ERROR_STATUSES = frozenset(
    {
        b"BAD_FORMAT",
        b"BURIED",
        b"DEADLINE_SOON",
        b"DRAINING",
        b"EXPECTED_CRLF",
        b"INTERNAL_ERROR",
        b"JOB_TOO_BIG",
        b"NOT_FOUND",
        b"NOT_IGNORED",
        b"OUT_OF_MEMORY",
        b"TIMED_OUT",
        b"UNKNOWN_COMMAND",
    }
)

# The longest line beanstalkd sends is "USING <200-byte name>"; anything much
# longer without a CRLF is not beanstalkd talking.
MAX_LINE = 1024
# The longest single poll, in seconds: poll() takes at most 2**31 - 1 ms.
MAX_POLL = 86_400.0
RECEIVE_SIZE = 65536
_EOF = "the server closed the connection (unexpected EOF)"


class WireError(Exception):
    """The server's reply breaks the protocol; the connection cannot be trusted."""


class Refused(Exception):
    """The server answered a command with one of its error statuses."""

    def __init__(self, status: str, values: list[bytes]) -> None:
        super().__init__(status)
        #: The status word, e.g. ``"NOT_FOUND"`` or ``"JOB_TOO_BIG"``.
        self.status = status
        #: What followed the status on the line (``BURIED`` on a put carries the id).
        self.values = values


class Wire:
    """One connection's byte stream: write commands, read checked replies in order.

    :param sock: a connected socket; its timeout bounds every write, and every
        read but :meth:`wait`'s, which may go on to a deadline.
    """

    __slots__ = ("_data", "_poller", "_start", "send", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Write ``data`` (one or more whole commands): the socket's own
        #: ``sendall``, with no Python frame around it.
        self.send = sock.sendall
        # What was received and not yet read is _data[_start:]. Usually a
        # receive brings whole replies, read in place and never copied again.
        self._data = b""
        self._start = 0
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    def stray(self, poll: bool) -> bool:
        """Return whether input is waiting although no reply is expected.

        Unread bytes, or, with ``poll``, anything on the socket (checked without
        waiting). Between commands beanstalkd sends nothing, so such input is
        the end of the stream (the server restarted or went away), a reset, or
        stray bytes: using the connection would fail or desynchronise.
        """
        return len(self._data) > self._start or (poll and self.readable(0))

    def readable(self, seconds: float) -> bool:
        """Return whether the socket has input (or hit its end) within ``seconds``."""
        return bool(self._poller.poll(max(0, math.ceil(seconds * 1000))))

    def wait(self, deadline: float) -> None:
        """Block until the next reply starts to arrive, for as long as until ``deadline``.

        For a reply that may come later than the socket's timeout allows (a
        blocking reserve). The first wait is the socket's own receive; only
        when that times out is the rest, to ``deadline`` (``time.monotonic()``),
        waited with a poll, so the common case costs no extra system call.

        :raises TimeoutError: when nothing arrived by ``deadline``.
        """
        if len(self._data) > self._start:  # some of the reply is here already
            return
        try:
            self._fill(1)
        except (BlockingIOError, TimeoutError):  # the socket's receive timeout ran out
            while not self.readable(min(deadline - time.monotonic(), MAX_POLL)):
                if time.monotonic() >= deadline:
                    raise TimeoutError("no reply by the deadline") from None

    def reserved(self, deadline: float) -> tuple[int, bytes]:
        """Read a reserve's reply: the job's id and body (``TIMED_OUT`` is Refused).

        :param deadline: when (``time.monotonic()``) to give up waiting for the
            reply, as for :meth:`wait`: the reserve's own timeout plus the
            allowance for a reply.
        :raises TimeoutError: when no reply started to arrive by ``deadline``.
        """
        self.wait(deadline)
        # Parsed here, not through reply(): measured 1-3% of a get+delete faster.
        line = self._line()
        status, _, values = line.partition(b" ")
        job_id, _, size = values.partition(b" ")
        if status == b"RESERVED" and job_id.isdigit() and size.isdigit():  # checked at once
            return int(job_id), self.body(int(size))
        job_id, size = self._values(line, b"RESERVED", 2)
        return number(job_id), self.body(number(size))

    def simple(self, command: bytes, expected: bytes) -> None:
        """Send a command whose reply is one word (``DELETED``, ``RELEASED`` ...) and read it.

        :raises Refused: for one of beanstalkd's error statuses.
        :raises WireError: for any other reply.
        """
        self.send(command)
        line = self._line()
        if line != expected:
            self._values(line, expected, 0)  # raises: the reply is not that one word

    def reply(self, expected: bytes, count: int) -> list[bytes]:
        """Read one reply line; return its ``count`` values when its status is ``expected``.

        :raises Refused: for one of beanstalkd's error statuses.
        :raises WireError: for anything else, or the wrong number of values.
        """
        line = self._line()
        if line == expected and count == 0:  # DELETED, RELEASED ...: checked at once
            return []
        return self._values(line, expected, count)

    def reply_int(self, expected: bytes) -> int:
        """Read a reply carrying one number (``INSERTED <id>``, ``WATCHING <count>``)."""
        line = self._line()
        status, _, value = line.partition(b" ")
        if status == expected and value.isdigit():  # the common case, checked at once
            return int(value)
        return number(self._values(line, expected, 1)[0])

    def _values(self, line: bytes, expected: bytes, count: int) -> list[bytes]:
        status, *values = line.split(b" ")
        if status == expected:
            if len(values) != count:
                raise WireError(f"{expected.decode()} with {len(values)} values, not {count}")
            return values
        if status in ERROR_STATUSES:
            raise Refused(status.decode("ascii"), values)
        raise WireError(f"unexpected reply {status[:40]!r}")

    def body(self, size: int) -> bytes:
        """Read a reply's data block of ``size`` bytes and the CRLF after it."""
        start = self._start
        end = start + size
        if len(self._data) < end + 2:
            self._fill(end + 2 - start)
            start, end = 0, size
        data = self._data
        if data[end : end + 2] != b"\r\n":
            raise WireError("data block not followed by CRLF")
        if end + 2 == len(data):  # all read: an idle connection keeps no body
            self._data, self._start = b"", 0
        else:
            self._start = end + 2
        return data[start:end]

    def _line(self) -> bytes:
        data, start = self._data, self._start
        end = data.find(b"\r\n", start)
        while end < 0:
            if len(data) - start > MAX_LINE:
                raise WireError(f"reply line longer than {MAX_LINE} bytes")
            self._fill(len(data) - start + 1)
            data, start = self._data, 0
            end = data.find(b"\r\n")
        self._start = end + 2
        return data[start:end]

    def _fill(self, wanted: int) -> None:
        """Receive until ``wanted`` bytes are unread, keeping the unread ones in front."""
        if self._start >= len(self._data):  # nothing unread, the usual case: one receive
            data = self.sock.recv(max(RECEIVE_SIZE, wanted))
            if not data:
                raise ConnectionError(_EOF)
            self._data, self._start = data, 0
            if len(data) >= wanted:
                return
        parts = [self._data[self._start :]]
        have = len(parts[0])
        while have < wanted:
            parts.append(self._receive(wanted - have))
            have += len(parts[-1])
        self._data, self._start = b"".join(parts), 0

    def _receive(self, wanted: int) -> bytes:
        data = self.sock.recv(max(RECEIVE_SIZE, wanted))
        if not data:
            raise ConnectionError(_EOF)
        return data


def number(value: bytes) -> int:
    """Return a reply value as a non-negative int, or raise WireError."""
    if not value.isdigit():
        raise WireError(f"expected a number, got {value[:40]!r}")
    return int(value)


def put_command(body: bytes, priority: int, delay: int, ttr: int) -> bytes:
    """Return the bytes of a ``put`` command carrying ``body``."""
    return b"put %d %d %d %d\r\n%b\r\n" % (priority, delay, ttr, len(body), body)


def use(wire: Wire, tube: str) -> None:
    """Make ``tube`` the one puts go to."""
    wire.send(b"use %b\r\n" % tube.encode("ascii"))
    wire.reply(b"USING", 1)


def watch(wire: Wire, tube: str) -> None:
    """Add ``tube`` to the tubes reserves take from."""
    wire.send(b"watch %b\r\n" % tube.encode("ascii"))
    wire.reply_int(b"WATCHING")


def ignore(wire: Wire, tube: str) -> None:
    """Remove ``tube`` from the tubes reserves take from."""
    wire.send(b"ignore %b\r\n" % tube.encode("ascii"))
    wire.reply_int(b"WATCHING")


def reserve_command(seconds: int) -> bytes:
    """Return the bytes of a ``reserve-with-timeout`` command."""
    return b"reserve-with-timeout %d\r\n" % seconds


def stats(wire: Wire, command: bytes) -> dict[str, str]:
    """Send ``stats`` or ``stats-job <id>`` and return the reply's YAML mapping."""
    wire.send(command)
    size = number(wire.reply(b"OK", 1)[0])
    text = wire.body(size).decode("ascii", "replace")
    if not text.startswith("---\n"):
        raise WireError("stats reply does not start with ---")
    fields: dict[str, str] = {}
    for line in text[4:].splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            raise WireError(f"stats line without a value: {line[:40]!r}")
        fields[key] = value.strip('"')
    return fields

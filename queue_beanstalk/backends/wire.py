"""The blocking transport of beanstalkd's protocol: commands out, replies in, checked.

The commands themselves, the statuses, what they mean and the reading of
replies are :mod:`.protocol`'s, which does no I/O. A :class:`Wire` owns one
connected socket, receives, and feeds what came to its
:class:`~.protocol.ReplyReader`. ``send`` may write many commands at once; their
replies are then read in order, which is how pipelining works: one write and
one wait for a whole batch instead of a round trip per command. Replies are
checked with explicit tests, never ``assert`` (gone under ``python -O``): a
line longer than any the server sends, a status the command cannot get, a
value that is not a number of at most 20 digits, a data block larger than the
:class:`BodyLimit` allows or without its CRLF all raise
:class:`~.protocol.ProtocolError`; the end of the stream raises
``ConnectionError``. The connection must then be dropped, since the stream
can no longer be trusted.

A reply must arrive whole within the wire's ``timeout`` of when it began to be
read (a reserve's, of when it began to arrive), or ``TimeoutError``: a server
that trickles bytes cannot hold a command for longer. A data block is
received in pieces of at most :data:`MAX_RECEIVE` bytes, so the memory it
takes grows only as it arrives, whatever size the reply announced. Whatever
bytes come, reading a reply raises nothing but ``ProtocolError``, ``Refused``
and ``OSError`` (``ConnectionError``, ``TimeoutError``).

``Wire`` and :func:`stats` are not thread-safe; the backend holds a lock per
connection. A :class:`BodyLimit` may be read and lowered from any thread.
"""

from __future__ import annotations

import math
import select
import socket
import time
from collections.abc import Sequence

from .protocol import (
    Command,
    ProtocolError,
    Refused,
    ReplyReader,
    found,
    number,
    parse_list,
    parse_stats,
    reply_number,
    reply_values,
    stats_job,
)
from .protocol import reserved as protocol_reserved

__all__ = ["MAX_BODY", "BodyLimit", "Wire", "found_each", "listing", "stats", "stats_of_each"]

# The longest single poll, in seconds: poll() takes at most 2**31 - 1 ms.
MAX_POLL = 86_400.0
RECEIVE_SIZE = 65536
#: The most one receive asks for, in bytes: a larger data block comes in
#: several, and each takes memory only for what it brought.
MAX_RECEIVE = 1 << 20
#: beanstalkd's ceiling for a job's size, in bytes: it lowers a larger ``-z``
#: to this (JOB_DATA_SIZE_LIMIT_MAX in its source).
MAX_BODY = 1_073_741_824
# A stats reply is read up to this size whatever the job size limit: a server
# run with a small -z must still be able to say so (its stats take ~1 kB).
MAX_STATS = 65536
_EOF = "the server closed the connection (unexpected EOF)"


class BodyLimit:
    """The largest data block a reply may announce: one object shared by a server's connections.

    It starts at beanstalkd's own ceiling; lowering ``size`` (to the server's
    ``max-job-size``, once known) applies at once to every :class:`Wire`
    sharing it. Reading and setting ``size`` is safe from any thread.

    :param size: the limit, in bytes.
    """

    __slots__ = ("size",)

    def __init__(self, size: int = MAX_BODY) -> None:
        #: The largest data block accepted, in bytes.
        self.size = size

    def __repr__(self) -> str:
        return f"queue_beanstalk.backends.wire.BodyLimit(size={self.size})"


class Wire:
    """One connection's byte stream: write commands, read checked replies in order.

    :param sock: a connected socket. The caller sets its own timeout to
        ``timeout``: it bounds every write, and the first receive of a reply.
    :param timeout: seconds a reply may take to arrive whole, from when it
        begins to be read; after :meth:`wait`, from when it begins to arrive.
    :param limit: the largest data block a reply may announce (shared, so that
        lowering it applies at once); beanstalkd's ceiling when None.
    """

    __slots__ = ("_deadline", "_poller", "limit", "replies", "send", "sock", "timeout")

    def __init__(
        self, sock: socket.socket, timeout: float = 10.0, limit: BodyLimit | None = None
    ) -> None:
        self.sock = sock
        #: Write ``data`` (one or more whole commands): the socket's own ``sendall``.
        self.send = sock.sendall
        #: Seconds a reply may take to arrive whole.
        self.timeout = timeout
        #: The largest data block a reply may announce.
        self.limit = BodyLimit() if limit is None else limit
        #: What was received and not yet read, and the reading of it.
        self.replies = ReplyReader()
        # When (time.monotonic()) the reply being read must be whole: set by
        # its first receive, 0.0 until then.
        self._deadline = 0.0
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)

    def readable(self, seconds: float) -> bool:
        """Return whether the socket has input (or hit its end) within ``seconds``."""
        return bool(self._poller.poll(max(0, math.ceil(seconds * 1000))))

    def wait(self, deadline: float) -> None:
        """Block until the next reply starts to arrive, for as long as until ``deadline``.

        For a reply that may come later than the socket's timeout allows (a
        blocking reserve). The first wait is the socket's own receive; only
        when that times out is the rest, to ``deadline`` (``time.monotonic()``),
        waited with a poll, so the common case costs no extra system call.
        The reply then has the wire's ``timeout`` to arrive whole.

        :raises TimeoutError: when nothing arrived by ``deadline``.
        :raises ConnectionError: at the end of the stream.
        """
        if self.replies.unread:  # some of the reply is here already
            return
        self._deadline = 0.0  # what comes is a new reply's first receive
        try:
            self._receive(1)
        except TimeoutError:  # the socket's receive timeout ran out
            while not self.readable(min(deadline - time.monotonic(), MAX_POLL)):
                if time.monotonic() >= deadline:
                    raise TimeoutError("no reply by the deadline") from None

    def reserved(self, deadline: float) -> tuple[int, bytes]:
        """Read a reserve's reply: the job's id and body (``TIMED_OUT`` is Refused).

        :param deadline: when (``time.monotonic()``) to give up waiting for the
            reply, as for :meth:`wait`: the reserve's own timeout plus the
            allowance for a reply.
        :raises TimeoutError: when no reply started to arrive by ``deadline``,
            or it did not arrive whole within the wire's ``timeout`` of its start.
        :raises Refused: for one of beanstalkd's error statuses.
        :raises ProtocolError: for anything else, or a body over the limit.
        :raises ConnectionError: at the end of the stream.
        """
        return self.reserved_run(1, deadline)[0]

    def reserved_run(self, most: int, deadline: float) -> list[tuple[int, bytes]]:
        """Read replies to pipelined reserves: at least one job, and up to ``most`` if here.

        The first reply is waited for as by :meth:`reserved`; the jobs of the
        replies after it are taken as long as each is here whole, so a batch
        costs one call, not one a job. Raises as :meth:`reserved` does when
        the first reply is not a job.
        """
        replies = self.replies
        if not replies.unread:  # pipelined, the replies may be here already
            self.wait(deadline)
        jobs = replies.jobs(self.limit.size, most)
        if not jobs:  # read line by line, the usual checks raising what they find
            job_id, size = protocol_reserved(self._line())
            jobs = [(job_id, self.body(size))]
        return jobs

    def found(self) -> tuple[int, bytes]:
        """Read a peek's reply: the job's id and body (``NOT_FOUND`` is Refused).

        Raises as :meth:`reply` and :meth:`body` do.
        """
        job_id, size = found(self._line())
        return job_id, self.body(size)

    def simple(self, command: bytes, expected: bytes) -> None:
        """Send a command whose reply is one word (``DELETED``, ``RELEASED`` ...) and read it.

        :raises Refused: for one of beanstalkd's error statuses.
        :raises ProtocolError: for any other reply.
        :raises TimeoutError: when the reply is not whole within ``timeout``.
        :raises ConnectionError: at the end of the stream.
        """
        self.send(command)
        line = self._line()
        if line != expected:
            reply_values(line, expected, 0)  # raises: the reply is not that one word

    def run_of(self, expected: bytes, most: int) -> int:
        """Read one-word replies at once, up to ``most``, while each is ``expected`` and here.

        Receives first when nothing is here yet. Returns how many were read:
        0 when the next reply is another, or not all here; read it with
        :meth:`reply` then, which waits for it and checks it.
        """
        self._start_reply()
        return self.replies.repeated(expected + b"\r\n", most)

    def inserted_run(self, most: int) -> list[int]:
        """Read pipelined puts' ``INSERTED <id>`` replies at once, up to ``most``, while here.

        Receives first when nothing is here yet. Returns their job ids: none
        when the next reply is another, or not all here; read it with
        :meth:`reply_int` then, which waits for it and checks it.
        """
        self._start_reply()
        return self.replies.inserted(most)

    def reply(self, expected: bytes, count: int) -> list[bytes]:
        """Read one reply line; return its ``count`` values when its status is ``expected``.

        Raises as :func:`~.protocol.reply_values` does, and as :meth:`simple`
        does for time and the end of the stream.
        """
        line = self._line()
        if line == expected and count == 0:  # DELETED, RELEASED ...: checked at once
            return []
        return reply_values(line, expected, count)

    def reply_int(self, expected: bytes) -> int:
        """Read a reply carrying one number (``INSERTED <id>``, ``WATCHING <count>``).

        Raises as :meth:`reply` does, and ProtocolError when the value is not a number.
        """
        return reply_number(self._line(), expected)

    def body(self, size: int, floor: int = 0) -> bytes:
        """Read a reply's data block of ``size`` bytes and the CRLF after it.

        The block comes in receives of at most :data:`MAX_RECEIVE` bytes, and
        with the time left of the reply's ``timeout``.

        :param size: the size the reply announced.
        :param floor: a size accepted whatever ``limit`` says (a stats reply's).
        :raises ProtocolError: when ``size`` is over ``limit.size`` (and ``floor``),
            or the block is not followed by CRLF.
        :raises TimeoutError: when the block is not whole within the reply's time.
        :raises ConnectionError: at the end of the stream.
        """
        if size > self.limit.size and size > floor:
            raise ProtocolError(
                f"the reply announces a {size}-byte data block, over the limit of "
                f"{max(self.limit.size, floor)} bytes"
            )
        replies = self.replies
        block = replies.block(size)
        while block is None:
            self._receive(size + 2 - replies.unread)
            block = replies.block(size)
        return block

    def _start_reply(self) -> None:
        """Start reading a reply, whose time runs from its first receive: receive if none is here.

        The start of :meth:`_line` too, written there in line: it runs for every reply.
        """
        self._deadline = 0.0
        if not self.replies.unread:
            self._receive(1)

    def _line(self) -> bytes:
        """Read a reply's line: the start of a reply, whose time runs from its first receive."""
        self._deadline = 0.0
        replies = self.replies
        if not replies.unread:  # the usual case: receive before looking
            self._receive(1)
        line = replies.line()
        while line is None:
            self._receive(1)
            line = replies.line()
        return line

    def _receive(self, wanted: int) -> None:
        """Receive more of the reply being read, about ``wanted`` bytes, and feed it on.

        A reply's first receive is the socket's own, bounded by its timeout;
        it starts the reply's time, and every further receive for the reply
        first polls for the time it has left.
        """
        if not self._deadline:
            self._deadline = time.monotonic() + self.timeout
            try:
                data = self.sock.recv(
                    RECEIVE_SIZE if wanted <= RECEIVE_SIZE else min(wanted, MAX_RECEIVE)
                )
            except BlockingIOError:  # the kernel's receive timeout (SO_RCVTIMEO) ran out
                raise TimeoutError(f"no reply within {self.timeout:g}s") from None
        else:
            self._await_more()
            data = self.sock.recv(min(max(RECEIVE_SIZE, wanted), MAX_RECEIVE))
        if not data:
            raise ConnectionError(_EOF)
        self.replies.feed(data)

    def _await_more(self) -> None:
        """Wait until more of the reply has come, or raise TimeoutError at its deadline."""
        while True:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the reply did not arrive whole within {self.timeout:g}s")
            if self.readable(min(left, MAX_POLL)):
                return


def stats(wire: Wire, command: Command) -> dict[str, str]:
    """Send ``stats``, ``stats-job <id>`` or ``stats-tube <name>``; return the reply's mapping.

    Raises as :meth:`Wire.reply` and :meth:`Wire.body` do, and ProtocolError
    when the mapping is malformed.
    """
    return parse_stats(_yaml(wire, command))


def listing(wire: Wire, command: Command) -> list[str]:
    """Send ``list-tubes`` (or another listing) and return the reply's YAML list."""
    return parse_list(_yaml(wire, command))


def stats_of_each(wire: Wire, job_ids: Sequence[int]) -> list[dict[str, str] | None]:
    """Send a ``stats-job`` for each job in one write; return each reply's mapping, in order.

    None for a job the server does not have (``NOT_FOUND``).

    :raises ProtocolError: for any other refusal, with replies still unread:
        the connection is out of step and must go. Else as :func:`stats`.
    """
    commands = [stats_job(job_id) for job_id in job_ids]
    wire.send(b"".join([data for data, _ in commands]))
    found: list[dict[str, str] | None] = []
    for _, expected in commands:
        try:
            found.append(parse_stats(_read_yaml(wire, expected)))
        except Refused as refused:
            _only_not_found(refused, "stats-job")
            found.append(None)
    return found


def found_each(wire: Wire, expected: bytes, count: int, command: str) -> list[bool]:
    """Read ``count`` one-word replies to ``command``s already sent; return which were ``expected``.

    False for one answered ``NOT_FOUND`` (the job was not there).

    :raises ProtocolError: for any other refusal, with replies still unread:
        the connection is out of step and must go. Else as :meth:`Wire.reply`.
    """
    found: list[bool] = []
    while len(found) < count:
        run = wire.run_of(expected, count - len(found))  # the usual case: all found
        if run:
            found += [True] * run
            continue
        try:
            wire.reply(expected, 0)
            found.append(True)
        except Refused as refused:
            _only_not_found(refused, command)
            found.append(False)
    return found


def _only_not_found(refused: Refused, command: str) -> None:
    """Return if ``refused`` is NOT_FOUND; else raise ProtocolError: later replies are unread."""
    if not refused.not_found:
        raise ProtocolError(
            f"{command} refused with {refused.status} while replies were pending"
        ) from refused


def _yaml(wire: Wire, command: Command) -> bytes:
    data, expected = command
    wire.send(data)
    return _read_yaml(wire, expected)


def _read_yaml(wire: Wire, expected: bytes) -> bytes:
    size = number(wire.reply(expected, 1)[0])
    return wire.body(size, MAX_STATS)

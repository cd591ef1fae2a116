"""beanstalkd's protocol without I/O: commands as bytes, statuses, stats, the watch list.

Nothing here touches a socket or a clock, so it serves any transport: the
blocking one in :mod:`.wire`, and later an asyncio one. Each builder returns a
command's bytes and the status word that answers it when it succeeds (a
:data:`Command`); what a status means for the library (a refusal that is no
failure, a job stored although refused, an error to raise) is decided here, so
the backends hold no byte literal and no status string. Errors raised here are
this module's own (:class:`ProtocolError`, :class:`Refused`), never a builtin
a programming error could also raise.

Replies are read by a :class:`ReplyReader`, fed the bytes a transport
received; it hands back the next line or data block, or None for "need more
data". The parsers below then check a line against the status it should have.
An asyncio transport is a read loop over the same core, sketched::

    class BeanstalkProtocol(asyncio.Protocol):
        def data_received(self, data):
            self.reader.feed(data)
            while self.waiting and (reply := self.try_reply()) is not None:
                self.waiting.popleft().set_result(reply)  # in the order sent

        def eof_received(self):
            self.reader.feed(b"")  # the next line() or block() short of data raises
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..backend import JobStats, TubeStats
from ..errors import CommandRefused, NotFound, QueueError, ServerError, Timeout

__all__ = [
    "ERROR_STATUSES",
    "INSERTED",
    "LIST_TUBES",
    "MAX_DIGITS",
    "MAX_LINE",
    "STATS",
    "Command",
    "ProtocolError",
    "Refused",
    "ReplyReader",
    "StreamEnded",
    "bury",
    "delete",
    "delete_then_reserve_batch",
    "field",
    "found",
    "ignore",
    "job_priority",
    "job_stats",
    "kick",
    "kick_job",
    "max_job_size",
    "number",
    "parse_list",
    "parse_stats",
    "pause_tube",
    "peek",
    "put",
    "puts",
    "refusal_error",
    "release",
    "reply_number",
    "reply_values",
    "reserve",
    "reserved",
    "stats_job",
    "stats_tube",
    "touch",
    "tube_stats",
    "use",
    "watch",
    "watch_plan",
]

#: A command's bytes, and the status word that answers it when it succeeds.
Command = tuple[bytes, bytes]

#: The status word that answers a put that stored its job.
INSERTED = b"INSERTED"

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

# The longest number in a reply: beanstalkd's are 64-bit, 20 digits at most.
MAX_DIGITS = 20
# The longest line beanstalkd sends is "USING <200-byte name>"; a line much
# longer, with its CRLF or still without, is not beanstalkd talking.
MAX_LINE = 1024

# The line of a reserve's usual reply: the job's id and its body's size. One
# pattern for both readers of it: reserved(), given the line, and
# ReplyReader.jobs(), which reads whole replies at once.
_RESERVED = re.compile(rb"RESERVED ([0-9]{1,%d}) ([0-9]{1,%d})" % (MAX_DIGITS, MAX_DIGITS))
_RESERVED_REPLY = re.compile(_RESERVED.pattern + b"\r\n")
# A put's reply, whole, for ReplyReader.inserted(), which reads a run of them at once.
_INSERTED_REPLY = re.compile(rb"INSERTED ([0-9]{1,%d})\r\n" % MAX_DIGITS)

# Refusals that are the server's own trouble: the command was well formed.
_SERVER_REFUSALS = {
    "BURIED": "the server ran out of memory and buried the job",
    "DRAINING": "the server is draining and takes no new jobs",
    "OUT_OF_MEMORY": "the server is out of memory",
    "INTERNAL_ERROR": "the server hit an internal error",
}


class ProtocolError(Exception):
    """The server's reply breaks the protocol; the connection cannot be trusted."""


class StreamEnded(ProtocolError):
    """The stream ended between replies: the server closed the connection, cleanly."""


class Refused(Exception):
    """The server answered a command with one of its error statuses."""

    def __init__(self, status: str, values: list[bytes]) -> None:
        super().__init__(status)
        #: The status word, e.g. ``"NOT_FOUND"`` or ``"JOB_TOO_BIG"``.
        self.status = status
        #: What followed the status on the line (``BURIED`` on a put carries the id).
        self.values = values

    @property
    def not_found(self) -> bool:
        """Whether the job is not there (or not reserved by this connection)."""
        return self.status == "NOT_FOUND"

    @property
    def too_big(self) -> bool:
        """Whether a put's body was over the server's ``max-job-size``."""
        return self.status == "JOB_TOO_BIG"

    @property
    def no_job_yet(self) -> bool:
        """Whether a reserve ended without a job and may be sent again.

        ``TIMED_OUT``, or ``DEADLINE_SOON``: nothing is ready, and a job this
        connection holds is in the last second of its time-to-run.
        """
        return self.status in ("TIMED_OUT", "DEADLINE_SOON")

    @property
    def deadline_soon(self) -> bool:
        """Whether a reserve was cut short by a job of its connection about to run out."""
        return self.status == "DEADLINE_SOON"

    @property
    def stored_id(self) -> int | None:
        """The id of a job a put stored all the same (``BURIED <id>``: out of memory), or None."""
        if self.status == "BURIED" and len(self.values) == 1:
            return number(self.values[0])
        return None


def refusal_error(refused: Refused, address: str) -> QueueError:
    """Return the queue_beanstalk exception for a refusal of ``address``'s server.

    A refusal that means the client and the server disagree about the
    conversation (BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, NOT_IGNORED,
    JOB_TOO_BIG, and DEADLINE_SOON anywhere but in a reserve's reply) is a
    :class:`CommandRefused` (a QueueConnectionError): the connection can no
    longer be trusted, and the command must not be sent again.
    """
    if refused.status == "TIMED_OUT":
        return Timeout(f"no message within the timeout (server {address})")
    if refused.not_found:
        return NotFound("the server holds no such job reserved by this connection")
    reason = _SERVER_REFUSALS.get(refused.status)
    if reason is not None:
        return ServerError(reason, refused.status)
    return CommandRefused(f"unexpected reply {refused.status}", address, refused.status)


def number(value: bytes) -> int:
    """Return a reply value (ASCII digits, at most 20) as an int, or raise ProtocolError."""
    if not value.isdigit() or len(value) > MAX_DIGITS:
        raise ProtocolError(f"expected a number of at most {MAX_DIGITS} digits, got {value[:40]!r}")
    return int(value)


# Reading replies.


class ReplyReader:
    """Replies as they arrive, without I/O: fed bytes, it hands back lines and data blocks.

    :meth:`feed` adds what a transport received; :meth:`line` and
    :meth:`block` return the next line (without its CRLF) or data block, or
    None while more is needed. Three shortcuts read the usual replies to
    pipelined commands once they have come whole: :meth:`jobs`, a run of
    reserves' replies (line and block each), :meth:`inserted`, a run of puts'
    (``INSERTED <id>``), and :meth:`repeated`, a run of one-word replies
    (``DELETED``). Usually a receive brings whole replies,
    read in place and never copied; bytes that come in pieces are joined when
    a line is looked for (lines are short) and, for a data block, once it has
    come whole. Not thread-safe: one per connection, used under its lock.
    """

    __slots__ = ("_data", "_ended", "_parts", "_start", "unread")

    def __init__(self) -> None:
        # What was received and not yet read is _data[_start:], then _parts.
        self._data = b""
        self._start = 0
        self._parts: list[bytes] = []
        self._ended = False
        #: How many bytes were fed and not yet read (an attribute: a transport
        #: reads it before every reply).
        self.unread = 0

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` says the stream ended."""
        if not data:
            self._ended = True
            return
        if not self.unread:  # the usual case: whole replies, read in place
            self._data, self._start = data, 0
        else:
            self._parts.append(data)
        self.unread += len(data)

    def line(self) -> bytes | None:
        """Return the next line without its CRLF, or None until it has come whole.

        :raises ProtocolError: for a line longer than any beanstalkd sends, or
            one the stream ended in (:class:`StreamEnded` when it ended before it).
        """
        data, start = self._data, self._start
        end = data.find(b"\r\n", start)
        if end < 0 and self._parts:
            self._join()
            data, start = self._data, 0
            end = data.find(b"\r\n")
        if end < 0:
            if len(data) - start > MAX_LINE:
                raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
            self._check_not_ended()
            return None
        if end - start > MAX_LINE:
            raise ProtocolError(f"reply line longer than {MAX_LINE} bytes")
        self._start = end + 2
        self.unread -= end + 2 - start
        return data[start:end]

    def jobs(self, limit: int, most: int) -> list[tuple[int, bytes]]:
        """Return the id and body of each next reply, up to ``most``, while each is RESERVED, whole.

        The replies to pipelined reserves, read in one call, each with a body
        of at most ``limit`` bytes. Empty, with nothing read, when the next
        reply is anything else (not all here, in pieces, another status, a body
        over ``limit``, a block without its CRLF), for :meth:`line` and
        :meth:`block` to read, or refuse.
        """
        if self._parts:
            return []
        data, start = self._data, self._start
        match = _RESERVED_REPLY.match
        jobs: list[tuple[int, bytes]] = []
        while len(jobs) < most and (found := match(data, start)) is not None:
            size = int(found[2])
            begin = found.end()
            end = begin + size
            if size > limit or not data.startswith(b"\r\n", end):  # not whole, or no CRLF
                break
            jobs.append((int(found[1]), data[begin:end]))
            start = end + 2
        if jobs:
            self._read_to(start)
        return jobs

    def inserted(self, most: int) -> list[int]:
        """Return the job id of each next reply, up to ``most``, while each is a whole ``INSERTED``.

        The replies to pipelined puts, read in one call. Empty, with nothing
        read, when the next reply is anything else (not all here, in pieces,
        another status), for :meth:`line` to read, or refuse.
        """
        if self._parts:
            return []
        data, start = self._data, self._start
        match = _INSERTED_REPLY.match
        ids: list[int] = []
        while len(ids) < most and (found := match(data, start)) is not None:
            ids.append(int(found[1]))
            start = found.end()
        if ids:
            self._read_to(start)
        return ids

    def repeated(self, line: bytes, most: int) -> int:
        """Read the next replies, up to ``most``, while each is ``line`` (CRLF included).

        The usual replies to pipelined deletes (``DELETED``), read in one call;
        returns how many were read, 0 when the next reply is another, or not
        all here, or bytes came in pieces not yet joined: to be read one at a
        time then.
        """
        if self._parts:
            return 0
        data, start, size = self._data, self._start, len(line)
        count = min(most, (len(data) - start) // size)  # as many as have come
        if not data.startswith(line * count, start):  # another reply among them: up to it
            count = 0
            while data.startswith(line, start + count * size):
                count += 1
        if count:
            self._read_to(start + count * size)
        return count

    def block(self, size: int) -> bytes | None:
        """Return the next data block of ``size`` bytes, past its CRLF, or None until it came.

        :raises ProtocolError: when the block is not followed by CRLF, or the
            stream ended in it.
        """
        if self.unread < size + 2:
            self._check_not_ended()
            return None
        if self._parts:
            self._join()
        data, start = self._data, self._start
        end = start + size
        if not data.startswith(b"\r\n", end):
            raise ProtocolError("data block not followed by CRLF")
        self._read_to(end + 2)
        return data[start:end]

    def _read_to(self, end: int) -> None:
        """Mark ``_data`` read up to ``end``, the end of a reply."""
        self.unread -= end - self._start
        if end == len(self._data):  # all read: an idle connection keeps no body
            self._data, self._start = b"", 0
        else:
            self._start = end

    def _check_not_ended(self) -> None:
        """Raise when more of a reply is needed but the stream ended.

        :raises StreamEnded: when it ended between replies.
        :raises ProtocolError: when it ended in the middle of one.
        """
        if self._ended:
            if not self.unread:
                raise StreamEnded("the server closed the connection between replies")
            raise ProtocolError("the stream ended in the middle of a reply")

    def _join(self) -> None:
        self._data = b"".join([self._data[self._start :], *self._parts])
        self._start = 0
        self._parts = []


def reply_values(line: bytes, expected: bytes, count: int) -> list[bytes]:
    """Return the ``count`` values of a reply line whose status is ``expected``.

    :raises Refused: for one of beanstalkd's error statuses.
    :raises ProtocolError: for anything else, or the wrong number of values.
    """
    status, *values = line.split(b" ")
    if status == expected:
        if len(values) != count:
            raise ProtocolError(f"{expected.decode()} with {len(values)} values, not {count}")
        return values
    if status in ERROR_STATUSES:
        raise Refused(status.decode("ascii"), values)
    raise ProtocolError(f"unexpected reply {status[:40]!r}")


def reply_number(line: bytes, expected: bytes) -> int:
    """Return the number a reply line carries (``INSERTED <id>``, ``WATCHING <count>``).

    Raises as :func:`reply_values` does, and ProtocolError for a value that is
    not a number.
    """
    status, _, value = line.partition(b" ")
    if status == expected and value.isdigit() and len(value) <= MAX_DIGITS:  # checked at once
        return int(value)
    return number(reply_values(line, expected, 1)[0])


def reserved(line: bytes) -> tuple[int, int]:
    """Return the job id and body size a reserve's reply line announces.

    Raises as :func:`reply_values` does (``TIMED_OUT`` and ``DEADLINE_SOON``
    are :class:`Refused`).
    """
    found = _RESERVED.fullmatch(line)
    if found is not None:
        return int(found[1]), int(found[2])
    job_id, size = reply_values(line, b"RESERVED", 2)
    return number(job_id), number(size)


def found(line: bytes) -> tuple[int, int]:
    """Return the job id and body size a peek's reply line (``FOUND <id> <bytes>``) announces.

    Raises as :func:`reply_values` does (``NOT_FOUND`` is :class:`Refused`).
    """
    job_id, size = reply_values(line, b"FOUND", 2)
    return number(job_id), number(size)


# Commands. Names are checked before they come here (checks.check_name), so
# none can carry a CRLF and a second command.


def put(body: bytes, priority: int, delay: int, ttr: int) -> Command:
    """Return a ``put`` carrying ``body``."""
    return b"put %d %d %d %d\r\n%b\r\n" % (priority, delay, ttr, len(body), body), INSERTED


def puts(bodies: Sequence[bytes], priority: int, delay: int, ttr: int) -> bytes:
    """Return a ``put`` of each body, as :func:`put` makes it, joined for one write."""
    head = b"put %d %d %d " % (priority, delay, ttr)
    return b"".join([b"%b%d\r\n%b\r\n" % (head, len(body), body) for body in bodies])


def reserve(seconds: int) -> Command:
    """Return a ``reserve-with-timeout``."""
    return b"reserve-with-timeout %d\r\n" % seconds, b"RESERVED"


def delete(job_id: int) -> Command:
    """Return a ``delete``."""
    return b"delete %d\r\n" % job_id, b"DELETED"


def delete_then_reserve_batch(job_ids: Sequence[int], seconds: int, count: int) -> bytes:
    """Return deletes, then ``count`` reserves, for one write: the first waits, the rest do not.

    Replies come in order: one ``DELETED`` (or ``NOT_FOUND``) per delete, then
    one per reserve; the reserves after the first are ``reserve-with-timeout
    0``, so they take only jobs ready once the first has one.
    """
    # The deletes and the waiting reserve in one format: one call into C for them all.
    template = b"delete %d\r\n" * len(job_ids) + b"reserve-with-timeout %d\r\n"
    return template % (*job_ids, seconds) + b"reserve-with-timeout 0\r\n" * (count - 1)


def release(job_id: int, priority: int, delay: int) -> Command:
    """Return a ``release``."""
    return b"release %d %d %d\r\n" % (job_id, priority, delay), b"RELEASED"


def bury(job_id: int, priority: int) -> Command:
    """Return a ``bury``."""
    return b"bury %d %d\r\n" % (job_id, priority), b"BURIED"


def touch(job_id: int) -> Command:
    """Return a ``touch``."""
    return b"touch %d\r\n" % job_id, b"TOUCHED"


def kick_job(job_id: int) -> Command:
    """Return a ``kick-job``."""
    return b"kick-job %d\r\n" % job_id, b"KICKED"


def stats_job(job_id: int) -> Command:
    """Return a ``stats-job``: its reply is ``OK <size>`` and a YAML body."""
    return b"stats-job %d\r\n" % job_id, b"OK"


#: The server's ``stats``: its reply is ``OK <size>`` and a YAML body.
STATS: Command = (b"stats\r\n", b"OK")

#: The server's ``list-tubes``: its reply is ``OK <size>`` and a YAML list.
LIST_TUBES: Command = (b"list-tubes\r\n", b"OK")


def stats_tube(tube: str) -> Command:
    """Return a ``stats-tube``: its reply is ``OK <size>`` and a YAML body."""
    return b"stats-tube %b\r\n" % tube.encode("ascii"), b"OK"


def peek(state: str) -> Command:
    """Return a ``peek-ready``, ``peek-delayed`` or ``peek-buried`` of the used tube."""
    return b"peek-%b\r\n" % state.encode("ascii"), b"FOUND"


def kick(bound: int) -> Command:
    """Return a ``kick`` of up to ``bound`` jobs of the used tube; its reply carries the count."""
    return b"kick %d\r\n" % bound, b"KICKED"


def pause_tube(tube: str, seconds: int) -> Command:
    """Return a ``pause-tube``."""
    return b"pause-tube %b %d\r\n" % (tube.encode("ascii"), seconds), b"PAUSED"


def use(tube: str) -> Command:
    """Return a ``use``: puts then go to ``tube``."""
    return b"use %b\r\n" % tube.encode("ascii"), b"USING"


def watch(tube: str) -> Command:
    """Return a ``watch``: reserves then take from ``tube`` too."""
    return b"watch %b\r\n" % tube.encode("ascii"), b"WATCHING"


def ignore(tube: str) -> Command:
    """Return an ``ignore``: reserves no longer take from ``tube``."""
    return b"ignore %b\r\n" % tube.encode("ascii"), b"WATCHING"


def watch_plan(watched: Iterable[str], tubes: Iterable[str]) -> tuple[list[str], list[str]]:
    """Return the tubes to watch, then to ignore, for a connection watching ``watched``.

    Watches come first, in the order given: beanstalkd refuses to ignore a
    connection's last tube.
    """
    current = set(watched)
    wanted = list(dict.fromkeys(tubes))
    return [tube for tube in wanted if tube not in current], sorted(current - set(wanted))


# Stats.


def parse_stats(body: bytes) -> dict[str, str]:
    """Return the YAML mapping of a ``stats`` or ``stats-job`` reply's body."""
    text = body.decode("ascii", "replace")
    if not text.startswith("---\n"):
        raise ProtocolError("stats reply does not start with ---")
    fields: dict[str, str] = {}
    for line in text[4:].splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            raise ProtocolError(f"stats line without a value: {line[:40]!r}")
        fields[key] = value.strip('"')
    return fields


def parse_list(body: bytes) -> list[str]:
    """Return the YAML list of a ``list-tubes`` reply's body."""
    text = body.decode("ascii", "replace")
    if not text.startswith("---\n"):
        raise ProtocolError("list reply does not start with ---")
    items = []
    for line in text[4:].splitlines():
        if not line.startswith("- "):
            raise ProtocolError(f"list line without '- ': {line[:40]!r}")
        items.append(line[2:].strip('"'))
    return items


def field(stats: Mapping[str, str], key: str) -> str:
    """Return one field of a stats mapping, or raise ProtocolError."""
    try:
        return stats[key]
    except KeyError:
        raise ProtocolError(f"stats reply without {key!r}") from None


def _count(stats: Mapping[str, str], key: str) -> int:
    return number(field(stats, key).encode("ascii", "replace"))


def job_priority(stats: Mapping[str, str]) -> int:
    """Return the priority (``pri``) of a ``stats-job`` reply."""
    return _count(stats, "pri")


def max_job_size(stats: Mapping[str, str]) -> int:
    """Return the ``max-job-size`` of a ``stats`` reply."""
    return _count(stats, "max-job-size")


def job_stats(stats: Mapping[str, str], server: str) -> JobStats:
    """Return a ``stats-job`` reply from ``server`` as JobStats."""
    return JobStats(
        id=_count(stats, "id"),
        server=server,
        tube=field(stats, "tube"),
        state=field(stats, "state"),
        priority=_count(stats, "pri"),
        age=_count(stats, "age"),
        ttr=_count(stats, "ttr"),
        reserves=_count(stats, "reserves"),
        timeouts=_count(stats, "timeouts"),
        releases=_count(stats, "releases"),
        buries=_count(stats, "buries"),
        kicks=_count(stats, "kicks"),
        time_left=_count(stats, "time-left") if "time-left" in stats else 0,
    )


def tube_stats(stats: Mapping[str, str]) -> TubeStats:
    """Return a ``stats-tube`` reply as TubeStats."""
    return TubeStats(
        name=field(stats, "name"),
        ready=_count(stats, "current-jobs-ready"),
        delayed=_count(stats, "current-jobs-delayed"),
        reserved=_count(stats, "current-jobs-reserved"),
        buried=_count(stats, "current-jobs-buried"),
        urgent=_count(stats, "current-jobs-urgent"),
        waiting=_count(stats, "current-waiting"),
        watching=_count(stats, "current-watching"),
        total=_count(stats, "total-jobs"),
        pause_left=_count(stats, "pause-time-left"),
    )

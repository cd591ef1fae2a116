"""The beanstalkd backend (``beanstalk://host[:port]``), built on greenstalk.

Connections
    greenstalk's client is not thread-safe and a beanstalkd connection runs one
    command at a time, so the backend keeps a pool: each command borrows a
    connection for its duration. A ``reserve`` that may block borrows only a
    connection that holds no reservation, because a reservation can be settled
    only on the connection that made it: settling then never waits behind a
    blocked reserve, and beanstalkd's DEADLINE_SOON (sent to a reserve on a
    connection holding a job about to time out) cannot arise. Each connection
    remembers the tube it uses and the tubes it watches, so ``use``/``watch``
    cost a round trip only when they change. Connections open on first use.

Errors
    Everything greenstalk or the socket raises is translated in one place,
    :func:`translate`. A connection that failed (reset, EOF, timeout, a reply
    that does not parse) is closed and dropped; the next command opens a new one.
    Reservations made on it are gone: the server hands those jobs out again, and
    settling them raises :class:`~queue_beanstalk.NotFound`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import SplitResult

import greenstalk

from ..backend import Backend, Consumer, JobStats, Lease, Reserved
from ..errors import (
    MessageTooBig,
    NotFound,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
)
from ..limits import Seconds, check_count, from_text, positive_seconds, to_seconds

__all__ = ["DEFAULT_PORT", "BeanstalkBackend", "translate"]

logger = logging.getLogger("queue_beanstalk")

DEFAULT_PORT = 11300
T = TypeVar("T")

#: What greenstalk and the socket layer can raise. ValueError, LookupError and
#: AssertionError come out of parsing a reply that is not what was expected.
LOWER_ERRORS = (greenstalk.Error, OSError, AssertionError, ValueError, LookupError)

_SERVER_REFUSALS = {
    greenstalk.BuriedError: "the server ran out of memory and buried the job",
    greenstalk.DrainingError: "the server is draining and takes no new jobs",
    greenstalk.OutOfMemoryError: "the server is out of memory",
    greenstalk.InternalError: "the server hit an internal error",
}


def translate(exc: BaseException, address: str) -> QueueError:
    """Return the queue_beanstalk exception for a greenstalk or socket exception.

    :param exc: what greenstalk or the socket raised.
    :param address: the server, as ``host:port``, for the message.
    """
    if isinstance(exc, greenstalk.TimedOutError):
        return Timeout(f"no message within the timeout (server {address})")
    if isinstance(exc, greenstalk.NotFoundError):
        return NotFound("the server holds no such job reserved by this connection")
    if isinstance(exc, greenstalk.BeanstalkdError):
        reply = _reply_word(exc)
        reason = _SERVER_REFUSALS.get(type(exc))
        if reason is not None:
            return ServerError(reason, reply)
        # BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, NOT_IGNORED, DEADLINE_SOON
        # and JOB_TOO_BIG mean this client and the server disagree about the
        # conversation; the connection can no longer be trusted.
        return QueueConnectionError(f"unexpected reply {reply}", address)
    if isinstance(exc, greenstalk.UnknownResponseError):
        status = exc.status.decode("ascii", "replace")
        return QueueConnectionError(f"unknown reply {status!r}", address)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return QueueConnectionError("no reply within the socket timeout", address)
    if isinstance(exc, OSError):
        return QueueConnectionError(f"connection failed: {exc}", address)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return QueueConnectionError(f"malformed reply ({detail})", address)


_REPLY_WORDS = {cls: status.decode("ascii") for status, cls in greenstalk.ERROR_RESPONSES.items()}


def _reply_word(exc: greenstalk.BeanstalkdError) -> str:
    return _REPLY_WORDS.get(type(exc), type(exc).__name__)


def _has_input(sock: socket.socket) -> bool:
    """Return whether an idle connection has something to read.

    Between commands beanstalkd sends nothing, so input on an idle connection
    is the end of the stream (the server restarted or went away), a reset, or
    stray bytes: the connection is stale, and using it would fail or desynchronise.
    """
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _any(conn: _Connection) -> bool:
    """Accept any idle connection (for commands that do not depend on the tube)."""
    return True


def _job_stats(stats: greenstalk.StatsJob) -> JobStats:
    """Return greenstalk's stats-job reply as JobStats (a missing field is a KeyError)."""
    return JobStats(
        id=int(stats["id"]),
        tube=str(stats["tube"]),
        state=str(stats["state"]),
        priority=int(stats["pri"]),
        age=int(stats["age"]),
        ttr=int(stats["ttr"]),
        reserves=int(stats["reserves"]),
        timeouts=int(stats["timeouts"]),
        releases=int(stats["releases"]),
        buries=int(stats["buries"]),
        kicks=int(stats["kicks"]),
    )


def _job(job_id: int) -> greenstalk.Job[bytes]:
    """Return a stand-in for greenstalk's Job: its release, bury and touch read only the id."""
    return greenstalk.Job(job_id, b"")


class _Connection:
    """One socket to beanstalkd and what the server knows of it."""

    __slots__ = ("broken", "client", "leases", "lock", "sock", "used", "watched")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.client: greenstalk.Client[bytes] = greenstalk.Client(sock, encoding=None)
        #: Held while a command runs on this connection.
        self.lock = threading.Lock()
        self.used = greenstalk.DEFAULT_TUBE
        self.watched = frozenset((greenstalk.DEFAULT_TUBE,))
        #: How many jobs are reserved through this connection and not yet settled.
        self.leases = 0
        self.broken = False


class _BeanstalkLease(Lease):
    __slots__ = ("backend", "connection")

    def __init__(self, job_id: int, tube: str, connection: _Connection, backend: object) -> None:
        super().__init__(job_id, tube)
        self.connection = connection
        self.backend = backend


class BeanstalkBackend(Backend):
    """Jobs on a beanstalkd server; thread-safe; connects on first use.

    :param host: the server's host name or address.
    :param port: the server's TCP port.
    :param connect_timeout: seconds to wait for a connection to open.
    :param timeout: seconds to wait for any reply; a blocking reserve waits for
        its own timeout plus this much.
    :param max_idle: idle connections kept open for reuse (connections holding
        reservations are always kept).
    :param retry_for: seconds during which ``put`` (and the other commands that
        hold no reservation, but not a reserve) are tried again, with jittered
        backoff, after a connection failure; 0 raises at once. A put retried
        after a failure mid-command may be stored twice (at-least-once).
    """

    options = frozenset({"connect_timeout", "timeout", "max_idle", "retry_for"})

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        connect_timeout: Seconds = 5.0,
        timeout: Seconds = 10.0,
        max_idle: int = 16,
        retry_for: Seconds = 0,
    ) -> None:
        self._host = host
        self._port = port
        #: The server, as ``host:port`` (``[host]:port`` for an IPv6 address).
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._connect_timeout = positive_seconds(connect_timeout, "connect_timeout")
        self._timeout = positive_seconds(timeout, "timeout")
        self._max_idle = check_count(max_idle, "max_idle", 0)
        self._retry_for = to_seconds(retry_for, "retry_for")
        self._lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False
        self._max_job_size: int | None = None

    @classmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> BeanstalkBackend:
        """Return a backend for ``beanstalk://host[:port]`` (port 11300 by default)."""
        if url.path not in ("", "/"):
            raise ValueError(f"a beanstalk:// URL takes no path, not {url.geturl()!r}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"bad port in {url.geturl()!r}: {exc}") from exc
        return cls(
            url.hostname or "127.0.0.1",
            port,
            connect_timeout=positive_seconds(
                from_text(options.get("connect_timeout", 5.0), float, "connect_timeout"),
                "connect_timeout",
            ),
            timeout=positive_seconds(
                from_text(options.get("timeout", 10.0), float, "timeout"), "timeout"
            ),
            max_idle=check_count(
                from_text(options.get("max_idle", 16), int, "max_idle"), "max_idle", 0
            ),
            retry_for=to_seconds(
                from_text(options.get("retry_for", 0), float, "retry_for"), "retry_for"
            ),
        )

    def put(self, tube: str, body: bytes, *, priority: int, delay: int, ttr: int) -> int:
        """Store a job; see :meth:`Backend.put`."""
        limit = self.max_job_size()
        if len(body) > limit:
            raise MessageTooBig(len(body), limit)

        def command(conn: _Connection) -> int:
            if conn.used != tube:
                conn.client.use(tube)
                conn.used = tube
            try:
                return conn.client.put(body, priority=priority, delay=delay, ttr=ttr)
            except greenstalk.JobTooBigError:
                # The server restarted with a lower -z; the connection is fine.
                self._max_job_size = None
                raise MessageTooBig(len(body), self.max_job_size()) from None

        return self._borrow(command, lambda conn: conn.used == tube)

    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve a job; see :meth:`Backend.reserve`."""
        watch = frozenset(tubes)
        return self._borrow(
            lambda conn: self._reserve_on(conn, tubes, timeout),
            lambda conn: conn.watched == watch,
            reserving=True,
        )

    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer with a connection of its own; see :meth:`Backend.consumer`."""
        return _BeanstalkConsumer(self, tubes)

    def delete(self, lease: Lease) -> None:
        """Delete a reserved job; see :meth:`Backend.delete`."""
        self._settle(lease, lambda client, job_id: client.delete(job_id), ends=True)

    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Release a reserved job; see :meth:`Backend.release`."""
        self._settle(
            lease,
            lambda client, job_id: client.release(_job(job_id), priority, delay),
            ends=True,
        )

    def bury(self, lease: Lease, *, priority: int) -> None:
        """Bury a reserved job; see :meth:`Backend.bury`."""
        self._settle(lease, lambda client, job_id: client.bury(_job(job_id), priority), ends=True)

    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run; see :meth:`Backend.touch`."""
        self._settle(lease, lambda client, job_id: client.touch(_job(job_id)), ends=False)

    def stats_job(self, job_id: int) -> JobStats:
        """Return a job's counters; see :meth:`Backend.stats_job`."""
        return self._borrow(lambda conn: _job_stats(conn.client.stats_job(job_id)), _any)

    def kick_job(self, job_id: int) -> None:
        """Make a buried or delayed job ready; see :meth:`Backend.kick_job`."""
        self._borrow(lambda conn: conn.client.kick_job(job_id), _any)

    def max_job_size(self) -> int:
        """Return the server's ``max-job-size`` (asked once, then remembered)."""
        limit = self._max_job_size
        if limit is None:
            limit = self._borrow(lambda conn: int(conn.client.stats()["max-job-size"]), _any)
            self._max_job_size = limit
        return limit

    def close(self) -> None:
        """Close every connection, waking any thread blocked in :meth:`reserve`."""
        with self._lock:
            self._closed = True
            connections = list(self._open)
            self._open.clear()
            self._idle.clear()
        for conn in connections:
            self._shut(conn)

    def __repr__(self) -> str:
        return f"queue_beanstalk.BeanstalkBackend(host={self._host!r}, port={self._port})"

    # Connections

    def _borrow(
        self,
        command: Callable[[_Connection], T],
        fits: Callable[[_Connection], bool],
        *,
        reserving: bool = False,
    ) -> T:
        """Run ``command`` on an idle connection, preferring one that ``fits``.

        Connection failures are retried for ``retry_for`` seconds, except for a
        reserve, whose caller owns its own timeout.
        """
        give_up = time.monotonic() + (0.0 if reserving else self._retry_for)
        failures = 0
        while True:
            try:
                conn = self._checkout(fits, reserving)
                try:
                    return self._run(conn, functools.partial(command, conn))
                finally:
                    conn.lock.release()
                    self._checkin(conn)
            except QueueConnectionError:
                failures += 1
                pause = random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2**failures)  # noqa: S311
                if time.monotonic() + pause > give_up:
                    raise
                time.sleep(pause)

    def _checkout(self, fits: Callable[[_Connection], bool], reserving: bool) -> _Connection:
        chosen: _Connection | None = None
        stale: list[_Connection] = []
        with self._lock:
            if self._closed:
                raise QueueError("the queue factory is closed")
            for conn in reversed(self._idle):
                if reserving and conn.leases:
                    continue
                if not conn.leases and _has_input(conn.sock):
                    stale.append(conn)
                    continue
                if fits(conn):
                    chosen = conn
                    break
                if chosen is None:
                    chosen = conn
            for conn in stale:
                self._idle.remove(conn)
                self._open.discard(conn)
            if chosen is not None:
                self._idle.remove(chosen)
        for conn in stale:
            self._shut(conn)
        if chosen is None:
            chosen = self._connect()
        chosen.lock.acquire()
        return chosen

    def _checkin(self, conn: _Connection) -> None:
        with self._lock:
            if conn.broken or self._closed:
                return
            if conn.leases or len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
            self._open.discard(conn)
        self._shut(conn)

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        except OSError as exc:
            raise QueueConnectionError(f"cannot connect: {exc}", self.address) from exc
        try:
            # Commands are small writes each awaiting a reply: Nagle would delay them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._timeout)
            conn = _Connection(sock)
        except OSError as exc:
            sock.close()
            raise QueueConnectionError(f"cannot connect: {exc}", self.address) from exc
        with self._lock:
            if self._closed:
                self._shut(conn)
                raise QueueError("the queue factory is closed")
            self._open.add(conn)
        return conn

    def _run(self, conn: _Connection, command: Callable[[], T]) -> T:
        """Run ``command`` with ``conn`` held, translating what greenstalk raises."""
        try:
            return command()
        except QueueError:
            raise  # already ours, e.g. Timeout (a TimeoutError, hence an OSError)
        except LOWER_ERRORS as exc:
            error = translate(exc, self.address)
            if isinstance(error, QueueConnectionError):
                self._drop(conn, error)
            raise error from exc
        except BaseException as exc:
            # Interrupted mid-command (KeyboardInterrupt, say): a reply may be left
            # unread on the socket, and the next command would read it as its own.
            self._drop(conn, exc)
            raise

    def _settle(
        self,
        lease: Lease,
        command: Callable[[greenstalk.Client[bytes], int], object],
        *,
        ends: bool,
    ) -> None:
        """Run ``command`` for ``lease`` on the connection that reserved its job."""
        if not isinstance(lease, _BeanstalkLease) or lease.backend is not self:
            raise NotFound(f"job {lease.job_id} was not reserved through this factory")
        conn = lease.connection
        with conn.lock:
            if conn.broken:
                raise NotFound(
                    f"job {lease.job_id}'s reservation was lost with its connection; "
                    "the server hands the job out again"
                )
            try:
                self._run(conn, lambda: command(conn.client, lease.job_id))
            finally:
                if ends:
                    conn.leases -= 1

    def _reserve_on(self, conn: _Connection, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve from ``tubes`` on ``conn``, which is held and has no reservations."""
        deadline = time.monotonic() + timeout
        watch = frozenset(tubes)
        self._watch(conn, watch)
        while True:
            seconds = math.ceil(max(0.0, deadline - time.monotonic()))
            conn.sock.settimeout(seconds + self._timeout)
            try:
                job = conn.client.reserve(seconds)
                break
            except greenstalk.TimedOutError:
                # beanstalkd counts whole seconds; never give up before the deadline.
                if time.monotonic() >= deadline:
                    raise Timeout(f"no message on {', '.join(tubes)} within {timeout:g}s") from None
            finally:
                conn.sock.settimeout(self._timeout)
        tube = tubes[0] if len(watch) == 1 else str(conn.client.stats_job(job.id)["tube"])
        conn.leases += 1
        return Reserved(job.id, job.body, tube, _BeanstalkLease(job.id, tube, conn, self))

    def _watch(self, conn: _Connection, tubes: frozenset[str]) -> None:
        if conn.watched == tubes:
            return
        # Watch first: beanstalkd refuses to ignore a connection's last tube.
        for tube in tubes - conn.watched:
            conn.client.watch(tube)
        for tube in conn.watched - tubes:
            conn.client.ignore(tube)
        conn.watched = tubes

    def _drop(self, conn: _Connection, error: BaseException) -> None:
        if conn.leases:
            logger.warning(
                "connection to %s lost with %d reserved job(s); the server hands them out "
                "again: %r",
                self.address,
                conn.leases,
                error,
            )
        self._forget(conn)

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._open.discard(conn)
        self._shut(conn)

    @staticmethod
    def _shut(conn: _Connection) -> None:
        conn.broken = True
        # shutdown() wakes a thread blocked reading this socket; close() alone may not.
        # It fails when the peer already reset or closed the connection: nothing to wake.
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
        conn.client.close()


class _BeanstalkConsumer(Consumer):
    """A connection of one worker's own; interrupt() shuts its socket mid-reserve."""

    def __init__(self, backend: BeanstalkBackend, tubes: Sequence[str]) -> None:
        self._backend = backend
        self._tubes = tuple(tubes)
        self._conn: _Connection | None = None
        # Guards _interrupted and _reserving, so interrupt() shuts the socket only
        # while a reserve is under way, never while the worker holds a job.
        self._state = threading.Lock()
        self._interrupted = False
        self._reserving = False

    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve a job; see :meth:`Consumer.reserve`."""
        conn = self._conn
        if conn is None or conn.broken:
            conn = self._conn = self._backend._connect()
        with self._state:
            if self._interrupted:
                return None
            self._reserving = True
        try:
            with conn.lock:
                return self._backend._run(
                    conn, lambda: self._backend._reserve_on(conn, self._tubes, timeout)
                )
        except Timeout:
            return None
        except QueueConnectionError:
            if self._interrupted:
                return None
            raise
        finally:
            with self._state:
                self._reserving = False

    def interrupt(self) -> None:
        """End a blocked reserve at once; see :meth:`Consumer.interrupt`."""
        with self._state:
            self._interrupted = True
            if self._reserving and self._conn is not None:
                # The connection holds no job while it reserves: closing it loses
                # nothing, and a job reserved in this very instant goes back.
                with contextlib.suppress(OSError):
                    self._conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the consumer's connection; see :meth:`Consumer.close`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._backend._forget(conn)

"""The beanstalkd backend (``beanstalk://host[:port]``).

Commands go out through :mod:`.wire` on pooled connections (:mod:`.connections`).
Batches are pipelined: ``put_many`` writes many puts at once, and a handler's
worker sends the delete of one job and the reserve of the next in one write.

Errors
    Everything the wire or the socket raises is translated in one place,
    :func:`translate`. A connection that failed (reset, EOF, timeout, a reply
    that breaks the protocol) is closed and dropped; the next command opens a
    new one. Reservations made on it are gone: the server hands those jobs out
    again, and settling them raises :class:`~queue_beanstalk.NotFound`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar
from urllib.parse import SplitResult

from ..backend import Backend, Consumer, JobStats, Lease, Reserved
from ..errors import (
    MessageTooBig,
    NotFound,
    PutManyError,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
)
from ..limits import Seconds, check_count, from_text, positive_seconds, to_seconds
from . import wire
from .connections import Connection, Pool
from .wire import Refused, WireError

__all__ = ["DEFAULT_PORT", "LOWER_ERRORS", "BeanstalkBackend", "translate"]

logger = logging.getLogger("queue_beanstalk")

DEFAULT_PORT = 11300
T = TypeVar("T")

#: What the wire and the socket layer raise; translate() maps each to a QueueError.
LOWER_ERRORS = (Refused, WireError, OSError, ValueError)

_SERVER_REFUSALS = {
    "BURIED": "the server ran out of memory and buried the job",
    "DRAINING": "the server is draining and takes no new jobs",
    "OUT_OF_MEMORY": "the server is out of memory",
    "INTERNAL_ERROR": "the server hit an internal error",
}

# put_many sends its puts in batches of at most this many commands or bytes:
# enough to hide the round trip, small enough to bound the memory they take.
BATCH_COMMANDS = 256
BATCH_BYTES = 1 << 20


def translate(exc: BaseException, address: str) -> QueueError:
    """Return the queue_beanstalk exception for a wire or socket exception.

    :param exc: what the wire or the socket raised.
    :param address: the server, as ``host:port``, for the message.
    """
    if isinstance(exc, Refused):
        if exc.status == "TIMED_OUT":
            return Timeout(f"no message within the timeout (server {address})")
        if exc.status == "NOT_FOUND":
            return NotFound("the server holds no such job reserved by this connection")
        reason = _SERVER_REFUSALS.get(exc.status)
        if reason is not None:
            return ServerError(reason, exc.status)
        # BAD_FORMAT, UNKNOWN_COMMAND, EXPECTED_CRLF, NOT_IGNORED, DEADLINE_SOON
        # and JOB_TOO_BIG mean this client and the server disagree about the
        # conversation; the connection can no longer be trusted.
        return QueueConnectionError(f"unexpected reply {exc.status}", address)
    if isinstance(exc, WireError):
        return QueueConnectionError(f"malformed reply: {exc}", address)
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        # BlockingIOError: the kernel's receive or send timeout ran out.
        return QueueConnectionError("no reply within the socket timeout", address)
    if isinstance(exc, OSError):
        return QueueConnectionError(f"connection failed: {exc}", address)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return QueueConnectionError(f"malformed reply ({detail})", address)


class _BeanstalkLease(Lease):
    """A Lease with the connection the job was reserved on, set just after it is made."""

    __slots__ = ("__weakref__", "backend", "connection")

    # Set by _lease_reserved, not by an __init__ of its own: one call fewer per reserve.
    connection: Connection
    backend: object


class BeanstalkBackend(Backend):
    """Jobs on a beanstalkd server; thread-safe; connects on first use.

    :param host: the server's host name or address.
    :param port: the server's TCP port.
    :param connect_timeout: seconds to wait for a connection to open.
    :param timeout: seconds to wait for any reply; a blocking reserve waits for
        its own timeout plus this much.
    :param max_idle: free idle connections kept open for reuse; connections in
        use, or holding reservations, are not counted (and always kept). Each
        thread first reuses the connection it used last.
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
        self._timeout = positive_seconds(timeout, "timeout")
        self._retry_for = to_seconds(retry_for, "retry_for")
        self._pool = Pool(
            host,
            port,
            self.address,
            positive_seconds(connect_timeout, "connect_timeout"),
            self._timeout,
            check_count(max_idle, "max_idle", 0),
        )
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
        size = len(body)
        limit = self._max_job_size or self.max_job_size()
        if size > limit:
            raise MessageTooBig(size, limit)
        command = wire.put_command(body, priority, delay, ttr)
        if self._retry_for:
            return self._borrow(self._put_on, tube, command, size, tube=tube)
        # _borrow(), unrolled, for the default of no retries: see reserve().
        conn = self._pool.checkout(tube)
        try:
            return self._put_on(conn, tube, command, size)
        except BaseException as exc:
            self._failed(conn, exc)  # raises the translation, if exc has one
            raise
        finally:
            self._pool.checkin(conn)

    def put_many(
        self, tube: str, bodies: Sequence[bytes], *, priority: int, delay: int, ttr: int
    ) -> list[int]:
        """Store jobs, pipelined, and return their ids in order; see :meth:`Backend.put_many`."""
        ids: list[int | None] = []
        errors: dict[int, QueueError] = {}
        conn = self._pool.checkout(tube=tube)
        try:
            if conn.used != tube:
                self._call(conn, self._use, conn, tube)
            start = 0
            while start < len(bodies):
                end, batch = _batch(bodies, start, priority, delay, ttr)
                sizes = [len(body) for body in bodies[start:end]]
                self._call(conn, self._put_batch, conn, batch, sizes, ids, errors)
                start = end
        except QueueConnectionError as exc:
            unknown = {index: exc for index in range(len(ids), len(bodies))}
            raise PutManyError(ids + [None] * len(unknown), {**errors, **unknown}) from exc
        finally:
            self._pool.checkin(conn)
        if errors:
            raise PutManyError(ids, errors)
        return [job_id for job_id in ids if job_id is not None]

    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve a job; see :meth:`Backend.reserve`."""
        # A copy unless a tuple: connections remember the very tuple they watch for.
        watch = tubes if isinstance(tubes, tuple) else tuple(tubes)
        # _borrow(), unrolled: a reserve is never tried again (its caller owns
        # the timeout), so it needs neither _borrow's loop nor its *args call.
        conn = self._pool.checkout(None, watch, True)
        try:
            return self._reserve_on(conn, watch, timeout)
        except BaseException as exc:
            self._failed(conn, exc)  # raises the translation, if exc has one
            raise
        finally:
            self._pool.checkin(conn)

    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer with a connection of its own; see :meth:`Backend.consumer`."""
        return _BeanstalkConsumer(self, tubes)

    def delete(self, lease: Lease) -> None:
        """Delete a reserved job; see :meth:`Backend.delete`."""
        self._settle(lease, b"delete %d\r\n" % lease.job_id, b"DELETED")

    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Release a reserved job; see :meth:`Backend.release`."""
        command = b"release %d %d %d\r\n" % (lease.job_id, priority, delay)
        self._settle(lease, command, b"RELEASED")

    def bury(self, lease: Lease, *, priority: int) -> None:
        """Bury a reserved job; see :meth:`Backend.bury`."""
        self._settle(lease, b"bury %d %d\r\n" % (lease.job_id, priority), b"BURIED")

    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run; see :meth:`Backend.touch`."""
        self._settle(lease, b"touch %d\r\n" % lease.job_id, b"TOUCHED", ends=False)

    def stats_job(self, job_id: int) -> JobStats:
        """Return a job's counters; see :meth:`Backend.stats_job`."""
        command = b"stats-job %d\r\n" % job_id
        return self._borrow(lambda conn: _job_stats(wire.stats(conn.wire, command)))

    def kick_job(self, job_id: int) -> None:
        """Make a buried or delayed job ready; see :meth:`Backend.kick_job`."""
        command = b"kick-job %d\r\n" % job_id
        self._borrow(lambda conn: conn.wire.simple(command, b"KICKED"))

    def max_job_size(self) -> int:
        """Return the server's ``max-job-size`` (asked once, then remembered)."""
        limit = self._max_job_size
        if limit is None:
            limit = self._max_job_size = self._borrow(
                lambda conn: _count(wire.stats(conn.wire, b"stats\r\n"), "max-job-size")
            )
        return limit

    def close(self) -> None:
        """Close every connection, waking any thread blocked in :meth:`reserve`."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"queue_beanstalk.BeanstalkBackend(host={self._host!r}, port={self._port})"

    # Running commands

    def _borrow(
        self,
        command: Callable[..., T],
        *args: object,
        tube: str | None = None,
    ) -> T:
        """Run ``command(conn, *args)`` on a pooled connection ``conn``.

        The pool prefers one using ``tube``. What the wire raises is translated
        by :meth:`_failed`. Connection failures are retried for ``retry_for``
        seconds (a reserve, whose caller owns its timeout, does not come here).
        """
        give_up = 0.0  # set at the first failure: the common case never needs it
        failures = 0
        while True:
            try:
                conn = self._pool.checkout(tube)
                try:
                    return command(conn, *args)  # _call(), inlined: this is every command
                except BaseException as exc:
                    self._failed(conn, exc)  # raises the translation, if exc has one
                    raise
                finally:
                    self._pool.checkin(conn)
            except QueueConnectionError:
                failures += 1
                if failures == 1:
                    give_up = time.monotonic() + self._retry_for
                remaining = give_up - time.monotonic()
                if remaining <= 0:
                    raise
                # Jittered, doubling, at most a second; the last try is at the deadline.
                pause = random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2**failures)  # noqa: S311
                time.sleep(min(pause, remaining))

    def _call(self, conn: Connection, command: Callable[..., T], *args: object) -> T:
        """Run ``command(*args)`` on ``conn``, held, translating what the wire raises."""
        try:
            return command(*args)
        except BaseException as exc:
            self._failed(conn, exc)  # raises the translation, if exc has one
            raise

    def _failed(self, conn: Connection, exc: BaseException) -> None:
        """Deal with ``exc``, raised by a command on ``conn``, from an ``except`` clause.

        Raises the QueueError that ``exc`` translates to, from ``exc``, having
        dropped ``conn`` if it can no longer be trusted; returns, for the
        caller's bare ``raise``, when ``exc`` goes on as it is. Every command
        that fails passes here (``_put_batch`` also translates the refusals it
        records and goes on from).
        """
        if isinstance(exc, QueueError):
            return  # already ours, e.g. Timeout (a TimeoutError, hence an OSError)
        if isinstance(exc, LOWER_ERRORS):
            error = translate(exc, self.address)
            if isinstance(error, QueueConnectionError):  # the connection cannot be trusted
                self._drop(conn, error)
            raise error from exc
        # Interrupted mid-command (KeyboardInterrupt, say): a reply may be left
        # unread on the socket, and the next command would read it as its own.
        self._drop(conn, exc)

    def _settle(self, lease: Lease, command: bytes, expected: bytes, *, ends: bool = True) -> None:
        """Send ``command`` for ``lease`` on the connection that reserved its job."""
        if not isinstance(lease, _BeanstalkLease) or lease.backend is not self:
            raise NotFound(f"job {lease.job_id} was not reserved through this factory")
        conn = lease.connection
        # A touch may find the connection busy with the next reserve once the job
        # was settled; it gives up then rather than wait out that reserve.
        if not conn.lock.acquire(blocking=False):
            while not conn.lock.acquire(timeout=0.05):
                if not ends and lease.settled:
                    raise NotFound(f"job {lease.job_id} was settled")
        try:
            if conn.broken:
                raise NotFound(
                    f"job {lease.job_id}'s reservation was lost with its connection; "
                    "the server hands the job out again"
                )
            try:
                conn.wire.simple(command, expected)  # _call(), unrolled as in reserve()
            except BaseException as exc:
                self._failed(conn, exc)  # raises the translation, if exc has one
                raise
            finally:
                if ends:
                    conn.let_go(lease)
        finally:
            conn.lock.release()

    def _put_on(self, conn: Connection, tube: str, command: bytes, size: int) -> int:
        if conn.used != tube:
            self._use(conn, tube)
        conn.wire.send(command)
        try:
            return conn.wire.reply_int(b"INSERTED")
        except Refused as refused:
            if refused.status != "JOB_TOO_BIG":
                raise
            raise self._too_big(size) from refused

    def _use(self, conn: Connection, tube: str) -> None:
        """Make ``conn`` put into ``tube``; callers check ``conn.used`` first."""
        wire.use(conn.wire, tube)
        conn.used = tube

    def _too_big(self, size: int) -> MessageTooBig:
        # The server restarted with a lower -z; the connection is fine.
        self._max_job_size = None
        return MessageTooBig(size, self.max_job_size())

    def _put_batch(
        self,
        conn: Connection,
        batch: bytes,
        sizes: list[int],
        ids: list[int | None],
        errors: dict[int, QueueError],
    ) -> None:
        """Send a batch of puts and read their replies; record a refusal, go on."""
        conn.wire.send(batch)
        for size in sizes:
            try:
                ids.append(conn.wire.reply_int(b"INSERTED"))
            except Refused as refused:
                if refused.status == "JOB_TOO_BIG":
                    # No other command mid-batch: the limit is asked again next time.
                    error: QueueError = MessageTooBig(size, self._max_job_size or 0)
                    self._max_job_size = None
                else:
                    error = translate(refused, self.address)
                    if isinstance(error, QueueConnectionError):
                        raise  # the stream cannot be trusted: the rest are unknown
                errors[len(ids)] = error
                ids.append(None)

    def _reserve_on(self, conn: Connection, tubes: tuple[str, ...], timeout: float) -> Reserved:
        """Reserve from ``tubes`` on ``conn``, held and holding no job."""
        if conn.watched_for is not tubes:
            self._watch(conn, tubes)
        now = time.monotonic()
        deadline = now + timeout
        seconds = math.ceil(timeout)
        while True:
            conn.wire.send(wire.reserve_command(seconds))
            try:
                job_id, body = conn.wire.reserved(now + seconds + self._timeout)
                break
            except Refused as refused:
                # beanstalkd counts whole seconds; never give up before the deadline.
                if refused.status != "TIMED_OUT":
                    raise
                now = time.monotonic()
                if now >= deadline:
                    raise Timeout(f"no message on {', '.join(tubes)} within {timeout:g}s") from None
                seconds = math.ceil(deadline - now)
        return self._lease_reserved(conn, tubes, job_id, body)

    def _lease_reserved(
        self, conn: Connection, tubes: Sequence[str], job_id: int, body: bytes
    ) -> Reserved:
        if len(tubes) == 1:
            tube = tubes[0]
        else:  # the RESERVED reply does not say which tube the job came from
            tube = _field(wire.stats(conn.wire, b"stats-job %d\r\n" % job_id), "tube")
        lease = _BeanstalkLease(job_id, tube)
        lease.connection = conn
        lease.backend = self
        conn.hold(lease)
        # Reserved(...) without the Python frame of a NamedTuple's __new__.
        return tuple.__new__(Reserved, (job_id, body, tube, lease))

    def _watch(self, conn: Connection, tubes: tuple[str, ...]) -> None:
        """Make ``conn`` reserve from ``tubes``; callers check ``conn.watched_for`` first."""
        watching = frozenset(tubes)
        # Watch first: beanstalkd refuses to ignore a connection's last tube.
        for tube in watching - conn.watched:
            wire.watch(conn.wire, tube)
        for tube in conn.watched - watching:
            wire.ignore(conn.wire, tube)
        conn.watched = watching
        conn.watched_for = tubes

    def _drop(self, conn: Connection, error: BaseException) -> None:
        held = conn.holding()
        if held:
            logger.warning(
                "connection to %s lost with %d reserved job(s); the server hands them out "
                "again: %r",
                self.address,
                held,
                error,
            )
        self._pool.forget(conn)


class _BeanstalkConsumer(Consumer):
    """A connection of one worker's own; interrupt() shuts its socket mid-reserve."""

    def __init__(self, backend: BeanstalkBackend, tubes: Sequence[str]) -> None:
        self.backend = self._backend = backend
        self._tubes = tuple(tubes)
        self._conn: Connection | None = None
        # Guards _interrupted and _reserving, so interrupt() shuts the socket only
        # while a reserve is under way, never while the worker holds a job.
        self._state = threading.Lock()
        self._interrupted = False
        self._reserving = False

    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve a job; see :meth:`Consumer.reserve`."""
        conn = self._connection()
        if not self._start_reserving():
            return None
        try:
            with conn.lock:
                return self._backend._call(
                    conn, self._backend._reserve_on, conn, self._tubes, timeout
                )
        except Timeout:
            return None
        except QueueConnectionError:
            if self._interrupted:
                return None
            raise
        finally:
            self._stop_reserving()

    def delete_and_reserve(self, lease: Lease, timeout: float) -> tuple[bool, Reserved | None]:
        """Delete and reserve in one write; see :meth:`Consumer.delete_and_reserve`."""
        conn = self._connection()
        if not isinstance(lease, _BeanstalkLease) or lease.connection is not conn:
            return super().delete_and_reserve(lease, timeout)
        seconds = math.ceil(timeout)
        backend = self._backend
        reply_by = time.monotonic() + seconds + backend._timeout
        # No closures and no _call(*args): this runs once per message.
        with conn.lock:
            try:
                if conn.watched_for is not self._tubes:
                    backend._watch(conn, self._tubes)
                conn.wire.send(b"delete %d\r\n%b" % (lease.job_id, wire.reserve_command(seconds)))
                try:
                    conn.wire.reply(b"DELETED", 0)
                    deleted = True
                except Refused as refused:
                    if refused.status != "NOT_FOUND":
                        raise
                    deleted = False
                finally:
                    conn.let_go(lease)
            except BaseException as exc:
                backend._failed(conn, exc)  # raises the translation, if exc has one
                raise
            # The delete is settled; only now may interrupt() cut the reserve short.
            if not self._start_reserving():
                backend._pool.forget(conn)  # the only way to end the reserve just sent
                return deleted, None
            try:
                try:
                    job_id, body = conn.wire.reserved(reply_by)
                    return deleted, backend._lease_reserved(conn, self._tubes, job_id, body)
                except BaseException as exc:
                    backend._failed(conn, exc)
                    raise
            except Timeout:
                return deleted, None
            except QueueConnectionError:
                if self._interrupted:
                    return deleted, None
                raise
            finally:
                self._stop_reserving()

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
            self._backend._pool.forget(conn)

    def _connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.broken:
            conn = self._conn = self._backend._pool.connect()
        return conn

    def _start_reserving(self) -> bool:
        with self._state:
            if self._interrupted:
                return False
            self._reserving = True
            return True

    def _stop_reserving(self) -> None:
        with self._state:
            self._reserving = False


def _batch(
    bodies: Sequence[bytes], start: int, priority: int, delay: int, ttr: int
) -> tuple[int, bytes]:
    """Return the end of the batch starting at ``start`` and its put commands, joined."""
    commands: list[bytes] = []
    size = 0
    end = start
    while end < len(bodies) and len(commands) < BATCH_COMMANDS and size < BATCH_BYTES:
        command = wire.put_command(bodies[end], priority, delay, ttr)
        commands.append(command)
        size += len(command)
        end += 1
    return end, b"".join(commands)


def _field(stats: Mapping[str, str], key: str) -> str:
    try:
        return stats[key]
    except KeyError:
        raise WireError(f"stats reply without {key!r}") from None


def _count(stats: Mapping[str, str], key: str) -> int:
    return wire.number(_field(stats, key).encode("ascii", "replace"))


def _job_stats(stats: Mapping[str, str]) -> JobStats:
    """Return a stats-job reply as JobStats."""
    return JobStats(
        id=_count(stats, "id"),
        tube=_field(stats, "tube"),
        state=_field(stats, "state"),
        priority=_count(stats, "pri"),
        age=_count(stats, "age"),
        ttr=_count(stats, "ttr"),
        reserves=_count(stats, "reserves"),
        timeouts=_count(stats, "timeouts"),
        releases=_count(stats, "releases"),
        buries=_count(stats, "buries"),
        kicks=_count(stats, "kicks"),
    )

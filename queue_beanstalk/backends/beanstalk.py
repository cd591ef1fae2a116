"""The beanstalkd backend (``beanstalk://host[:port]``).

Commands go out through :mod:`.wire` on pooled connections (:mod:`.connections`).
Batches are pipelined: ``put_many`` writes many puts at once, and a handler's
worker sends the delete of one job and the reserve of the next in one write.

Errors
    Every command runs through one boundary, ``BeanstalkBackend._failed``:
    what the wire or the socket raises is translated there (by
    :func:`translate`), and a connection that failed is dropped there.
    ``_run`` wraps a command in it; ``_borrow``, which runs every command on a
    pooled connection (a put among them), calls it in line. Only a put's refusals,
    which leave the connection usable, are read by the put itself. A
    connection that failed (reset, EOF, timeout, a reply that breaks the
    protocol) is closed and dropped; the next command opens a new one.
    Reservations made on it are gone: the server hands those jobs out again,
    and settling them raises :class:`~queue_beanstalk.NotFound`.
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
from typing import Any, TypeVar
from urllib.parse import SplitResult, urlsplit

from ..backend import (
    Backend,
    Consumer,
    JobRef,
    JobStats,
    Lease,
    Prepare,
    Reserved,
    TubeStats,
    prepared,
)
from ..checks import Seconds, check_count, from_text, positive_seconds, to_seconds
from ..errors import (
    MessageTooBig,
    NotFound,
    PutManyError,
    PutOutcomeUnknown,
    QueueConnectionError,
    QueueError,
    Timeout,
)
from . import protocol, wire
from .connections import Connection, Pool
from .protocol import Command, ProtocolError, Refused

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_IDLE",
    "DEFAULT_PORT",
    "DEFAULT_TIMEOUT",
    "LOWER_ERRORS",
    "UNCERTAIN_PUTS",
    "BeanstalkBackend",
    "resends_uncertain_puts",
    "translate",
]

logger = logging.getLogger("queue_beanstalk")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11300
#: Seconds to wait for a connection to open.
DEFAULT_CONNECT_TIMEOUT = 5.0
#: Seconds a reply may take to arrive whole.
DEFAULT_TIMEOUT = 10.0
#: Free idle connections a pool keeps for reuse.
DEFAULT_MAX_IDLE = 16
#: Connections a backend's pool opens at most for commands (handler workers have their own).
DEFAULT_MAX_CONNECTIONS = 64
T = TypeVar("T")

#: What the wire and the socket layer raise; translate() maps each to a QueueError.
LOWER_ERRORS = (Refused, ProtocolError, OSError)

# The options from_url takes, and what the text of each in a URL query becomes.
_OPTION_KINDS: dict[str, type[int] | type[float] | type[str]] = {
    "connect_timeout": float,
    "timeout": float,
    "max_idle": int,
    "max_connections": int,
    "retry_for": float,
    "uncertain_puts": str,
}

#: What ``uncertain_puts`` may say to do with a put sent but never answered.
UNCERTAIN_PUTS = ("resend", "raise")

# put_many sends its puts in batches of at most this many commands, or bytes of
# bodies: enough to hide the round trip, small enough to bound the memory they take.
BATCH_COMMANDS = 256
BATCH_BYTES = 1 << 20

# Seconds a reserve waits after DEADLINE_SOON before it asks again.
DEADLINE_SOON_PAUSE = 0.2


def translate(exc: BaseException, address: str) -> QueueError:
    """Return the queue_beanstalk exception for a wire or socket exception.

    :param exc: what the wire or the socket raised (one of LOWER_ERRORS).
    :param address: the server, as ``host:port``, for the message.
    """
    if isinstance(exc, Refused):
        return protocol.refusal_error(exc, address)
    if isinstance(exc, protocol.StreamEnded):
        return QueueConnectionError(f"connection failed: {exc}", address)
    if isinstance(exc, ProtocolError):
        return QueueConnectionError(f"malformed reply: {exc}", address)
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        # BlockingIOError: the kernel's send timeout ran out.
        return QueueConnectionError("no reply within the socket timeout", address)
    return QueueConnectionError(f"connection failed: {exc}", address)


class _BeanstalkLease(Lease):
    """A Lease bound to the connection its job was reserved on, the only one that can settle it."""

    __slots__ = ("__weakref__", "backend", "connection")

    def __init__(
        self, job_id: int, tube: str, connection: Connection, backend: BeanstalkBackend
    ) -> None:
        # Lease's fields set here, not by Lease.__init__: a second Python frame
        # on every job reserved. test_a_beanstalk_lease_sets_every_field_of_a_lease
        # fails when Lease gains a field this leaves unset.
        self.job_id = job_id
        self.tube = tube
        self.server = backend.address
        self._unclaimed = [True]
        self.connection = connection
        #: The backend that reserved it: a lease of another factory is refused.
        self.backend = backend

    @property
    def lost(self) -> bool:
        """Whether the connection that reserved the job is known broken, or ended by the server.

        Between commands beanstalkd sends nothing, so input waiting on an idle
        connection is its end (or garbage): the server has let the job go.
        Looked at only when the connection is idle (its lock free), without
        waiting, and without a system call when it was looked at within the
        last FRESH seconds (:meth:`Connection.fresh`): an end in that moment
        shows at the next look. A connection in use answers False.
        """
        conn = self.connection
        if conn.broken:
            return True
        if conn.fresh():
            return False  # found in step a moment ago: not looked at again so soon
        if not conn.lock.acquire(False):
            return False
        try:
            return conn.stray_input()
        finally:
            conn.lock.release()


class BeanstalkBackend(Backend):
    """Jobs on a beanstalkd server; thread-safe; connects on first use.

    :param host: the server's host name or address.
    :param port: the server's TCP port.
    :param connect_timeout: seconds to wait for a connection to open.
    :param timeout: seconds to wait for any reply, whole (a reply trickling in
        byte by byte is cut off too); a blocking reserve waits for its own
        timeout plus this much.
    :param max_idle: free idle connections kept open for reuse; connections in
        use, or holding reservations, are not counted (and always kept). Each
        thread first reuses the connection it used last.
    :param max_connections: connections the pool opens at most for commands
        (each handler worker has one more of its own). At the bound, a get
        shares a connection that holds reservations (whose settles may then
        wait behind it), and a command waits up to ``timeout`` for one to come
        free before it raises QueueConnectionError.
    :param retry_for: seconds during which ``put`` and ``put_many`` (and the
        other commands that hold no reservation, but not a reserve) are tried
        again, with jittered backoff, after a connection failure; 0 raises at
        once.
    :param uncertain_puts: what to do with a put that was sent when its
        connection failed, before the reply (the server may have stored it):
        ``"resend"`` it within ``retry_for`` (at-least-once: it may be stored
        twice), or ``"raise"`` :class:`~queue_beanstalk.PutOutcomeUnknown` at
        once (at-most-once, for whoever puts it again). With ``retry_for`` 0,
        both raise it.
    """

    options = frozenset(_OPTION_KINDS)

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        connect_timeout: Seconds = DEFAULT_CONNECT_TIMEOUT,
        timeout: Seconds = DEFAULT_TIMEOUT,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        retry_for: Seconds = 0,
        uncertain_puts: str = "resend",
    ) -> None:
        #: Whether a put sent but never answered is sent again (within retry_for).
        self.resends_uncertain_puts = resends_uncertain_puts(uncertain_puts)
        self._host = host
        self._port = port
        #: The server, as ``host:port`` (``[host]:port`` for an IPv6 address).
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._timeout = positive_seconds(timeout, "timeout")
        self._retry_for = to_seconds(retry_for, "retry_for")
        # The largest body a reply may announce: the server's max-job-size once
        # known, shared by every connection's wire.
        self._limit = wire.BodyLimit()
        self._pool = Pool(
            host,
            port,
            self.address,
            positive_seconds(connect_timeout, "connect_timeout"),
            self._timeout,
            check_count(max_idle, "max_idle", 0),
            check_count(max_connections, "max_connections", 1),
            self._limit,
            self._server_lost,
        )
        self._max_job_size: int | None = None

    @classmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> Backend:
        """Return a backend for ``beanstalk://host[:port]`` (port 11300 by default).

        Several servers, ``beanstalk://host1[:port],host2[:port],...``, make a
        :class:`~queue_beanstalk.ServersBackend` over them, each server taking
        the options given.

        :raises ValueError: for a path, a user or password (beanstalkd has no
            authentication), a port out of 1-65535, an empty or repeated server
            in a list, or a bad option value.
        """
        if url.path not in ("", "/"):
            raise ValueError(f"a beanstalk:// URL takes no path, not {url.geturl()!r}")
        if url.username is not None or url.password is not None:
            # The URL is not repeated: it holds what may be a password.
            raise ValueError(
                "a beanstalk:// URL takes no user or password: beanstalkd has no authentication"
            )
        # Only converted from the query's text here; __init__ checks every value.
        keywords: dict[str, Any] = {
            name: from_text(value, _OPTION_KINDS[name], name) for name, value in options.items()
        }
        netlocs = url.netloc.split(",")
        servers = [_server(url, netloc, netlocs) for netloc in netlocs]
        if len(servers) == 1:
            return cls(*servers[0], **keywords)
        from .servers import ServersBackend  # it is built of this module's backends

        return ServersBackend(servers, **keywords)

    def put(self, tube: str, body: bytes, *, priority: int, delay: int, ttr: int) -> JobRef:
        """Store a job; see :meth:`Backend.put`.

        A job the server stored but could not queue (``BURIED <id>``: out of
        memory) is stored: its id is returned and a warning logged.
        """
        size = len(body)
        limit = self._max_job_size or self.max_job_size()
        if size > limit:
            # Asked again before refusing: the server may have restarted with a higher -z.
            limit = self._ask_max_job_size()
            if size > limit:
                raise MessageTooBig(size, limit)
        command = protocol.put(body, priority, delay, ttr)
        unanswered = [0]  # tries sent whose reply never came
        try:
            job_id = self._borrow(
                self._put_on,
                tube,
                command,
                size,
                limit,
                unanswered,
                tube=tube,
                # Asked only when there is time to try again: not made otherwise.
                may_retry=(lambda: self.resends_uncertain_puts or not unanswered[0])
                if self._retry_for
                else None,
            )
        except MessageTooBig as exc:
            # The server's limit is lower than was known (a restart with a lower
            # -z); asked now that the put's connection is back in the pool.
            raise MessageTooBig(size, self._ask_max_job_size()) from exc
        except QueueConnectionError as exc:
            if unanswered[0] and not isinstance(exc, PutOutcomeUnknown):
                raise _uncertain(exc) from exc
            raise
        # Built as the tuple it is: JobRef(...) runs a Python __new__, 2% of a put.
        return tuple.__new__(JobRef, (job_id, self.address))

    def put_many(
        self, tube: str, bodies: Sequence[bytes], *, priority: int, delay: int, ttr: int
    ) -> list[JobRef]:
        """Store jobs, pipelined, and return where each is, in order; see :meth:`Backend.put_many`.

        After a connection failure, the jobs whose replies had not come are
        sent again (within ``retry_for``), so they may be stored twice.
        """
        done = _PutMany((priority, delay, ttr), self._max_job_size or self.max_job_size())
        try:
            self._borrow(
                self._put_many_on,
                tube,
                bodies,
                done,
                tube=tube,
                may_retry=lambda: self.resends_uncertain_puts or not done.unanswered,
            )
        except QueueConnectionError as exc:
            if not done.sent:
                raise  # nothing was sent: nothing can have been stored
            jobs = self._refs(done.ids)
            uncertain = _uncertain(exc)
            unknown: dict[int, QueueError] = {
                index: uncertain if index < done.unanswered else exc
                for index in range(len(jobs), len(bodies))
            }
            raise PutManyError(jobs + [None] * len(unknown), {**done.errors, **unknown}) from exc
        if done.errors:
            if any(isinstance(error, MessageTooBig) for error in done.errors.values()):
                limit = self._ask_max_job_size()  # lower than was known: the server's own
                for index, error in done.errors.items():
                    if isinstance(error, MessageTooBig):
                        done.errors[index] = MessageTooBig(error.size, limit)
            raise PutManyError(self._refs(done.ids), done.errors)
        address = self.address
        return [
            tuple.__new__(JobRef, (job_id, address))  # as in put()
            for job_id in done.ids
            if job_id is not None
        ]

    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve a job; see :meth:`Backend.reserve`."""
        # A copy unless a tuple: connections remember the very tuple they watch for.
        watch = tubes if isinstance(tubes, tuple) else tuple(tubes)
        # Never tried again (its caller owns the timeout), so not through _borrow.
        conn = self._pool.checkout(None, watch, True)
        try:
            return self._run(conn, self._reserve_on, conn, watch, timeout)
        finally:
            self._pool.checkin(conn)

    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer with a connection of its own; see :meth:`Backend.consumer`."""
        return _BeanstalkConsumer(self, tubes)

    def delete(self, lease: Lease) -> None:
        """Delete a reserved job; see :meth:`Backend.delete`."""
        self._settle(lease, protocol.delete(lease.job_id))

    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Release a reserved job; see :meth:`Backend.release`."""
        self._settle(lease, protocol.release(lease.job_id, priority, delay))

    def bury(self, lease: Lease, *, priority: int) -> None:
        """Bury a reserved job; see :meth:`Backend.bury`."""
        self._settle(lease, protocol.bury(lease.job_id, priority))

    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run; see :meth:`Backend.touch`."""
        self._settle(lease, protocol.touch(lease.job_id), ends=False)

    def stats_job(self, job: JobRef) -> JobStats:
        """Return a job's counters; see :meth:`Backend.stats_job`."""
        command = protocol.stats_job(self._job_id(job))
        try:
            return self._borrow(
                lambda conn: protocol.job_stats(wire.stats(conn.wire, command), self.address)
            )
        except NotFound as exc:  # its own words are about reservations, which this needs none of
            raise NotFound(f"server {self.address} holds no job {job.id}") from exc

    def kick_job(self, job: JobRef) -> None:
        """Make a buried or delayed job ready; see :meth:`Backend.kick_job`."""
        data, expected = protocol.kick_job(self._job_id(job))
        try:
            self._borrow(lambda conn: conn.wire.simple(data, expected))
        except NotFound as exc:
            raise NotFound(
                f"server {self.address} holds no job {job.id} that is buried or delayed"
            ) from exc

    # Operating the tubes

    def tubes(self) -> list[str]:
        """Return the server's tube names, sorted; see :meth:`Backend.tubes`."""
        return sorted(self._borrow(lambda conn: wire.listing(conn.wire, protocol.LIST_TUBES)))

    def stats_tube(self, tube: str) -> TubeStats:
        """Return a tube's counts; see :meth:`Backend.stats_tube`."""
        command = protocol.stats_tube(tube)
        try:
            return self._borrow(lambda conn: protocol.tube_stats(wire.stats(conn.wire, command)))
        except NotFound:  # the server has no such tube: nothing in it
            return TubeStats(tube, 0, 0, 0, 0, 0, 0, 0, 0, 0)

    def peek(self, tube: str, state: str) -> tuple[JobRef, bytes] | None:
        """Return the next job of ``tube`` in ``state``, not reserved; see :meth:`Backend.peek`."""
        data, _ = protocol.peek(state)

        def peek_on(conn: Connection) -> tuple[int, bytes] | None:
            if conn.used != tube:
                self._use(conn, tube)
            conn.wire.send(data)
            try:
                return conn.wire.found()
            except Refused as refused:
                if refused.not_found:
                    return None
                raise

        found = self._borrow(peek_on, tube=tube)
        return None if found is None else (JobRef(found[0], self.address), found[1])

    def kick(self, tube: str, bound: int) -> int:
        """Kick up to ``bound`` jobs of ``tube``; see :meth:`Backend.kick`."""
        data, expected = protocol.kick(bound)

        def kick_on(conn: Connection) -> int:
            if conn.used != tube:
                self._use(conn, tube)
            conn.wire.send(data)
            return conn.wire.reply_int(expected)

        return self._borrow(kick_on, tube=tube)

    def delete_job(self, job: JobRef) -> None:
        """Delete a job nobody holds; see :meth:`Backend.delete_job`.

        The job's state is asked, and the delete sent, on one connection held
        for both: beanstalkd deletes a job reserved by the connection that
        sends the delete, so none of ours may reserve it in between, and it
        refuses one reserved by any other.
        """
        job_id = self._job_id(job)
        command = protocol.stats_job(job_id)
        data, expected = protocol.delete(job_id)

        def delete_on(conn: Connection) -> bool:
            if protocol.field(wire.stats(conn.wire, command), "state") == "reserved":
                return False
            conn.wire.simple(data, expected)
            return True

        try:
            deleted = self._borrow(delete_on)
        except NotFound as exc:
            raise NotFound(f"server {self.address} holds no job {job.id}") from exc
        if not deleted:
            raise NotFound(
                f"job {job.id} on server {self.address} is reserved: whoever holds it settles it"
            )

    def pause_tube(self, tube: str, seconds: int) -> None:
        """Pause ``tube``; see :meth:`Backend.pause_tube`.

        :raises NotFound: when the server has no such tube (no job in it, and
            no connection using or watching it).
        """
        data, expected = protocol.pause_tube(tube, seconds)
        try:
            self._borrow(lambda conn: conn.wire.simple(data, expected))
        except NotFound as exc:
            raise NotFound(f"server {self.address} has no queue {tube!r}") from exc

    def _job_id(self, job: JobRef) -> int:
        """Return the id of ``job``, a job on this server; NotFound for another's."""
        if job.server != self.address:
            raise NotFound(f"job {job.id} is on server {job.server}, not {self.address}")
        return job.id

    def _refs(self, ids: list[int | None]) -> list[JobRef | None]:
        return [None if job_id is None else JobRef(job_id, self.address) for job_id in ids]

    def max_job_size(self) -> int:
        """Return the server's ``max-job-size``, asked again after any connection was lost.

        A lost connection may mean a restarted server with another ``-z``.
        """
        limit = self._max_job_size
        if limit is None:
            limit = self._borrow(
                lambda conn: protocol.max_job_size(wire.stats(conn.wire, protocol.STATS))
            )
            self._max_job_size = self._limit.size = limit
        return limit

    def _ask_max_job_size(self) -> int:
        """Return the server's ``max-job-size``, asked again now."""
        self._max_job_size = None
        return self.max_job_size()

    def close(self) -> None:
        """Close every connection, waking any thread blocked in :meth:`reserve`."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"queue_beanstalk.BeanstalkBackend(host={self._host!r}, port={self._port})"

    # Running commands

    def _run(self, conn: Connection, command: Callable[..., T], *args: object) -> T:
        """Run ``command(*args)`` on ``conn``, held, within the one boundary of every command.

        What the wire or the socket raises is translated by :meth:`_failed`,
        which drops a connection that failed. (The
        pool also closes connections it finds closed by the server before
        lending them, and a consumer closes its own when interrupted mid-write;
        neither is a command failing.)
        """
        try:
            return command(*args)
        except BaseException as exc:
            self._failed(conn, exc)  # raises the translation, if exc has one
            raise

    def _borrow(
        self,
        command: Callable[..., T],
        *args: object,
        tube: str | None = None,
        may_retry: Callable[[], bool] | None = None,
    ) -> T:
        """Run ``command(conn, *args)`` on a pooled connection ``conn``, as :meth:`_run` does.

        The pool prefers one using ``tube``. Connection failures are retried
        for ``retry_for`` seconds, unless ``may_retry()`` says no (a reserve,
        whose caller owns its timeout, does not come here).
        """
        backoff: Backoff | None = None  # made at the first failure: most calls never need it
        while True:
            try:
                conn = self._pool.checkout(tube)
                try:
                    return command(conn, *args)
                except BaseException as exc:  # _run in line: a frame less, 3.6% of a put
                    self._failed(conn, exc)
                    raise
                finally:
                    self._pool.checkin(conn)
            except QueueConnectionError:
                if may_retry is not None and not may_retry():
                    raise
                if backoff is None:
                    backoff = Backoff(self._retry_for)
                if not backoff.pause():
                    raise

    def _failed(self, conn: Connection, exc: BaseException) -> None:
        """Deal with ``exc``, raised by a command on ``conn``: the error boundary.

        Called by :meth:`_run`, and in line by :meth:`_borrow`.

        Raises the QueueError that ``exc`` translates to, from ``exc``, having
        dropped ``conn`` if it can no longer be trusted; returns, for the
        caller's bare ``raise``, when ``exc`` goes on as it is. (``_put_batch``
        also translates the refusals it records and goes on from.)
        """
        if isinstance(exc, QueueError):
            return  # already ours, e.g. Timeout (a TimeoutError, hence an OSError)
        if isinstance(exc, LOWER_ERRORS):
            error = translate(exc, self.address)
            if isinstance(error, QueueConnectionError):  # the connection cannot be trusted
                self._drop(conn, error)
            raise error from exc
        # Interrupted mid-command (KeyboardInterrupt, say), or a bug: a reply
        # may be left unread, and the next command would read it as its own.
        self._drop(conn, exc)

    def _settle(self, lease: Lease, command: Command, *, ends: bool = True) -> None:
        """Send ``command`` for ``lease`` on the connection that reserved its job."""
        if not isinstance(lease, _BeanstalkLease) or lease.backend is not self:
            raise NotFound(f"job {lease.job_id} was not reserved through this factory")
        conn = lease.connection
        # Two arguments rather than *command: a starred call is CPython's slow kind.
        data, expected = command
        # A touch may find the connection busy with the next reserve once the job
        # was settled there; it gives up then rather than wait out that reserve.
        # (A job claimed but not yet settled there, as a handled message whose
        # delete waits for the next reserve, is still held: its touch waits.)
        if not conn.lock.acquire(False):  # without blocking (a keyword makes the call slower)
            while not conn.lock.acquire(timeout=0.05):
                if not ends and not conn.holds(lease):
                    raise NotFound(f"job {lease.job_id} was settled")
                if conn.broken:
                    raise _lost(lease)
        try:
            if conn.broken:
                raise _lost(lease)
            try:
                self._run(conn, conn.wire.simple, data, expected)
            except QueueConnectionError as exc:
                # _run dropped the connection, and the reservation with it.
                raise _lost(lease, exc) from exc
            finally:
                if ends:
                    conn.let_go(lease)
        finally:
            conn.lock.release()
        if ends:
            self._pool.trim()  # the settle may have freed a connection beyond max_idle

    def _put_on(
        self,
        conn: Connection,
        tube: str,
        command: Command,
        size: int,
        limit: int,
        unanswered: list[int],
    ) -> int:
        if conn.used != tube:
            self._use(conn, tube)
        data, expected = command
        unanswered[0] += 1
        conn.wire.send(data)
        try:
            job_id = conn.wire.reply_int(expected)
            unanswered[0] -= 1
            return job_id
        except Refused as refused:
            unanswered[0] -= 1
            outcome = self._put_refused(refused, size, limit)
            if isinstance(outcome, int):
                return outcome
            if isinstance(outcome, QueueConnectionError):
                raise  # the refusal itself, for _failed to drop the connection
            raise outcome from refused

    def _put_refused(self, refused: Refused, size: int, limit: int) -> int | QueueError:
        """Return what a put's refusal means: the id of a job stored all the same, or the error.

        ``BURIED <id>``: the server stored the job but had no memory to queue
        it; it is kept (buried), so putting it again would store it twice.
        ``JOB_TOO_BIG``: the server's limit is below ``limit``, the one known
        (the caller asks the server's own once its connection is back).
        """
        job_id = refused.stored_id
        if job_id is not None:
            logger.warning(
                "server %s stored job %d but buried it: it is out of memory (kick the job "
                "once it has memory again)",
                self.address,
                job_id,
            )
            return job_id
        if refused.too_big:
            return MessageTooBig(size, limit)
        return protocol.refusal_error(refused, self.address)

    def _use(self, conn: Connection, tube: str) -> None:
        """Make ``conn`` put into ``tube``; callers check ``conn.used`` first."""
        data, expected = protocol.use(tube)
        conn.wire.send(data)
        conn.wire.reply(expected, 1)
        conn.used = tube

    def _put_many_on(
        self, conn: Connection, tube: str, bodies: Sequence[bytes], done: _PutMany
    ) -> None:
        """Put ``bodies`` from the first without a result in ``done.ids`` on, in batches."""
        if conn.used != tube:
            self._use(conn, tube)
        ids = done.ids
        while len(ids) < len(bodies):
            start = len(ids)
            end, batch = _batch(bodies, start, *done.options)
            done.sent = True
            self._put_batch(conn, batch, [len(body) for body in bodies[start:end]], done)

    def _put_batch(self, conn: Connection, batch: bytes, sizes: list[int], done: _PutMany) -> None:
        """Send a batch of puts and read their replies; record a refusal, go on."""
        ids = done.ids
        first = len(ids)
        done.unanswered = end = first + len(sizes)
        wire = conn.wire
        wire.send(batch)
        while len(ids) < end:
            run = wire.inserted_run(end - len(ids))  # the usual case: all that came, stored
            if run:
                ids += run
                continue
            try:
                ids.append(wire.reply_int(protocol.INSERTED))
            except Refused as refused:
                outcome = self._put_refused(refused, sizes[len(ids) - first], done.limit)
                if isinstance(outcome, QueueConnectionError):
                    # This one was refused, so not stored; the stream cannot
                    # be trusted after it: the rest are unknown.
                    done.errors[len(ids)] = outcome
                    ids.append(None)
                    raise
                if isinstance(outcome, int):
                    ids.append(outcome)
                else:
                    done.errors[len(ids)] = outcome
                    ids.append(None)
        done.unanswered = 0

    def _reserve_on(self, conn: Connection, tubes: tuple[str, ...], timeout: float) -> Reserved:
        """Reserve from ``tubes`` on ``conn``, held."""
        if conn.watched_for is not tubes:
            self._watch(conn, tubes)
        seconds = math.ceil(timeout)
        conn.wire.send(protocol.reserve(seconds)[0])
        return self._await_job(conn, tubes, time.monotonic() + timeout, seconds)

    def _await_job(
        self, conn: Connection, tubes: tuple[str, ...], deadline: float, seconds: int
    ) -> Reserved:
        """Read the reply to a reserve-with-timeout of ``seconds`` just sent on ``conn``.

        Reserves again until a job comes or ``deadline`` (``time.monotonic()``)
        has passed: beanstalkd counts whole seconds, and answers DEADLINE_SOON
        at once, with nothing ready, while a job this connection holds is in
        the last second of its time-to-run (a message held, or dropped
        unsettled). That is no failure: the job is settled or runs out within
        the second, so the reserve waits a little, with the connection's lock
        let go so the job can be settled on it, and goes on. Call with
        ``conn.lock`` held.

        :raises Timeout: when no job came by ``deadline``.
        """
        while True:
            try:
                job_id, body = conn.wire.reserved(time.monotonic() + seconds + self._timeout)
            except Refused as refused:
                if not refused.no_job_yet:
                    raise
                deadline_soon = refused.deadline_soon
            else:
                return self._lease_reserved(conn, tubes, job_id, body)
            seconds = self._reserve_again(conn, tubes, deadline, deadline_soon)

    def _reserve_again(
        self, conn: Connection, tubes: Sequence[str], deadline: float, deadline_soon: bool
    ) -> int:
        """Send another reserve on ``conn``, held, after one that got no job; return its seconds.

        After DEADLINE_SOON it first waits a little, with the connection's lock
        let go, so that the job about to run out can be settled (or touched)
        on this very connection by whoever holds it.

        :raises Timeout: when ``deadline`` (``time.monotonic()``) has passed.
        """
        now = time.monotonic()
        if deadline_soon and now < deadline:
            conn.lock.release()
            try:
                conn.wire.readable(min(DEADLINE_SOON_PAUSE, deadline - now))
            finally:
                conn.lock.acquire()
            now = time.monotonic()
        if now >= deadline:
            raise _no_job(tubes)
        seconds = math.ceil(deadline - now)
        conn.wire.send(protocol.reserve(seconds)[0])
        return seconds

    def _lease_reserved(
        self, conn: Connection, tubes: Sequence[str], job_id: int, body: bytes
    ) -> Reserved:
        if len(tubes) == 1:
            tube = tubes[0]
        else:  # the RESERVED reply does not say which tube the job came from
            tube = protocol.field(wire.stats(conn.wire, protocol.stats_job(job_id)), "tube")
        return self._lease(conn, job_id, body, tube)

    def _lease(self, conn: Connection, job_id: int, body: bytes, tube: str) -> Reserved:
        """Record a job of ``tube`` reserved through ``conn``, held, and return it, leased."""
        lease = _BeanstalkLease(job_id, tube, conn, self)
        conn.hold(lease)
        return tuple.__new__(Reserved, (job_id, body, tube, lease, None))  # as in _lease_batch

    def _lease_batch(
        self,
        conn: Connection,
        tubes: Sequence[str],
        jobs: Sequence[tuple[int, bytes]],
        prepare: Prepare | None,
    ) -> list[Reserved]:
        """Lease jobs reserved on ``conn``, held, their replies read; each prepared, if asked."""
        # The same lease in two comprehensions: one tube, the usual case, takes
        # no list of tubes and no zip, 5% of a batch of one's instructions
        # (callgrind, socket faked: 74.8k a message, against 78.8k for one
        # comprehension over zip(jobs, itertools.repeat(tube))). Each Reserved
        # is built as the tuple it is: Reserved(...) runs a Python __new__.
        if len(tubes) == 1:
            tube = tubes[0]
            leased = [
                tuple.__new__(
                    Reserved,
                    (
                        job_id,
                        body,
                        tube,
                        _BeanstalkLease(job_id, tube, conn, self),
                        None if prepare is None else prepare(body),
                    ),
                )
                for job_id, body in jobs
            ]
        else:
            leased = [
                tuple.__new__(
                    Reserved,
                    (
                        job_id,
                        body,
                        tube,
                        _BeanstalkLease(job_id, tube, conn, self),
                        None if prepare is None else prepare(body),
                    ),
                )
                for (job_id, body), tube in zip(jobs, self._tubes_of(conn, jobs), strict=True)
            ]
        conn.hold_each([reserved.lease for reserved in leased])
        return leased

    def _tubes_of(self, conn: Connection, jobs: Sequence[tuple[int, bytes]]) -> list[str]:
        """Return the tube of each job reserved on ``conn``, held, asked in one write.

        The RESERVED replies do not say which tube a job came from.
        """
        each = wire.stats_of_each(conn.wire, [job_id for job_id, _ in jobs])
        tubes = []
        for (job_id, _), stats in zip(jobs, each, strict=True):
            if stats is None:  # reserved here, yet not found: the server is not to be trusted
                raise ProtocolError(f"stats-job of reserved job {job_id} refused with NOT_FOUND")
            tubes.append(protocol.field(stats, "tube"))
        return tubes

    def _watch(self, conn: Connection, tubes: tuple[str, ...]) -> None:
        """Make ``conn`` reserve from ``tubes``; callers check ``conn.watched_for`` first.

        ``conn.watched`` follows each command that succeeded, so a refusal part
        way leaves it true to what the server knows of the connection.
        """
        to_watch, to_ignore = protocol.watch_plan(conn.watched, tubes)
        current = set(conn.watched)
        try:
            for tube in to_watch:
                data, expected = protocol.watch(tube)
                conn.wire.send(data)
                conn.wire.reply_int(expected)
                current.add(tube)
            for tube in to_ignore:
                data, expected = protocol.ignore(tube)
                conn.wire.send(data)
                conn.wire.reply_int(expected)
                current.discard(tube)
        finally:
            conn.watched = frozenset(current)
        conn.watched_for = tubes

    def _drop(self, conn: Connection, error: BaseException) -> None:
        """Close a connection that failed; its reservations go back to the server.

        Quiet for a connection this process shut itself (a stop, a close):
        that loss was asked for.
        """
        held = conn.holding()
        if held and not conn.broken:
            logger.warning(
                "connection to %s lost with %d reserved job(s); the server hands them out "
                "again: %r",
                self.address,
                held,
                error,
            )
        self._server_lost()
        self._pool.forget(conn)

    def _server_lost(self) -> None:
        """Forget what the server said of itself: it may have restarted with another ``-z``."""
        self._max_job_size = None
        self._limit.size = wire.MAX_BODY


class _BeanstalkConsumer(Consumer):
    """A connection of one worker's own; interrupt() shuts its socket mid-reserve or mid-connect."""

    def __init__(self, backend: BeanstalkBackend, tubes: Sequence[str]) -> None:
        self.backend = self._backend = backend
        self._tubes = tuple(tubes)
        self._conn: Connection | None = None
        # Guards _connecting, so interrupt() shuts a socket only while it connects.
        self._state = threading.Lock()
        # Only ever becomes True, set by interrupt() before it looks for the token.
        self._interrupted = False
        # While a reserve is under way, one token, taken by whichever comes first:
        # the worker once the reserve is over, or interrupt(), which then shuts
        # the socket. list.pop() is atomic (one call into C), so exactly one of
        # them takes it, without a lock on every reserve; interrupt() so never
        # shuts a socket the worker holds jobs on. A reserve whose token
        # interrupt() took returns nothing: what it took goes back with the socket.
        self._reserving: list[bool] = []
        self._connecting: socket.socket | None = None

    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve a job; see :meth:`Consumer.reserve`."""
        conn = self._connection()
        if conn is None or not self._start_reserving():
            return None
        backend = self._backend
        reserved: Reserved | None = None
        try:
            with conn.lock:
                reserved = backend._run(conn, backend._reserve_on, conn, self._tubes, timeout)
        except Timeout:
            pass
        except QueueConnectionError:
            if not self._interrupted:
                raise
        finally:
            whole = self._stop_reserving()
        return reserved if whole else None

    def reserve_batch(
        self,
        deletes: Sequence[Lease],
        count: int,
        timeout: float,
        prepare: Prepare | None = None,
    ) -> tuple[list[Lease], list[Reserved]]:
        """Delete and reserve in one write; see :meth:`Consumer.reserve_batch`."""
        if count < 1:  # not check_count(): this runs for every batch
            raise ValueError(f"count must be at least 1, not {count}")
        conn = self._conn if deletes else self._connection()
        if conn is None or conn.broken:
            # The deletes' connection is gone, and their jobs with it: the
            # base class finds each lost, then reserves on a new connection.
            if not deletes:
                return [], []
            return super().reserve_batch(deletes, count, timeout, prepare)
        for lease in deletes:
            if not isinstance(lease, _BeanstalkLease) or lease.connection is not conn:
                return super().reserve_batch(deletes, count, timeout, prepare)
        backend = self._backend
        seconds = math.ceil(timeout)
        with conn.lock:
            lost = backend._run(conn, self._send_batch, conn, deletes, seconds, count)
            # The deletes are settled; only now may interrupt() cut the reserves short.
            if not self._start_reserving():
                backend._pool.forget(conn)  # the only way to end the reserves just sent
                return lost, []
            batch: list[Reserved] = []
            try:
                batch = backend._run(conn, self._read_batch, conn, count, timeout, seconds, prepare)
            except Timeout:
                pass
            except QueueConnectionError:
                if not self._interrupted:
                    raise
            finally:
                whole = self._stop_reserving()
            return lost, batch if whole else []

    def _send_batch(
        self, conn: Connection, deletes: Sequence[Lease], seconds: int, count: int
    ) -> list[Lease]:
        """Send the deletes and the reserves in one write; read the deletes' replies.

        :returns: the leases whose delete found no job.
        """
        if conn.watched_for is not self._tubes:
            self._backend._watch(conn, self._tubes)
        conn.wire.send(
            protocol.delete_then_reserve_batch([lease.job_id for lease in deletes], seconds, count)
        )
        sent = len(deletes)
        if not sent:
            return []
        try:
            found = conn.wire.run_of(b"DELETED", sent)  # usually all of them, in one call
            if found == sent:
                return []
            deleted = wire.found_each(conn.wire, b"DELETED", sent - found, "delete")
        finally:
            conn.let_go_each(deletes)
        return [lease for lease, done in zip(deletes[found:], deleted, strict=True) if not done]

    def _read_batch(
        self, conn: Connection, count: int, timeout: float, seconds: int, prepare: Prepare | None
    ) -> list[Reserved]:
        """Read the replies to the ``count`` reserves just sent on ``conn``, held.

        The first reserve waits up to ``seconds`` (``timeout`` rounded up), from
        now: the server has just answered the deletes sent before it. The others
        took what was ready then. From one tube, each run of replies is leased
        (and prepared) as it comes, while the server answers the next reserves;
        from several, every reply is read before any job is leased, so that the
        lookup of the jobs' tubes finds the stream in step.

        :raises Timeout: when no job came within ``timeout``.
        """
        wire = conn.wire
        backend = self._backend
        allowance = backend._timeout
        started = time.monotonic()
        # When to give up on the first reply; on each of the others, once it is next.
        give_up = started + seconds + allowance
        one_tube = len(self._tubes) == 1
        leased: list[Reserved] = []
        jobs: list[tuple[int, bytes]] = []  # from several tubes, leased at the end
        deadline_soon = False
        unread = count  # replies not yet read
        while True:
            try:
                run = wire.reserved_run(unread, give_up)
            except Refused as refused:
                if not refused.no_job_yet:
                    # The rest of the replies are unread: the connection must go.
                    raise ProtocolError(
                        f"reserve refused with {refused.status} while replies were pending"
                    ) from refused
                deadline_soon = deadline_soon or refused.deadline_soon
                unread -= 1
            else:
                unread -= len(run)
                if one_tube:
                    leased += backend._lease_batch(conn, self._tubes, run, prepare)
                else:
                    jobs += run
            if not unread:
                break
            give_up = time.monotonic() + allowance
        if jobs:
            leased = backend._lease_batch(conn, self._tubes, jobs, prepare)
        if leased:
            return leased
        if not deadline_soon:
            raise _no_job(self._tubes)
        # Cut short by a job this connection holds, about to run out: wait as a
        # single reserve would, for one job.
        deadline = started + timeout
        seconds = backend._reserve_again(conn, self._tubes, deadline, deadline_soon=True)
        return [prepared(backend._await_job(conn, self._tubes, deadline, seconds), prepare)]

    def give_back(self, leases: Sequence[Lease]) -> None:
        """Release in two writes, whatever their number; see :meth:`Consumer.give_back`."""
        conn = self._conn
        if conn is None or conn.broken:
            return  # the connection went, and the jobs with it
        for lease in leases:
            if not isinstance(lease, _BeanstalkLease) or lease.connection is not conn:
                super().give_back(leases)
                return
        try:
            with conn.lock:
                self._backend._run(conn, self._give_back_on, conn, leases)
        except QueueError as exc:
            logger.debug("could not give %d job(s) back: %s", len(leases), exc)

    def _give_back_on(self, conn: Connection, leases: Sequence[Lease]) -> None:
        """Ask every job's priority in one write, then release them all; ``conn`` held."""
        try:
            each = wire.stats_of_each(conn.wire, [lease.job_id for lease in leases])
            releases = [
                protocol.release(lease.job_id, protocol.job_priority(stats), 0)[0]
                for lease, stats in zip(leases, each, strict=True)
                if stats is not None  # gone already: nothing to give back
            ]
            conn.wire.send(b"".join(releases))
            wire.found_each(conn.wire, b"RELEASED", len(releases), "release")
        finally:
            conn.let_go_each(leases)

    def interrupt(self) -> None:
        """End a blocked reserve or connect at once; see :meth:`Consumer.interrupt`."""
        with self._state:
            self._interrupted = True
            if self._connecting is not None:
                with contextlib.suppress(OSError):
                    self._connecting.shutdown(socket.SHUT_RDWR)
        try:
            self._reserving.pop()
        except IndexError:
            return  # no reserve under way, or it is over
        conn = self._conn  # the reserve's: none other opens once interrupted; close() sets None
        if conn is not None:
            # The connection holds no job while it reserves: closing it loses
            # nothing, and a job reserved in this very instant goes back.
            # Marked broken first, so what fails on it now is not logged as a loss.
            conn.broken = True
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the consumer's connection; see :meth:`Consumer.close`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._backend._pool.forget(conn)

    def _connection(self) -> Connection | None:
        """Return the consumer's connection, opening it if need be; None once interrupted."""
        conn = self._conn
        if conn is not None and not conn.broken:
            return conn
        try:
            conn = self._conn = self._backend._pool.connect(self._watch_connect)
        except QueueConnectionError:
            if self._interrupted:
                return None
            raise
        finally:
            with self._state:
                self._connecting = None
        return conn

    def _watch_connect(self, sock: socket.socket) -> bool:
        """Remember the socket being connected, for interrupt(); False once interrupted."""
        with self._state:
            if self._interrupted:
                return False
            self._connecting = sock
            return True

    def _start_reserving(self) -> bool:
        """Put the reserving token out; False (and none out) once interrupted."""
        self._reserving.append(True)
        # Read after the token is out: interrupt() sets it before it looks for one.
        if self._interrupted:
            self._stop_reserving()
            return False
        return True

    def _stop_reserving(self) -> bool:
        """Take the reserving token back; False when interrupt() took it (the socket goes)."""
        try:
            return self._reserving.pop()
        except IndexError:
            return False


class _PutMany:
    """What a put_many has done so far: ids (None where refused), errors by position."""

    __slots__ = ("errors", "ids", "limit", "options", "sent", "unanswered")

    def __init__(self, options: tuple[int, int, int], limit: int) -> None:
        #: priority, delay and ttr of every put.
        self.options = options
        #: The max-job-size the bodies were checked against.
        self.limit = limit
        self.ids: list[int | None] = []
        self.errors: dict[int, QueueError] = {}
        #: Whether any put went out (and so may have been stored).
        self.sent = False
        #: While a batch is out: the end of it (its puts from len(ids) on are
        #: unanswered); 0 otherwise.
        self.unanswered = 0


class Backoff:
    """Jittered, doubling pauses between tries after connection failures, within a budget."""

    __slots__ = ("_failures", "_give_up")

    def __init__(self, budget: float) -> None:
        self._failures = 0
        self._give_up = time.monotonic() + budget

    def pause(self) -> bool:
        """Sleep before the next try and return True; False once the budget is spent."""
        self._failures += 1
        remaining = self._give_up - time.monotonic()
        if remaining <= 0:
            return False
        # At most a second; the last try is at the end of the budget.
        pause = random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2**self._failures)  # noqa: S311
        time.sleep(min(pause, remaining))
        return True


def _batch(
    bodies: Sequence[bytes], start: int, priority: int, delay: int, ttr: int
) -> tuple[int, bytes]:
    """Return the end of the batch starting at ``start`` and its puts, joined."""
    end, size = start, 0
    last = min(len(bodies), start + BATCH_COMMANDS)
    while end < last and size < BATCH_BYTES:
        size += len(bodies[end])
        end += 1
    return end, protocol.puts(bodies[start:end], priority, delay, ttr)


def resends_uncertain_puts(uncertain_puts: str) -> bool:
    """Return whether the option ``uncertain_puts`` says to resend (else to raise).

    :raises ValueError: for a value that is neither.
    """
    if uncertain_puts not in UNCERTAIN_PUTS:
        raise ValueError(
            f"uncertain_puts must be one of {', '.join(UNCERTAIN_PUTS)}, not {uncertain_puts!r}"
        )
    return uncertain_puts == "resend"


def _server(url: SplitResult, netloc: str, every: list[str]) -> tuple[str, int]:
    """Return the host and port of ``netloc``, one ``host[:port]`` of ``url``'s list ``every``."""
    if not netloc and len(every) > 1:
        raise ValueError(f"an empty server in the list of {url.geturl()!r}")
    one = urlsplit(f"//{netloc}")
    try:
        port = one.port
    except ValueError as exc:
        raise ValueError(f"bad port in {url.geturl()!r}: {exc}") from exc
    if port == 0:
        raise ValueError(f"bad port in {url.geturl()!r}: port must be 1-65535, not 0")
    return one.hostname or DEFAULT_HOST, DEFAULT_PORT if port is None else port


def _uncertain(exc: QueueConnectionError) -> PutOutcomeUnknown:
    """Return the error of a put sent on a connection that failed before its reply."""
    return PutOutcomeUnknown(
        f"the put was sent but its reply never came, so it may have been stored: {exc.reason}",
        exc.address,
    )


def _no_job(tubes: Sequence[str]) -> Timeout:
    return Timeout(f"no message on {', '.join(tubes)} by the timeout")


def _lost(lease: Lease, cause: QueueConnectionError | None = None) -> NotFound:
    """Return the NotFound of a settle whose reservation went with its connection."""
    detail = "" if cause is None else f" ({cause})"
    return NotFound(
        f"job {lease.job_id}'s reservation was lost with its connection{detail}; "
        "the server hands the job out again"
    )

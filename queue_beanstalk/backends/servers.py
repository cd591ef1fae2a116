"""Several beanstalkd servers behind one backend (``beanstalk://host1,host2,...``).

beanstalkd has no clustering: each server is a process of its own, and the
client spreads jobs over them. Here each server is a
:class:`~queue_beanstalk.BeanstalkBackend` (its own pool and connections), and
this backend decides which one a command goes to:

Puts
    Round-robin over the servers that are up, so that load spreads evenly
    whatever the message; a put that a server cannot take goes on to the
    next at once. A ``put_many`` batch goes to one server, so its messages
    keep their order (beanstalkd orders jobs only within one server).
Gets and handlers
    A reserve never waits on two servers at once (it would take a job from
    each, and giving the extras back would count a try against each):
    every server is polled (``reserve-with-timeout 0``), then one of them,
    in turn, is waited on for at most :data:`WAIT_SLICE` seconds, so a job
    ready on any server is taken within about that long.
Jobs
    A job's id is its server's own, so jobs are named by a
    :class:`~queue_beanstalk.backend.JobRef` (id and server); a reserved job
    is settled by the server, and the connection, that reserved it.
Health
    A server that fails is skipped for puts and reserves for a while that
    doubles with each failure (0.5 s to 30 s, jittered), then tried again;
    its loss and its return are each logged once. A server answering
    ``DRAINING`` gets no puts for :data:`DRAIN_RECHECK` seconds at a time,
    but is still consumed, so workers empty it.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, TypeVar
from urllib.parse import SplitResult

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
from ..checks import Seconds, to_seconds
from ..errors import (
    CommandRefused,
    NotFound,
    PutManyError,
    PutOutcomeUnknown,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
)
from .beanstalk import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE,
    DEFAULT_TIMEOUT,
    Backoff,
    BeanstalkBackend,
    resends_uncertain_puts,
)

__all__ = ["DRAIN_RECHECK", "WAIT_SLICE", "ServersBackend"]

logger = logging.getLogger("queue_beanstalk")

T = TypeVar("T")

#: Seconds a reserve waits on one server before it polls the others again.
WAIT_SLICE = 1.0
#: Seconds a server that answered DRAINING gets no puts before it is tried again.
DRAIN_RECHECK = 5.0
# Seconds a failed server is skipped: doubling from the first to the last.
FIRST_PAUSE = 0.5
LAST_PAUSE = 30.0
# A handler worker takes at most this many batches in a row from one server
# (deleting the last batch's jobs and reserving the next in one write) before
# it polls the others: a busy server does not starve the rest.
STREAK = 16
# What a server that did not answer is taken to have of a tube: nothing.
_NONE = TubeStats("", 0, 0, 0, 0, 0, 0, 0, 0, 0)
# Refusals after which a put may go to another server at once: the server
# stored nothing and another may well take it.
_ELSEWHERE = frozenset({"DRAINING", "OUT_OF_MEMORY", "INTERNAL_ERROR"})


class _Server:
    """One of the servers: its backend and how it has been doing (guarded by the backend's lock)."""

    __slots__ = ("address", "backend", "draining_until", "failures", "skip_until")

    def __init__(self, backend: BeanstalkBackend) -> None:
        self.backend = backend
        self.address = backend.address
        #: Consecutive failures; 0 while the server is up.
        self.failures = 0
        #: ``time.monotonic()`` before which the server is not tried (it failed).
        self.skip_until = 0.0
        #: ``time.monotonic()`` before which the server gets no puts (it drains).
        self.draining_until = 0.0

    def up(self, now: float) -> bool:
        return now >= self.skip_until


class ServersBackend(Backend):
    """Jobs spread over several beanstalkd servers; thread-safe; connects on first use.

    Built by ``factory("beanstalk://host1:11300,host2:11300")``. Each server
    gets a :class:`~queue_beanstalk.BeanstalkBackend` of its own with the
    options given (so ``max_connections`` and ``max_idle`` count per server);
    ``retry_for`` and ``uncertain_puts`` apply to this backend as a whole.

    :param servers: ``(host, port)`` of each server, at least two, no repeats.
    :param retry_for: seconds during which a put that every server failed is
        tried again over all of them, with jittered backoff; 0 raises at once.
    :param uncertain_puts: a put sent to a server whose connection then
        failed before the reply may have been stored there: ``"resend"`` it to
        the next server at once (at-least-once: it may be stored twice, which
        the handler's callers must already bear), or ``"raise"``
        :class:`~queue_beanstalk.PutOutcomeUnknown` (at-most-once).
    :param connect_timeout: as for :class:`~queue_beanstalk.BeanstalkBackend`, per server.
    :param timeout: as for :class:`~queue_beanstalk.BeanstalkBackend`, per server.
    :param max_idle: as for :class:`~queue_beanstalk.BeanstalkBackend`, per server.
    :param max_connections: as for :class:`~queue_beanstalk.BeanstalkBackend`, per server.
    :raises ValueError: for fewer than two servers, or one listed twice.
    """

    options: ClassVar[frozenset[str]] = BeanstalkBackend.options

    def __init__(
        self,
        servers: Sequence[tuple[str, int]],
        *,
        connect_timeout: Seconds = DEFAULT_CONNECT_TIMEOUT,
        timeout: Seconds = DEFAULT_TIMEOUT,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        retry_for: Seconds = 0,
        uncertain_puts: str = "resend",
    ) -> None:
        if len(servers) < 2:
            raise ValueError(f"ServersBackend needs at least two servers, not {len(servers)}")
        self._resend = resends_uncertain_puts(uncertain_puts)
        seen: set[tuple[str, int]] = set()
        for host, port in servers:
            if (host.lower(), port) in seen:
                raise ValueError(f"server {host}:{port} is listed twice")
            seen.add((host.lower(), port))
        self._retry_for = to_seconds(retry_for, "retry_for")
        self._servers = [
            _Server(
                BeanstalkBackend(
                    host,
                    port,
                    connect_timeout=connect_timeout,
                    timeout=timeout,
                    max_idle=max_idle,
                    max_connections=max_connections,
                )
            )
            for host, port in servers
        ]
        self._by_address = {server.address: server for server in self._servers}
        # Guards every _Server's health fields; a put reads them without it
        # (a stale read only tries a server a moment early or late).
        self._lock = threading.Lock()
        # Whose turn it is to take the next put, and to be waited on by a reserve.
        # Each starts at a random server: many short-lived producers (a command
        # run per put) do not all put on the first.
        self._put_turn = itertools.count(random.randrange(len(self._servers)))  # noqa: S311
        self._reserve_turn = itertools.count(random.randrange(len(self._servers)))  # noqa: S311

    @property
    def addresses(self) -> list[str]:
        """The servers, as ``host:port``, in the order given."""
        return [server.address for server in self._servers]

    @classmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> Backend:
        """Return a backend for a ``beanstalk://`` URL; see :meth:`BeanstalkBackend.from_url`."""
        return BeanstalkBackend.from_url(url, options)

    # Puts

    def put(self, tube: str, body: bytes, *, priority: int, delay: int, ttr: int) -> JobRef:
        """Store a job on the next server that takes it; see :meth:`Backend.put`.

        :raises QueueConnectionError: when every server failed (within ``retry_for``).
        :raises PutOutcomeUnknown: with ``uncertain_puts="raise"``, when the put
            went out and its server failed before answering.
        """

        def put_on(server: _Server) -> JobRef:
            return server.backend.put(tube, body, priority=priority, delay=delay, ttr=ttr)

        return self._put_somewhere(put_on)

    def put_many(
        self, tube: str, bodies: Sequence[bytes], *, priority: int, delay: int, ttr: int
    ) -> list[JobRef]:
        """Store jobs on one server, pipelined; see :meth:`Backend.put_many`.

        The batch goes to the next server in turn; what that server could not
        take, where another may (see :meth:`put`), goes on to the next, and
        so on, within ``retry_for`` as for :meth:`put`.
        """
        jobs: list[JobRef | None] = [None] * len(bodies)
        errors: dict[int, QueueError] = {}
        pending = list(range(len(bodies)))
        backoff: Backoff | None = None
        while pending:
            for server in self._put_order():
                batch = [bodies[index] for index in pending]
                stored, failed = self._put_batch(server, tube, batch, (priority, delay, ttr))
                retry: list[int] = []
                elsewhere: dict[int, bool] = {}  # by id(error): a batch's one failure, judged once
                for index, job, error in zip(pending, stored, failed, strict=True):
                    if job is not None:
                        jobs[index] = job
                        errors.pop(index, None)
                        continue
                    assert error is not None  # noqa: S101 - a job not stored has its error
                    errors[index] = error
                    if id(error) not in elsewhere:
                        elsewhere[id(error)] = self._elsewhere(server, error)
                    if elsewhere[id(error)]:
                        retry.append(index)
                pending = retry
                if not pending:
                    break
            if pending:
                if backoff is None:
                    backoff = Backoff(self._retry_for)
                if not backoff.pause():
                    break
        if errors:
            raise PutManyError(jobs, errors)
        return [job for job in jobs if job is not None]

    def _put_batch(
        self, server: _Server, tube: str, batch: list[bytes], options: tuple[int, int, int]
    ) -> tuple[list[JobRef | None], list[QueueError | None]]:
        """Put ``batch`` on ``server``; return where each job went, or why it did not."""
        priority, delay, ttr = options
        try:
            stored = server.backend.put_many(tube, batch, priority=priority, delay=delay, ttr=ttr)
        except PutManyError as exc:
            return (
                [None if job is None else JobRef(*job) for job in exc.jobs],
                [exc.errors.get(position) for position in range(len(batch))],
            )
        except QueueError as exc:  # nothing was sent
            return [None] * len(batch), [exc] * len(batch)
        self._succeeded(server)
        return list(stored), [None] * len(batch)

    def _put_somewhere(self, put_on: Callable[[_Server], T]) -> T:
        """Run ``put_on(server)`` on each server in turn until one succeeds.

        A failure another server may not have (see :meth:`_elsewhere`) moves on
        to the next server; others are raised. When every server failed, they
        are all tried again within ``retry_for``.
        """
        backoff: Backoff | None = None
        while True:
            failures: list[QueueError] = []
            for server in self._put_order():
                try:
                    result = put_on(server)
                except QueueError as exc:
                    if not self._elsewhere(server, exc):
                        raise
                    failures.append(exc)
                    continue
                self._succeeded(server)
                return result
            if backoff is None:
                backoff = Backoff(self._retry_for)
            if not backoff.pause():
                if failures and all(isinstance(exc, ServerError) for exc in failures):
                    raise failures[-1]
                raise QueueConnectionError(
                    "no server took the put: " + "; ".join(str(exc) for exc in failures),
                    ", ".join(self.addresses),
                )

    def _put_order(self) -> list[_Server]:
        """Return the servers to try a put on: those up in turn, then the rest but draining ones."""
        turn = self._in_turn(self._put_turn)
        now = time.monotonic()
        # Draining servers only when all are: their DRAINING is then the answer.
        welcome = [server for server in turn if now >= server.draining_until] or turn
        return [server for server in welcome if server.up(now)] + [
            server for server in welcome if not server.up(now)
        ]

    def _elsewhere(self, server: _Server, error: QueueError) -> bool:
        """Return whether a put ``server`` failed with ``error`` may go to another server.

        Records what the error says of the server's health.
        """
        if isinstance(error, PutOutcomeUnknown):
            self._failed(server, error)
            return self._resend
        if isinstance(error, CommandRefused):
            return False  # a bug: another server would refuse it too
        if isinstance(error, QueueConnectionError):
            self._failed(server, error)
            return True
        if isinstance(error, ServerError) and error.reply in _ELSEWHERE:
            if error.reply == "DRAINING":
                self._draining(server)
            else:
                self._failed(server, error)
            return True
        return False

    # Reserves

    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve a job from any server; see :meth:`Backend.reserve`.

        :raises Timeout: when no job became ready on any server in time.
        :raises QueueConnectionError: when no server could be reached.
        """
        watch = tubes if isinstance(tubes, tuple) else tuple(tubes)

        def reserve_on(server: _Server, seconds: float) -> Reserved | None:
            try:
                return server.backend.reserve(watch, seconds)
            except Timeout:
                return None

        reserved = self._reserve_any(reserve_on, timeout, lambda: False)
        if reserved is None:
            raise Timeout(f"no message on {', '.join(watch)} by the timeout")
        return reserved

    def _reserve_any(
        self,
        reserve_on: Callable[[_Server, float], Reserved | None],
        timeout: float,
        interrupted: Callable[[], bool],
        first: _Server | None = None,
    ) -> Reserved | None:
        """Poll every server, then wait on one in turn, until a job comes or ``timeout`` passes.

        :param first: a server just polled, polled last this time round.
        :returns: the job, or None at the timeout or once ``interrupted()``.
        :raises QueueConnectionError: when a whole round reached no server.
        """
        deadline = time.monotonic() + timeout
        while not interrupted():
            servers = self._reserve_order(first)
            first = None
            reached: list[_Server] = []
            errors: list[QueueConnectionError] = []
            for server in servers:
                got = self._try_reserve(server, reserve_on, 0, reached, errors)
                if got is not None or interrupted():
                    return got
            if not reached:
                raise QueueConnectionError(
                    "no server could be reached: " + "; ".join(str(exc) for exc in errors),
                    ", ".join(self.addresses),
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            server = reached[next(self._reserve_turn) % len(reached)]
            got = self._try_reserve(server, reserve_on, min(WAIT_SLICE, remaining), [], errors)
            if got is not None:
                return got
            if time.monotonic() >= deadline:
                return None
        return None

    def _try_reserve(
        self,
        server: _Server,
        reserve_on: Callable[[_Server, float], Reserved | None],
        seconds: float,
        reached: list[_Server],
        errors: list[QueueConnectionError],
    ) -> Reserved | None:
        try:
            got = reserve_on(server, seconds)
        except QueueConnectionError as exc:
            self._failed(server, exc)
            errors.append(exc)
            return None
        self._succeeded(server)
        reached.append(server)
        return got

    def _reserve_order(self, last: _Server | None) -> list[_Server]:
        """Return the servers to reserve from, in turn: those up, or all when none is."""
        turn = self._in_turn(self._reserve_turn)
        if last is not None:
            turn.remove(last)
            turn.append(last)
        now = time.monotonic()
        return [server for server in turn if server.up(now)] or turn

    def _in_turn(self, turns: Iterator[int]) -> list[_Server]:
        """Return the servers starting from the one whose turn ``turns`` says it is."""
        start = next(turns) % len(self._servers)
        return self._servers[start:] + self._servers[:start]

    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer with a connection to each server; see :meth:`Backend.consumer`."""
        return _ServersConsumer(self, tubes)

    # Jobs, by the server that holds them

    def delete(self, lease: Lease) -> None:
        """Delete a reserved job on its server; see :meth:`Backend.delete`."""
        self._holding(lease.server, lease.job_id).delete(lease)

    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Release a reserved job on its server; see :meth:`Backend.release`."""
        self._holding(lease.server, lease.job_id).release(lease, priority=priority, delay=delay)

    def bury(self, lease: Lease, *, priority: int) -> None:
        """Bury a reserved job on its server; see :meth:`Backend.bury`."""
        self._holding(lease.server, lease.job_id).bury(lease, priority=priority)

    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run on its server; see :meth:`Backend.touch`."""
        self._holding(lease.server, lease.job_id).touch(lease)

    def stats_job(self, job: JobRef) -> JobStats:
        """Return a job's counters from its server; see :meth:`Backend.stats_job`."""
        return self._holding(job.server, job.id).stats_job(job)

    def kick_job(self, job: JobRef) -> None:
        """Make a buried or delayed job ready on its server; see :meth:`Backend.kick_job`."""
        self._holding(job.server, job.id).kick_job(job)

    # Operating the tubes: over every server that answers

    def tubes(self) -> list[str]:
        """Return the tubes any server has, sorted; see :meth:`Backend.tubes`."""
        names: set[str] = set()
        for listed in self._on_every_server(lambda backend: backend.tubes()).values():
            names.update(listed)
        return sorted(names)

    def stats_tube(self, tube: str) -> TubeStats:
        """Return a tube's counts summed over the servers, each server's in ``servers``."""
        each = self._on_every_server(lambda backend: backend.stats_tube(tube))
        figures = list(each.values())
        return TubeStats(
            name=tube,
            ready=sum(one.ready for one in figures),
            delayed=sum(one.delayed for one in figures),
            reserved=sum(one.reserved for one in figures),
            buried=sum(one.buried for one in figures),
            urgent=sum(one.urgent for one in figures),
            waiting=sum(one.waiting for one in figures),
            watching=sum(one.watching for one in figures),
            total=sum(one.total for one in figures),
            pause_left=max(one.pause_left for one in figures),
            servers=each,
        )

    def peek(self, tube: str, state: str) -> tuple[JobRef, bytes] | None:
        """Return the next job of ``tube`` in ``state`` over every server; see :meth:`Backend.peek`.

        Each server's next one is compared: for ready jobs the most urgent
        (then the oldest), for delayed ones the first due, for buried ones
        the oldest.
        """
        found = [
            job
            for job in self._on_every_server(lambda backend: backend.peek(tube, state)).values()
            if job is not None
        ]
        if len(found) <= 1:
            return found[0] if found else None

        def rank(job: tuple[JobRef, bytes]) -> tuple[int, int]:
            try:
                stats = self.stats_job(job[0])
            except QueueError:  # gone meanwhile, or its server with it: last
                return (2**63, 0)
            if state == "ready":
                return (stats.priority, -stats.age)
            if state == "delayed":
                return (stats.time_left, -stats.age)
            return (-stats.age, 0)

        return min(found, key=rank)

    def kick(self, tube: str, bound: int) -> int:
        """Kick up to ``bound`` jobs of ``tube``, server after server; see :meth:`Backend.kick`.

        Buried jobs on every server come before delayed ones on any: each
        server kicks delayed jobs only when it has no buried one, so the
        servers holding buried jobs are kicked first.
        """
        each = self._on_every_server(lambda backend: backend.stats_tube(tube))
        burying = [server for server in self._servers if each.get(server.address, _NONE).buried]
        kicked = 0
        for server in burying or self._servers:
            if kicked >= bound:
                break
            try:
                kicked += server.backend.kick(tube, bound - kicked)
            except QueueConnectionError as exc:
                self._failed(server, exc)
        return kicked

    def delete_job(self, job: JobRef) -> None:
        """Delete a job nobody holds, on its server; see :meth:`Backend.delete_job`."""
        self._holding(job.server, job.id).delete_job(job)

    def pause_tube(self, tube: str, seconds: int) -> None:
        """Pause ``tube`` on every server that has it; see :meth:`Backend.pause_tube`.

        :raises NotFound: when no server has it.
        """

        def pause(backend: BeanstalkBackend) -> bool:
            try:
                backend.pause_tube(tube, seconds)
            except NotFound:
                return False
            return True

        if not any(self._on_every_server(pause).values()):
            raise NotFound(f"no server has queue {tube!r}")

    def _on_every_server(self, command: Callable[[BeanstalkBackend], T]) -> dict[str, T]:
        """Run ``command`` on each server that answers; by address.

        A server that does not answer is left out (and skipped for a while).

        :raises QueueConnectionError: when none answers.
        """
        results: dict[str, T] = {}
        error: QueueConnectionError | None = None
        now = time.monotonic()
        for server in [server for server in self._servers if server.up(now)] or self._servers:
            try:
                results[server.address] = command(server.backend)
            except QueueConnectionError as exc:
                self._failed(server, exc)
                error = exc
        if not results and error is not None:
            raise error
        return results

    def max_job_size(self) -> int:
        """Return the smallest ``max-job-size`` of the servers that answer.

        :raises QueueConnectionError: when no server answers.
        """
        return min(self._on_every_server(lambda backend: backend.max_job_size()).values())

    def close(self) -> None:
        """Close every server's connections."""
        for server in self._servers:
            server.backend.close()

    def __repr__(self) -> str:
        return f"queue_beanstalk.ServersBackend({', '.join(self.addresses)})"

    def _holding(self, address: str, job_id: int) -> BeanstalkBackend:
        """Return the backend of the server at ``address``, which holds job ``job_id``."""
        server = self._by_address.get(address)
        if server is None:
            raise NotFound(f"job {job_id} is on server {address}, not one of {self!r}")
        return server.backend

    # Health

    def _failed(self, server: _Server, error: QueueError) -> None:
        """Skip ``server`` for a while, longer after each failure; log the first."""
        with self._lock:
            server.failures += 1
            failures = server.failures
            pause = min(LAST_PAUSE, FIRST_PAUSE * 2 ** (failures - 1))
            server.skip_until = time.monotonic() + pause * random.uniform(0.5, 1.0)  # noqa: S311
        if failures == 1:
            logger.warning(
                "server %s is down; the other servers take its work meanwhile: %s",
                server.address,
                error,
            )

    def _succeeded(self, server: _Server) -> None:
        if not server.failures:
            return
        with self._lock:
            back, server.failures, server.skip_until = server.failures, 0, 0.0
        if back:
            logger.warning("server %s is back", server.address)

    def _draining(self, server: _Server) -> None:
        with self._lock:
            fresh = server.draining_until < time.monotonic()
            server.draining_until = time.monotonic() + DRAIN_RECHECK
        if fresh:
            logger.info("server %s is draining: no puts go there while it does", server.address)


class _ServersConsumer(Consumer):
    """One consumer per server, reserved from in turn; interrupt() ends them all."""

    def __init__(self, backend: ServersBackend, tubes: Sequence[str]) -> None:
        self.backend = self._backend = backend
        self._consumers = {
            server.address: server.backend.consumer(tubes) for server in backend._servers
        }
        self._interrupted = False
        self._streak = 0  # batches taken in a row from one server with reserve_batch

    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve a job from any server; see :meth:`Consumer.reserve`."""
        return self._reserve(timeout, None)

    def reserve_batch(
        self,
        deletes: Sequence[Lease],
        count: int,
        timeout: float,
        prepare: Prepare | None = None,
    ) -> tuple[list[Lease], list[Reserved]]:
        """Delete and reserve in one write on the jobs' server, while it has jobs.

        See :meth:`Consumer.reserve_batch`. After :data:`STREAK` batches in a
        row from one server, or when it has none ready, every server is polled;
        the server that has a job then fills the rest of the batch with what it
        has ready.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        servers = {lease.server for lease in deletes}
        server = self._backend._by_address.get(servers.pop()) if len(servers) == 1 else None
        if server is None or self._streak >= STREAK:
            lost = self._delete_each(deletes)
        else:
            try:
                lost, got = self._consumers[server.address].reserve_batch(
                    deletes, count, 0, prepare
                )
            except QueueConnectionError as exc:
                # Deletes not yet answered went with the connection, and the server
                # hands their jobs out again; which ones, the failure does not say.
                # The server's loss is logged, not each job as lost.
                self._backend._failed(server, exc)
                lost, got = [], []
            if got:
                self._streak += 1
                return lost, got
        self._streak = 0
        first = self._reserve(timeout, server)
        if first is None:
            return lost, []
        first = prepared(first, prepare)
        if count == 1:
            return lost, [first]
        holder = self._backend._by_address[first.lease.server]
        try:
            _, more = self._consumers[holder.address].reserve_batch((), count - 1, 0, prepare)
        except QueueConnectionError as exc:
            # The first job's reservation went with the connection: it is handed out again.
            self._backend._failed(holder, exc)
            return lost, []
        return lost, [first, *more]

    def _reserve(self, timeout: float, polled: _Server | None) -> Reserved | None:
        def reserve_on(server: _Server, seconds: float) -> Reserved | None:
            return self._consumers[server.address].reserve(seconds)

        return self._backend._reserve_any(
            reserve_on, timeout, lambda: self._interrupted, first=polled
        )

    def interrupt(self) -> None:
        """End a blocked reserve at once, on every server; see :meth:`Consumer.interrupt`."""
        self._interrupted = True
        for consumer in self._consumers.values():
            consumer.interrupt()

    def close(self) -> None:
        """Close the connection to every server; see :meth:`Consumer.close`."""
        for consumer in self._consumers.values():
            consumer.close()

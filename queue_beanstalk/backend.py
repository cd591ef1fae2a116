"""The interface every backend implements: move job bodies (bytes) in and out of tubes.

A backend knows nothing of messages or codecs; :class:`~queue_beanstalk.Queue`
encodes, validates and converts units before calling it, so every argument a
backend receives is already checked: names are valid tube names, delays and
time-to-run are whole seconds, priorities are within beanstalkd's bounds.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple
from urllib.parse import SplitResult

from .errors import NotFound, PutManyError, QueueError

__all__ = [
    "Backend",
    "Consumer",
    "JobRef",
    "JobStats",
    "Lease",
    "Prepare",
    "Reserved",
    "TubeStats",
    "prepared",
]

logger = logging.getLogger("queue_beanstalk")

#: The states a job can be peeked in.
PEEK_STATES = ("ready", "delayed", "buried")


class JobRef(NamedTuple):
    """Where a job is: its id, and the server that gave it that id.

    Job ids are the server's own: two servers both hand out job 1. So a
    backend acts on a job only through a ref naming one of its servers, and
    an id from one server can never act on another.
    """

    id: int
    #: The server as configured (``host:port``, ``memory``), not its stats id.
    server: str


class Lease:
    """A reservation of one job, good until it is settled (deleted, released or buried).

    Backends subclass it to remember what the reservation is bound to (on
    beanstalkd, the connection that reserved the job). Thread-safe.
    """

    __slots__ = ("_unclaimed", "job_id", "server", "tube")

    def __init__(self, job_id: int, tube: str, server: str) -> None:
        self.job_id = job_id
        self.tube = tube
        #: The server holding the job, as in :attr:`JobRef.server`.
        self.server = server
        # One token, taken by the first claim. list.pop() is atomic (it is one
        # call into C), so two threads cannot both take it, and a lease costs
        # no lock: a lock's acquire and release cost more in the hot path.
        self._unclaimed = [True]

    def claim(self) -> bool:
        """Mark the lease settled; return False if it already was (by any thread)."""
        try:
            return self._unclaimed.pop()
        except IndexError:
            return False

    @property
    def settled(self) -> bool:
        """Whether delete, release or bury has been issued for this lease."""
        return not self._unclaimed

    @property
    def ref(self) -> JobRef:
        """The reserved job."""
        return JobRef(self.job_id, self.server)

    @property
    def lost(self) -> bool:
        """Whether the reservation is known to be gone (its connection ended), without asking.

        False means not known to be gone: a time-to-run that ran out is found
        only when the job is settled. A handler checks this before it starts a
        prefetched message. Backends whose reservations can end so override it.
        """
        return False

    def __repr__(self) -> str:
        return (
            f"queue_beanstalk.Lease(job_id={self.job_id}, tube={self.tube!r}, "
            f"server={self.server!r})"
        )


class Reserved(NamedTuple):
    """A job handed out by :meth:`Backend.reserve`."""

    job_id: int
    body: bytes
    tube: str
    lease: Lease
    #: What the ``prepare`` given to :meth:`Consumer.reserve_batch` made of the body; else None.
    prepared: object = None


#: Work on a job's body done as the job is reserved (see :meth:`Consumer.reserve_batch`).
Prepare = Callable[[bytes], object]


def prepared(reserved: Reserved, prepare: Prepare | None) -> Reserved:
    """Return ``reserved`` with ``prepare(body)`` as its ``prepared`` (as it is, without one)."""
    if prepare is None:
        return reserved
    return reserved._replace(prepared=prepare(reserved.body))


@dataclass(frozen=True)
class JobStats:
    """What the server knows of a job (beanstalkd's ``stats-job``)."""

    id: int
    #: The server holding the job, as in :attr:`JobRef.server`.
    server: str
    tube: str
    #: ``"ready"``, ``"delayed"``, ``"reserved"`` or ``"buried"``.
    state: str
    priority: int
    #: Seconds since the job was put.
    age: int
    ttr: int
    reserves: int
    timeouts: int
    releases: int
    buries: int
    kicks: int
    #: Seconds until a delayed job is ready, or a reserved one's time-to-run ends.
    time_left: int = 0


@dataclass(frozen=True)
class TubeStats:
    """What the server knows of a tube (beanstalkd's ``stats-tube``); zeros for one it has not.

    A backend over several servers adds them up, and gives each server's own
    in :attr:`servers`.
    """

    name: str
    ready: int
    delayed: int
    reserved: int
    buried: int
    #: Ready jobs with a priority below 1024.
    urgent: int
    #: Connections waiting in a reserve on the tube (idle workers).
    waiting: int
    #: Connections watching the tube.
    watching: int
    #: Jobs ever put on the tube (since the server started).
    total: int
    #: Seconds the tube stays paused (0: not paused).
    pause_left: int
    #: Each server's own figures, by address, when the backend has several.
    servers: Mapping[str, TubeStats] = field(default_factory=dict)

    @property
    def paused(self) -> bool:
        """Whether reserves skip the tube now (``pause-tube``)."""
        return self.pause_left > 0


class Consumer(ABC):
    """One worker's own line to the server, reserving from a fixed set of tubes.

    A handler gives each worker thread a consumer, so a worker's blocked reserve
    never waits on another's, and :meth:`interrupt` can end it at once. Jobs it
    reserves are settled through the backend (``backend.delete(lease)``, ...).
    :meth:`reserve` and :meth:`reserve_batch` are for the one thread that owns
    the consumer; :meth:`interrupt` and :meth:`close` may be called from any thread.
    """

    #: The backend whose jobs this consumer reserves.
    backend: Backend

    @abstractmethod
    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve the most urgent ready job, waiting up to ``timeout`` seconds.

        :returns: the job, or None when the timeout passed or the consumer was
            interrupted (before or during the call).
        :raises QueueConnectionError: when the server cannot be reached; the next
            call tries a new connection.
        """

    def delete_and_reserve(self, lease: Lease, timeout: float) -> tuple[bool, Reserved | None]:
        """Delete a job reserved through this consumer, then reserve the next.

        The one-job case of :meth:`reserve_batch`.

        :returns: whether the delete found the job (False: its reservation was
            lost, and the server hands it out again), and what :meth:`reserve` gives.
        """
        lost, reserved = self.reserve_batch((lease,), 1, timeout)
        return not lost, reserved[0] if reserved else None

    def reserve_batch(
        self,
        deletes: Sequence[Lease],
        count: int,
        timeout: float,
        prepare: Prepare | None = None,
    ) -> tuple[list[Lease], list[Reserved]]:
        """Delete ``deletes``, then reserve up to ``count`` jobs: the first waited for.

        The first reserve waits up to ``timeout`` seconds; the others take only
        jobs ready at once, so a batch never waits to be filled. Backends that
        can send all of it in one write (beanstalkd) save a round trip per job.
        The leases in ``deletes`` must have been reserved through this consumer,
        and claimed. For the thread that owns the consumer, as :meth:`reserve`.

        ``prepare``, when given, is called with each job's body as the job is
        reserved, in this thread, and what it returns is the job's
        :attr:`Reserved.prepared`. On beanstalkd it runs while the server still
        answers the batch's later reserves, so a caller's own work on each job
        (a handler decodes it) overlaps the round trip. It must not use the
        backend (the consumer's connection may be held) and must not raise.

        :returns: the leases whose delete found no job (their reservation was
            lost, and the server hands them out again), and the jobs reserved,
            none when the timeout passed or the consumer was interrupted.
        :raises QueueConnectionError: as :meth:`reserve`; a delete not yet
            answered is then lost with the connection, and its job handed out again.
        :raises ValueError: when ``count`` is below 1.
        """
        if count < 1:  # not check_count(): this runs for every batch
            raise ValueError(f"count must be at least 1, not {count}")
        lost = self._delete_each(deletes)
        first = self.reserve(timeout)
        if first is None:
            return lost, []
        reserved = [prepared(first, prepare)]
        while len(reserved) < count:
            more = self.reserve(0)
            if more is None:
                break
            reserved.append(prepared(more, prepare))
        return lost, reserved

    def give_back(self, leases: Sequence[Lease]) -> None:
        """Release jobs reserved through this consumer and never started: at their priority, now.

        For the thread that owns the consumer. Best effort, and quiet: a job
        whose release fails goes back to the server when the consumer's
        connection closes. Backends that can ask every job's priority in one
        write, and release them all in another (beanstalkd), do. The leases
        must have been claimed.
        """
        for lease in leases:
            try:
                priority = self.backend.stats_job(lease.ref).priority
                self.backend.release(lease, priority=priority, delay=0)
            except QueueError as exc:
                logger.debug("could not give job %d back: %s", lease.job_id, exc)

    def _delete_each(self, leases: Sequence[Lease]) -> list[Lease]:
        """Delete each lease through the backend; return those whose job was not found."""
        lost = []
        for lease in leases:
            try:
                self.backend.delete(lease)
            except NotFound:
                lost.append(lease)
        return lost

    @abstractmethod
    def interrupt(self) -> None:
        """Make a blocked :meth:`reserve`, and every later one, return None at once.

        Jobs already reserved through this consumer stay reserved.
        """

    @abstractmethod
    def close(self) -> None:
        """Let go of the consumer's connection; jobs still reserved go back to the server."""


class Backend(ABC):
    """Moves job bodies in and out of named tubes on one server.

    Every method is thread-safe and may block on I/O. Times are whole seconds,
    except ``reserve``'s timeout, which is a float the backend must not cut
    short. Reservations are at-least-once: a lease can be lost (its time-to-run
    runs out, or its connection breaks) and the job handed out again.

    To add a URL scheme, subclass this, implement :meth:`from_url`, and pass
    the class to :func:`~queue_beanstalk.register_backend`.
    """

    #: The URL query and keyword options :meth:`from_url` understands.
    options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> Backend:
        """Return a backend for ``url``, without connecting yet.

        :param url: the parsed URL (scheme, host, port).
        :param options: only keys from :attr:`options`; values are strings when
            they came from the URL query.
        :raises ValueError: for a URL or option value the backend cannot use.
        """

    @abstractmethod
    def put(self, tube: str, body: bytes, *, priority: int, delay: int, ttr: int) -> JobRef:
        """Store a job and return where it is.

        :raises MessageTooBig: when ``body`` is over :meth:`max_job_size`.
        :raises QueueConnectionError: when the server cannot be reached.
        """

    def put_many(
        self, tube: str, bodies: Sequence[bytes], *, priority: int, delay: int, ttr: int
    ) -> list[JobRef]:
        """Store jobs and return where each is, in order; backends may pipeline this.

        The caller has checked every body against :meth:`max_job_size`. Every
        job is tried, whatever happened to the ones before it.

        :raises PutManyError: when some jobs were not stored; it says which.
        """
        jobs: list[JobRef | None] = []
        errors: dict[int, QueueError] = {}
        for index, body in enumerate(bodies):
            try:
                jobs.append(self.put(tube, body, priority=priority, delay=delay, ttr=ttr))
            except QueueError as exc:
                errors[index] = exc
                jobs.append(None)
        if errors:
            raise PutManyError(jobs, errors)
        return [job for job in jobs if job is not None]

    @abstractmethod
    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve the most urgent ready job of ``tubes``, waiting up to ``timeout`` seconds.

        Blocks the calling thread only; other threads' commands go on meanwhile.
        ``timeout=0`` polls.

        :raises Timeout: when no job became ready in time (never earlier).
        """

    @abstractmethod
    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer of its own for ``tubes`` (it connects on first reserve)."""

    @abstractmethod
    def delete(self, lease: Lease) -> None:
        """Delete a reserved job.

        :raises NotFound: when the job is no longer reserved through ``lease``.
        """

    @abstractmethod
    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Put a reserved job back, ready again after ``delay`` seconds.

        :raises NotFound: when the job is no longer reserved through ``lease``.
        """

    @abstractmethod
    def bury(self, lease: Lease, *, priority: int) -> None:
        """Set a reserved job aside (kept, never handed out until kicked).

        :raises NotFound: when the job is no longer reserved through ``lease``.
        """

    @abstractmethod
    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run.

        :raises NotFound: when the job is no longer reserved through ``lease``.
        """

    @abstractmethod
    def stats_job(self, job: JobRef) -> JobStats:
        """Return what the server knows of a job.

        :raises NotFound: when the server holds no job with that id, or the ref
            names a server that is not this backend's.
        """

    @abstractmethod
    def kick_job(self, job: JobRef) -> None:
        """Make a buried or delayed job ready.

        :raises NotFound: when the job is neither buried nor delayed, or the
            ref names a server that is not this backend's.
        """

    @abstractmethod
    def tubes(self) -> list[str]:
        """Return the names of the tubes the server has (beanstalkd's ``list-tubes``), sorted."""

    @abstractmethod
    def stats_tube(self, tube: str) -> TubeStats:
        """Return a tube's counts; zeros for a tube the server does not have."""

    @abstractmethod
    def peek(self, tube: str, state: str) -> tuple[JobRef, bytes] | None:
        """Return the next job of ``tube`` in ``state`` and its body, without reserving it.

        The next ready job is the most urgent; the next delayed one the first
        to become ready; the next buried one the first buried.

        :param state: ``"ready"``, ``"delayed"`` or ``"buried"``.
        :returns: None when there is no such job.
        """

    @abstractmethod
    def kick(self, tube: str, bound: int) -> int:
        """Make up to ``bound`` buried jobs of ``tube`` ready, or delayed ones if none is buried.

        :returns: how many were kicked.
        """

    @abstractmethod
    def delete_job(self, job: JobRef) -> None:
        """Delete a job that is ready, delayed or buried (one nobody holds).

        :raises NotFound: when the job is reserved (by anyone: settle it
            through its message instead), or gone.
        """

    @abstractmethod
    def pause_tube(self, tube: str, seconds: int) -> None:
        """Make reserves skip ``tube`` for ``seconds`` (0 ends a pause)."""

    @abstractmethod
    def max_job_size(self) -> int:
        """Return the largest body, in bytes, the server accepts."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection; reservations still held go back to the server."""

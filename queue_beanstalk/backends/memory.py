"""An in-memory backend with beanstalkd's contract, for tests and demos (``memory://``).

It keeps beanstalkd's semantics where a user's code could notice them: ready
jobs go out by priority then id, delays and time-to-run count whole seconds,
a reservation whose time-to-run runs out makes the job ready again, buried
jobs stay until kicked, bodies over ``max_job_size`` are refused. State
belongs to the instance: two factories never share jobs.

A reservation is bound to what made it, as beanstalkd binds it to a
connection: a consumer's reservations end when the consumer closes (its jobs
are ready again), every reservation ends when the backend closes, and
settling a reservation that ended raises :class:`~queue_beanstalk.NotFound`.

What an operator does works as on beanstalkd too: a paused tube's ready
jobs wait (a reserve waiting on it takes one when the pause ends), kicks take
buried jobs in the order they were buried, else delayed ones by due time, and
a job someone holds cannot be deleted by id.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult

from ..backend import Backend, Consumer, JobRef, JobStats, Lease, Reserved, TubeStats
from ..checks import check_count, from_text
from ..errors import MessageTooBig, NotFound, QueueError, Timeout

__all__ = ["MemoryBackend"]

#: beanstalkd's default ``max-job-size``, in bytes.
DEFAULT_MAX_JOB_SIZE = 65_535

# Numbers each backend's server name: every instance is a server of its own.
_INSTANCES = itertools.count(1)

#: How many leases a consumer keeps at least before it forgets settled ones;
#: likewise the items of a tube's delayed or buried heap.
PRUNE_AT = 16

#: Ready jobs with a priority below this count as urgent (beanstalkd's threshold).
URGENT = 1024

#: A heap item: (priority, due time or burial number; job id; the job's entry when pushed).
_Item = tuple[float, int, int]


class _Job:
    __slots__ = (
        "body",
        "buries",
        "created",
        "due",
        "entry",
        "id",
        "kicks",
        "owner",
        "priority",
        "releases",
        "reserves",
        "state",
        "timeouts",
        "ttr",
        "tube",
    )  # fmt: skip

    def __init__(self, job_id: int, tube: str, body: bytes, priority: int, ttr: int) -> None:
        self.id = job_id
        self.tube = tube
        self.body = body
        self.priority = priority
        self.ttr = ttr
        self.state = "ready"
        self.created = time.monotonic()
        #: When a delayed job becomes ready, or a reserved job's time-to-run ends.
        self.due = 0.0
        self.owner: Lease | None = None
        #: Bumped on every state change; heap entries with an older value are stale.
        self.entry = 0
        self.reserves = self.timeouts = self.releases = self.buries = self.kicks = 0


class _Line:
    """What stands for a consumer's beanstalkd connection: its reservations end when it closes."""

    __slots__ = ("__weakref__", "closed", "leases", "prune_at", "tubes", "watching")

    def __init__(self, tubes: tuple[str, ...]) -> None:
        self.tubes = tubes
        self.closed = False
        #: Whether it counts as watching its tubes: from its first reserve (when a
        #: beanstalkd consumer connects) until it closes.
        self.watching = False
        #: The leases reserved through this line, among them every one still
        #: holding its job; settled and lost ones are pruned once there are
        #: ``prune_at``, then twice the live ones (at least PRUNE_AT): O(1) a reserve.
        self.leases: list[_MemoryLease] = []
        self.prune_at = PRUNE_AT


class _Backlog:
    """One tube's delayed or buried jobs: a heap of items in the order kick takes them.

    As in the ready heaps, an item is live while its job's entry matches. Here
    items go stale out of order (a job kicked or deleted by id, a delay that
    ended), so once the heap holds ``prune_at`` items it is rebuilt from the
    live ones, and ``prune_at`` becomes twice those (at least PRUNE_AT): O(1) a push.
    """

    __slots__ = ("items", "prune_at")

    def __init__(self) -> None:
        self.items: list[_Item] = []
        self.prune_at = PRUNE_AT


class _MemoryLease(Lease):
    """A Lease with the backend that made it and the consumer's line it came through."""

    __slots__ = ("backend", "line")

    def __init__(self, job_id: int, tube: str, backend: MemoryBackend, line: _Line | None) -> None:
        super().__init__(job_id, tube, backend.server)
        self.backend = backend
        #: None for a reserve through the backend itself, which ends only with the backend.
        self.line = line


class MemoryBackend(Backend):
    """Jobs kept in this process's memory; thread-safe; lost when the process ends.

    :param max_job_size: the largest body accepted, in bytes.
    """

    options = frozenset({"max_job_size"})

    def __init__(self, *, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> None:
        self._max_job_size = check_count(max_job_size, "max_job_size", 1)
        #: The name job refs give this backend's jobs (``memory:<n>``): unique in the process.
        self.server = f"memory:{next(_INSTANCES)}"
        self._changed = threading.Condition()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        # Heaps whose items name job.entry: an item is live while the job's entry matches.
        self._ready: dict[str, list[_Item]] = {}  # (priority, job id, entry)
        self._timers: list[tuple[float, int, int]] = []  # (due, entry, job id)
        self._delayed: dict[str, _Backlog] = {}  # (due, job id, entry)
        self._buried: dict[str, _Backlog] = {}  # (burial number, job id, entry)
        self._burials = itertools.count()
        #: Jobs ever put on each tube.
        self._totals: dict[str, int] = {}
        #: When each paused tube's pause ends; a tube leaves once it has ended.
        self._paused: dict[str, float] = {}
        #: The lines of consumers that watch their tubes; weak, as a dropped
        #: consumer's connection closes with it.
        self._lines: weakref.WeakSet[_Line] = weakref.WeakSet()
        #: One (tubes, plain) per reserve waiting now; plain: not a consumer's.
        self._blocked: list[tuple[Sequence[str], bool]] = []
        self._closed = False

    @classmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> MemoryBackend:
        """Return a backend for ``memory://`` (host and path must be empty)."""
        if url.netloc or url.path not in ("", "/"):
            raise ValueError(f"a memory:// URL takes no host or path, not {url.geturl()!r}")
        # Only converted from the query's text here; __init__ checks the value.
        keywords: dict[str, Any] = {
            name: from_text(value, int, name) for name, value in options.items()
        }
        return cls(**keywords)

    def put(self, tube: str, body: bytes, *, priority: int, delay: int, ttr: int) -> JobRef:
        """Store a job; see :meth:`Backend.put`."""
        if len(body) > self._max_job_size:
            raise MessageTooBig(len(body), self._max_job_size)
        with self._changed:
            self._check_open()
            job = _Job(next(self._ids), tube, body, priority, max(ttr, 1))
            self._jobs[job.id] = job
            self._totals[tube] = self._totals.get(tube, 0) + 1
            if delay > 0:
                self._delay(job, time.monotonic() + delay)
            else:
                self._make_ready(job)
            return JobRef(job.id, self.server)

    def reserve(self, tubes: Sequence[str], timeout: float) -> Reserved:
        """Reserve a job; see :meth:`Backend.reserve`."""
        reserved = self._reserve(tubes, timeout, None)
        if reserved is None:
            raise Timeout(f"no message on {', '.join(tubes)} within {timeout:g}s")
        return reserved

    def consumer(self, tubes: Sequence[str]) -> Consumer:
        """Return a consumer for ``tubes``; see :meth:`Backend.consumer`."""
        return _MemoryConsumer(self, tubes)

    def _reserve(
        self, tubes: Sequence[str], timeout: float, consumer: _MemoryConsumer | None
    ) -> Reserved | None:
        """Reserve a job, or return None once ``timeout`` passed or ``consumer`` was interrupted."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._check_open()
                if consumer is not None:
                    if consumer.interrupted:
                        return None
                    if not consumer.line.watching:
                        consumer.line.watching = True
                        self._lines.add(consumer.line)
                now = time.monotonic()
                self._run_timers(now)
                job = self._pop_ready(tubes)
                if job is not None:
                    line = None if consumer is None else consumer.line
                    lease = job.owner = _MemoryLease(job.id, job.tube, self, line)
                    if line is not None:
                        line.leases.append(lease)
                        if len(line.leases) >= line.prune_at:
                            self._prune(line)  # after job.owner is set: it keeps this lease
                    job.reserves += 1
                    self._schedule(job, "reserved", now + job.ttr)
                    return Reserved(job.id, job.body, job.tube, lease)
                if now >= deadline:
                    return None
                # Counted meanwhile in stats_tube's waiting and watching, as beanstalkd does.
                blocked = (tubes, consumer is None)
                self._blocked.append(blocked)
                try:
                    self._changed.wait(self._wake(deadline) - now)
                finally:
                    self._blocked.remove(blocked)

    def delete(self, lease: Lease) -> None:
        """Delete a job; like beanstalkd, a job no one has reserved may be deleted too.

        That takes a lease from this backend whose reservation did not end with
        its consumer or the backend, as a beanstalkd delete takes an open connection.
        """
        with self._changed:
            self._check_lease(lease)
            self._run_timers(time.monotonic())
            job = self._jobs.get(lease.job_id)
            if job is None or (job.state == "reserved" and job.owner is not lease):
                raise NotFound(f"job {lease.job_id} is not reserved by this client")
            self._remove(job)

    def release(self, lease: Lease, *, priority: int, delay: int) -> None:
        """Release a reserved job; see :meth:`Backend.release`."""
        with self._changed:
            job = self._owned(lease)
            job.priority = priority
            job.releases += 1
            job.owner = None
            if delay > 0:
                self._delay(job, time.monotonic() + delay)
            else:
                self._make_ready(job)

    def bury(self, lease: Lease, *, priority: int) -> None:
        """Bury a reserved job; see :meth:`Backend.bury`."""
        with self._changed:
            job = self._owned(lease)
            job.priority = priority
            job.buries += 1
            job.owner = None
            job.state = "buried"
            job.entry += 1
            self._push(self._buried, job, next(self._burials))
            self._changed.notify_all()  # wakes a join: the tube may be empty now

    def touch(self, lease: Lease) -> None:
        """Restart a reserved job's time-to-run; see :meth:`Backend.touch`."""
        with self._changed:
            job = self._owned(lease)
            self._schedule(job, "reserved", time.monotonic() + job.ttr)

    def stats_job(self, job: JobRef) -> JobStats:
        """Return a job's counters; see :meth:`Backend.stats_job`."""
        with self._changed:
            return self._stats(self._existing(job))

    def _stats(self, job: _Job) -> JobStats:
        return JobStats(
            id=job.id,
            server=self.server,
            tube=job.tube,
            state=job.state,
            priority=job.priority,
            age=int(time.monotonic() - job.created),
            ttr=job.ttr,
            reserves=job.reserves,
            timeouts=job.timeouts,
            releases=job.releases,
            buries=job.buries,
            kicks=job.kicks,
        )

    def kick_job(self, job: JobRef) -> None:
        """Make a buried or delayed job ready; see :meth:`Backend.kick_job`."""
        with self._changed:
            self._check_open()
            self._run_timers(time.monotonic())
            found = self._job(job)
            if found is None or found.state not in ("buried", "delayed"):
                raise NotFound(f"job {job.id} is neither buried nor delayed")
            found.kicks += 1
            self._make_ready(found)

    def tubes(self) -> list[str]:
        """Return ``default`` and every tube with a job, a pause or a watcher, sorted.

        A simpler rule than beanstalkd's (which keeps a tube while it has jobs
        or a connection uses or watches it, and ``default`` always); here a
        tube is watched by a consumer from its first reserve until it closes,
        and by a plain reserve while that waits.
        """
        with self._changed:
            self._check_open()
            self._run_timers(time.monotonic())
            names = {"default", *self._paused}
            names.update(job.tube for job in self._jobs.values())
            for line in self._lines:
                names.update(line.tubes)
            for tubes, _ in self._blocked:
                names.update(tubes)
            return sorted(names)

    def stats_tube(self, tube: str) -> TubeStats:
        """Return a tube's counts, from a look at every job; see :meth:`Backend.stats_tube`.

        ``waiting`` counts the reserves waiting on it now, ``watching`` the
        consumers watching it (see :meth:`tubes`) and the plain reserves waiting.
        """
        with self._changed:
            self._check_open()
            now = time.monotonic()
            self._run_timers(now)
            jobs = [job for job in self._jobs.values() if job.tube == tube]
            states = Counter(job.state for job in jobs)
            waiting = [plain for tubes, plain in self._blocked if tube in tubes]
            until = self._paused.get(tube)
            return TubeStats(
                name=tube,
                ready=states["ready"],
                delayed=states["delayed"],
                reserved=states["reserved"],
                buried=states["buried"],
                urgent=sum(job.state == "ready" and job.priority < URGENT for job in jobs),
                waiting=len(waiting),
                watching=sum(tube in line.tubes for line in self._lines) + sum(waiting),
                total=self._totals.get(tube, 0),
                pause_left=0 if until is None else math.ceil(until - now),
            )

    def peek(self, tube: str, state: str) -> tuple[JobRef, bytes] | None:
        """Return the next job of ``tube`` in ``state`` and its body; see :meth:`Backend.peek`."""
        with self._changed:
            self._check_open()
            self._run_timers(time.monotonic())
            if state == "ready":
                job = self._first(self._ready.get(tube))
            else:
                job = self._first(self._backlog(tube, state))
            return None if job is None else (JobRef(job.id, self.server), job.body)

    def kick(self, tube: str, bound: int) -> int:
        """Make up to ``bound`` jobs ready, as beanstalkd's ``kick``; see :meth:`Backend.kick`.

        Buried jobs go first, in the order they were buried; only when the
        tube has none are delayed ones kicked, those due first first.
        """
        with self._changed:
            self._check_open()
            self._run_timers(time.monotonic())
            backlog = self._backlog(tube, "buried")
            if self._first(backlog) is None:
                backlog = self._backlog(tube, "delayed")
            kicked = 0
            while kicked < bound and (job := self._first(backlog)) is not None:
                job.kicks += 1
                self._make_ready(job)  # its item is stale now: _first drops it
                kicked += 1
            return kicked

    def delete_job(self, job: JobRef) -> None:
        """Delete a ready, delayed or buried job by id; see :meth:`Backend.delete_job`."""
        with self._changed:
            found = self._existing(job)
            if found.state == "reserved":
                raise NotFound(
                    f"job {job.id} is reserved: only the worker holding it may delete it"
                )
            self._remove(found)

    def pause_tube(self, tube: str, seconds: int) -> None:
        """Make reserves skip ``tube`` for ``seconds``; see :meth:`Backend.pause_tube`."""
        with self._changed:
            self._check_open()
            if seconds > 0:
                self._paused[tube] = time.monotonic() + seconds
            else:
                self._paused.pop(tube, None)
            self._changed.notify_all()  # a waiting reserve looks again, or sets its wake-up

    def _existing(self, job: JobRef) -> _Job:
        """Return the job ``job`` names, due timers run first; NotFound if none. Hold the lock."""
        self._check_open()
        self._run_timers(time.monotonic())
        found = self._job(job)
        if found is None:
            raise NotFound(f"job {job.id} does not exist")
        return found

    def _job(self, job: JobRef) -> _Job | None:
        """Return the job ``job`` names, None if none; NotFound for another server's."""
        if job.server != self.server:
            raise NotFound(f"job {job.id} is on server {job.server}, not {self.server}")
        return self._jobs.get(job.id)

    def join(self, tube: str, timeout: float) -> None:
        """Block until ``tube`` holds no ready, delayed or reserved job: a drain for tests.

        Buried jobs do not count, as nothing takes them without a kick. A job
        leaves the count when its delete or bury is done; a handler settles a
        message after its callback returned, so once a handler drained ``tube``
        every callback whose message it settled has returned. A delayed job, or
        a reserved one whose time-to-run runs out, keeps the join waiting until
        it is settled in turn. Thread-safe; a callback must not join its own
        tube (its message is reserved until it returns).

        :param tube: the tube to wait for.
        :param timeout: the most to wait, in seconds.
        :raises Timeout: when the tube still holds such a job after ``timeout`` seconds.
        :raises QueueError: when the backend is closed, or closes while waiting.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                self._check_open()
                now = time.monotonic()
                self._run_timers(now)
                pending = sum(
                    1 for job in self._jobs.values() if job.tube == tube and job.state != "buried"
                )
                if not pending:
                    return
                if now >= deadline:
                    raise Timeout(f"{pending} job(s) still on {tube} after {timeout:g}s")
                self._changed.wait(self._wake(deadline) - now)

    def max_job_size(self) -> int:
        """Return the largest body accepted, in bytes."""
        return self._max_job_size

    def close(self) -> None:
        """Refuse further use and end every reservation; a waiting :meth:`reserve` raises."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __repr__(self) -> str:
        return f"queue_beanstalk.MemoryBackend(max_job_size={self._max_job_size})"

    def _hang_up(self, consumer: _MemoryConsumer) -> None:
        """End ``consumer``'s reservations, making their jobs ready, as a closed connection does."""
        with self._changed:
            line, consumer.line = consumer.line, _Line(consumer.line.tubes)
            line.closed = True
            self._lines.discard(line)
            for lease in line.leases:
                job = self._jobs.get(lease.job_id)
                if job is not None and job.owner is lease:
                    job.owner = None
                    self._make_ready(job)

    # Everything below runs with self._changed held.

    def _check_open(self) -> None:
        if self._closed:
            raise QueueError("the queue factory is closed")

    def _check_lease(self, lease: Lease) -> None:
        """Raise NotFound unless ``lease`` was made here and its reservation has not ended."""
        if not isinstance(lease, _MemoryLease) or lease.backend is not self:
            raise NotFound(f"job {lease.job_id} was not reserved through this factory")
        if self._closed:
            raise NotFound(
                f"job {lease.job_id}'s reservation was lost: the queue factory was closed"
            )
        if lease.line is not None and lease.line.closed:
            raise NotFound(
                f"job {lease.job_id}'s reservation was lost: its consumer was closed, "
                "and the job is handed out again"
            )

    def _prune(self, line: _Line) -> None:
        """Forget the leases of ``line`` whose job is no longer reserved through them."""
        jobs = self._jobs
        line.leases = [
            lease
            for lease in line.leases
            if (job := jobs.get(lease.job_id)) is not None and job.owner is lease
        ]
        line.prune_at = max(PRUNE_AT, 2 * len(line.leases))

    def _owned(self, lease: Lease) -> _Job:
        self._check_lease(lease)
        self._run_timers(time.monotonic())
        job = self._jobs.get(lease.job_id)
        if job is None or job.state != "reserved" or job.owner is not lease:
            raise NotFound(f"job {lease.job_id} is not reserved by this client")
        return job

    def _remove(self, job: _Job) -> None:
        job.entry += 1
        del self._jobs[job.id]
        self._changed.notify_all()

    def _make_ready(self, job: _Job) -> None:
        job.state = "ready"
        job.entry += 1
        heapq.heappush(self._ready.setdefault(job.tube, []), (job.priority, job.id, job.entry))
        self._changed.notify_all()

    def _schedule(self, job: _Job, state: str, due: float) -> None:
        job.state = state
        job.due = due
        job.entry += 1
        heapq.heappush(self._timers, (due, job.entry, job.id))
        self._changed.notify_all()

    def _delay(self, job: _Job, due: float) -> None:
        self._schedule(job, "delayed", due)
        self._push(self._delayed, job, due)

    def _push(self, backlogs: dict[str, _Backlog], job: _Job, key: float) -> None:
        """Add ``job`` to its tube's backlog in ``backlogs``, after its entry was bumped."""
        backlog = backlogs.get(job.tube)
        if backlog is None:
            backlog = backlogs[job.tube] = _Backlog()
        if len(backlog.items) >= backlog.prune_at:
            backlog.items = [item for item in backlog.items if not self._is_stale(item)]
            heapq.heapify(backlog.items)
            backlog.prune_at = max(PRUNE_AT, 2 * len(backlog.items))
        heapq.heappush(backlog.items, (key, job.id, job.entry))

    def _backlog(self, tube: str, state: str) -> list[_Item] | None:
        """Return the heap of ``tube``'s jobs in ``state`` (``"delayed"`` or ``"buried"``)."""
        backlog = (self._delayed if state == "delayed" else self._buried).get(tube)
        return None if backlog is None else backlog.items

    def _first(self, heap: list[_Item] | None) -> _Job | None:
        """Return the job of ``heap``'s first live item, dropping the stale ones before it."""
        while heap and self._is_stale(heap[0]):
            heapq.heappop(heap)
        return self._jobs[heap[0][1]] if heap else None

    def _wake(self, deadline: float) -> float:
        """When a wait must look again: at ``deadline``, or sooner at a timer or a pause's end."""
        wake = deadline
        if self._timers:
            wake = min(wake, self._timers[0][0])
        if self._paused:
            wake = min(wake, *self._paused.values())
        return wake

    def _run_timers(self, now: float) -> None:
        """Make delayed jobs whose delay ended, and reserved jobs whose time-to-run ended, ready.

        Pauses that ended end here too, so a tube in ``_paused`` is paused now.
        """
        if self._paused:
            for tube in [tube for tube, until in self._paused.items() if until <= now]:
                del self._paused[tube]
        while self._timers and self._timers[0][0] <= now:
            _, entry, job_id = heapq.heappop(self._timers)
            job = self._jobs.get(job_id)
            if job is None or job.entry != entry:
                continue
            if job.state == "reserved":
                job.timeouts += 1
                job.owner = None
            self._make_ready(job)

    def _pop_ready(self, tubes: Sequence[str]) -> _Job | None:
        """Remove and return the most urgent ready job of ``tubes`` (priority, then id).

        Paused tubes are skipped; :meth:`_run_timers` has ended those whose pause ran out.
        """
        best: list[_Item] | None = None
        paused = self._paused
        for tube in tubes:
            if paused and tube in paused:
                continue
            heap = self._ready.get(tube)
            while heap and self._is_stale(heap[0]):
                heapq.heappop(heap)
            if heap and (best is None or heap[0] < best[0]):
                best = heap
        if best is None:
            return None
        return self._jobs[heapq.heappop(best)[1]]

    def _is_stale(self, item: _Item) -> bool:
        job = self._jobs.get(item[1])
        return job is None or job.entry != item[2]


class _MemoryConsumer(Consumer):
    def __init__(self, backend: MemoryBackend, tubes: Sequence[str]) -> None:
        self.backend = self._backend = backend
        self._tubes = tuple(tubes)
        self.interrupted = False
        #: Replaced by close(), as beanstalkd's consumer opens a new connection after one.
        self.line = _Line(self._tubes)

    def reserve(self, timeout: float) -> Reserved | None:
        """Reserve a job; see :meth:`Consumer.reserve`."""
        return self._backend._reserve(self._tubes, timeout, self)

    def interrupt(self) -> None:
        """Wake a blocked reserve; see :meth:`Consumer.interrupt`."""
        with self._backend._changed:
            self.interrupted = True
            self._backend._changed.notify_all()

    def close(self) -> None:
        """Make the jobs this consumer still holds ready again; see :meth:`Consumer.close`.

        Settling one of its leases afterwards raises NotFound, as on beanstalkd.
        """
        self._backend._hang_up(self)

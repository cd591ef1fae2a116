"""The reservation keeper: touches the messages workers hold past their time-to-run.

A worker holds a message from its reserve until it is settled: a callback may
run longer than its message's time-to-run; a prefetched message waits for the
calls before it; a handled one waits for its delete to go out with the next
reserve. Without a touch the server would hand the message to another worker
meanwhile. Each handler has one keeper, which outlives its workers so that the
callbacks still running when ``stop()`` came stay reserved to the end.

With a time limit, the keeper stops keeping a callback's message once the call
has run that long, and gives the message back to the server (released, at its
priority) so that another worker can try it. The call itself cannot be
stopped: a Python thread cannot be killed. It runs on, its worker takes no
other message until it returns, and what it returns is ignored.

Times here are ``time.perf_counter()``, the clock the handler times its calls
with: a callback's start is read once, for both.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from .backend import Backend, Lease, Reserved
from .decoding import priority_of

__all__ = ["KEEP_AFTER", "SCAN", "Holding", "Kept", "ReservationKeeper"]

T = TypeVar("T")

logger = logging.getLogger("queue_beanstalk")

# A message held this long gets its time-to-run looked up and kept, in seconds.
KEEP_AFTER = 0.5
# How often the keeper looks at the messages held, in seconds.
SCAN = 0.1


class Holding:
    """What one worker holds, and whose callback runs: written by the worker, read by the keeper.

    A worker holds each batch it reserved (one message, or a prefetched batch)
    until its next reserve: a message waits its turn, then its callback runs,
    then, handled, it waits for its delete to go out with that reserve
    (``deferred``). One record per worker, rewritten for each batch and each
    callback: a message costs the worker two clock reads and a few
    assignments, no object, no lock, no wake-up. The worker writes each field
    before the one that makes it count (``batch`` last of a batch, ``running``
    after ``started``), so the keeper, reading without a lock, may see a
    moment-old state but never one that gives back a call before its time.
    """

    __slots__ = ("batch", "deferred", "given_back", "held_at", "running", "started")

    def __init__(self) -> None:
        #: The messages held; empty when none.
        self.batch: Sequence[Reserved] = ()
        #: When (``time.perf_counter()``) the batch was reserved.
        self.held_at = 0.0
        #: The handled messages, claimed, whose deletes go out with the next reserve.
        self.deferred: list[Lease] = []
        #: The lease whose callback runs, and since when (``time.perf_counter()``).
        self.running: Lease | None = None
        self.started = 0.0
        #: Set by the keeper: a lease it gave back, its call past the time limit.
        self.given_back: Lease | None = None

    def hold(self, batch: Sequence[Reserved], deferred: list[Lease]) -> None:
        """Hold ``batch``, just reserved; the worker puts the leases it handles in ``deferred``."""
        self.deferred = deferred
        self.held_at = time.perf_counter()
        self.batch = batch

    def start(self, lease: Lease) -> float:
        """Record that the callback of ``lease`` starts now; return now, ``time.perf_counter()``.

        The handler times the call from the same reading (one clock read, not two).
        """
        self.started = started = time.perf_counter()
        self.running = lease
        return started


class Kept:
    """The keeper's record of a message held past KEEP_AFTER: when to touch it next."""

    __slots__ = ("due", "lease", "over_limit", "ttr")

    def __init__(self, lease: Lease, due: float) -> None:
        self.lease = lease
        self.due = due
        self.ttr: int | None = None
        #: Set once the call has run past the time limit (the keeper let go of it).
        self.over_limit = False


class ReservationKeeper:
    """A thread that has the messages workers hold past their time-to-run touched.

    Each worker has a :class:`Holding` in ``slots``, in which it writes what it
    holds. Every SCAN seconds the keeper looks at them; a message held
    KEEP_AFTER seconds (waiting its turn, in its callback, or handled and
    waiting for its delete to go out) gets a :class:`Kept` record, has its
    time-to-run looked up once (``stats-job``) and is touched well before it
    runs out, again and again until it is settled. The touches due for one
    worker's messages run in a short thread of their own, one after the
    other, as they would on that worker's connection anyway; so one slow
    reply (up to the backend's timeout) never delays the touches of other
    workers' messages.
    """

    def __init__(
        self,
        backend: Backend,
        workers: int,
        stopping: threading.Event,
        *,
        time_limit: float | None = None,
        priority: int,
    ) -> None:
        self._backend = backend
        self._time_limit = math.inf if time_limit is None else time_limit
        # A batch held for less than this needs no look: nothing in it is due.
        self._look_after = min(KEEP_AFTER, self._time_limit)
        self._priority = priority  # to give a message back at, when its own cannot be read
        #: What each worker holds.
        self.slots = [Holding() for _ in range(workers)]
        # The messages held past KEEP_AFTER, by lease; only the keeper's thread uses it.
        self._kept: dict[Lease, Kept] = {}
        self._stopping = stopping
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="queue-beanstalk-keeper", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """End the keeper thread (it finishes a touch under way)."""
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(SCAN):
            if self._stopping.is_set() and not any(holding.batch for holding in self.slots):
                return  # stopped, and no callback left to keep: nothing will come
            now = time.perf_counter()
            kept: dict[Lease, Kept] = {}  # those still held: the rest are forgotten
            for holding in self.slots:
                due = self._look(holding, now, kept)
                if due:
                    # One thread for a worker's messages: they share its connection,
                    # on which touches go one at a time anyway.
                    self._start(self._touch_each, due)
            self._kept = kept

    def _look(self, holding: Holding, now: float, kept: dict[Lease, Kept]) -> list[Kept]:
        """Give back a call past its time limit; return the messages of ``holding`` due a touch.

        Records in ``kept`` each message it holds past KEEP_AFTER.
        """
        batch = holding.batch
        if not batch or now - holding.held_at < self._look_after:
            return []
        due = []
        for reserved in batch:
            lease = reserved.lease
            if lease.settled and lease not in holding.deferred:
                continue  # settled, or given back: not ours to keep
            record = kept[lease] = self._kept.get(lease) or Kept(lease, now)
            if record.over_limit:
                continue
            if holding.running is lease and now - holding.started >= self._time_limit:
                record.over_limit = True
                record.due = math.inf  # touched no more
                self._start(self._give_back, (holding, lease))
            elif record.due <= now and now - holding.held_at >= KEEP_AFTER:
                record.due = math.inf  # until this touch is done: never two at once
                due.append(record)
        return due

    def _start(self, action: Callable[[T], None], argument: T) -> None:
        """Run ``action(argument)`` in a short thread of its own."""
        try:
            threading.Thread(
                target=action, args=(argument,), name="queue-beanstalk-keeper-task", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: here, late rather than never
            action(argument)

    def _give_back(self, call: tuple[Holding, Lease]) -> None:
        """Release the message of a call past its time limit, for another worker to try."""
        holding, lease = call
        if not lease.claim():
            return  # settled just now: the call returned in time after all
        holding.given_back = lease
        logger.error(
            "job %d on %s: its call has run %.1fs, past its time limit of %gs; the message "
            "goes back to the server for another try. The call cannot be stopped (a Python "
            "thread cannot be killed): it runs on, its worker takes no other message until "
            "it returns, and what it returns is ignored",
            lease.job_id,
            lease.tube,
            time.perf_counter() - holding.started,
            self._time_limit,
        )
        try:
            priority = priority_of(self._backend, lease, self._priority)
            self._backend.release(lease, priority=priority, delay=0)
        except Exception as exc:  # noqa: BLE001 - logged: no keeper thread ends silently
            logger.warning(
                "could not give job %d back (%s); the server hands it out again when its "
                "time-to-run ends",
                lease.job_id,
                exc,
            )

    def _touch_each(self, due: list[Kept]) -> None:
        for kept in due:
            self._touch(kept)

    def _touch(self, kept: Kept) -> None:
        try:
            if kept.ttr is None:
                kept.ttr = self._backend.stats_job(kept.lease.ref).ttr
            self._backend.touch(kept.lease)
        except Exception as exc:  # noqa: BLE001 - logged: no touch thread ends silently
            # kept.due stays infinite: nothing more to do for this one. (A
            # deferred delete may have gone out meanwhile: that is no failure.)
            if not kept.lease.settled:
                logger.warning("could not keep job %d reserved: %s", kept.lease.job_id, exc)
            return
        # Touch again well before the time-to-run, restarted now, runs out.
        kept.due = time.perf_counter() + max(0.25, kept.ttr / 2 - 0.25)

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

__all__ = ["KEEP_AFTER", "SCAN", "Kept", "ReservationKeeper"]

T = TypeVar("T")

logger = logging.getLogger("queue_beanstalk")

# A message held this long gets its time-to-run looked up and kept, in seconds.
KEEP_AFTER = 0.5
# How often the keeper looks at the messages held, in seconds.
SCAN = 0.1


class Kept:
    """A message a worker holds, and when the keeper should next look at it.

    A worker holds a message from its reserve until it is settled: waiting
    its turn (prefetched), then while its callback runs, then, once handled,
    until its delete goes out with the worker's next reserve (``deferred``).
    """

    __slots__ = (
        "deferred",
        "due",
        "given_back",
        "lease",
        "over_limit",
        "running",
        "started",
        "ttr",
    )

    def __init__(self, lease: Lease, reserved: float) -> None:
        self.lease = lease
        #: When (``time.perf_counter()``) the message was reserved, then when its callback started.
        self.started = reserved
        self.due = reserved + KEEP_AFTER
        self.ttr: int | None = None
        #: Set while the callback runs: the time limit counts from its start.
        self.running = False
        #: Set once handled: deleted with the worker's next reserve, kept reserved until then.
        self.deferred = False
        #: Set once the call has run past the time limit (the keeper let go of it).
        self.over_limit = False
        #: Set once the message was given back to the server: its outcome is not ours.
        self.given_back = False

    def start(self) -> float:
        """Record that the message's callback starts now; return now, ``time.perf_counter()``.

        The handler times the call from the same reading (one clock read, not two).
        """
        self.started = started = time.perf_counter()
        self.running = True
        return started


class ReservationKeeper:
    """A thread that has the messages workers hold past their time-to-run touched.

    Each worker has a slot in which it puts the messages it holds (one, or a
    prefetched batch, see :meth:`hold`): that costs one assignment, no lock
    and no wake-up. Every SCAN seconds the keeper looks at the slots; a
    message held KEEP_AFTER seconds (waiting its turn, in its callback, or
    handled and waiting for its delete to go out) has its time-to-run looked
    up once (``stats-job``) and is touched well before it runs out, again and
    again until it is settled. The touches due for one worker's messages run
    in a short thread of their own, one after the other, as they would on
    that worker's connection anyway; so one slow reply (up to the backend's
    timeout) never delays the touches of other workers' messages.
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
        self._priority = priority  # to give a message back at, when its own cannot be read
        #: What each worker holds; empty when nothing.
        self.slots: list[Sequence[Kept]] = [()] * workers
        self._stopping = stopping
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="queue-beanstalk-keeper", daemon=True
        )
        self._thread.start()

    def hold(self, slot: int, batch: Sequence[Reserved]) -> list[Kept]:
        """Put the messages of ``batch``, just reserved, in worker ``slot``'s keeping.

        They stay kept until the worker empties its slot (``slots[slot] = ()``)
        or each is settled; a message deferred for deletion is kept until then.
        """
        now = time.perf_counter()
        kept = [Kept(reserved.lease, now) for reserved in batch]
        self.slots[slot] = kept
        return kept

    def close(self) -> None:
        """End the keeper thread (it finishes a touch under way)."""
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(SCAN):
            if self._stopping.is_set() and not any(self.slots):
                return  # stopped, and no callback left to keep: nothing will come
            now = time.perf_counter()
            for held in list(self.slots):
                due = []
                for kept in held:
                    if kept.over_limit or (kept.lease.settled and not kept.deferred):
                        continue
                    if kept.running and now - kept.started >= self._time_limit:
                        kept.over_limit = True
                        kept.due = math.inf  # touched no more
                        self._start(self._give_back, kept)
                    elif kept.due <= now:
                        kept.due = math.inf  # until this touch is done: never two at once
                        due.append(kept)
                if due:
                    # One thread for a worker's messages: they share its connection,
                    # on which touches go one at a time anyway.
                    self._start(self._touch_each, due)

    def _start(self, action: Callable[[T], None], argument: T) -> None:
        """Run ``action(argument)`` in a short thread of its own."""
        try:
            threading.Thread(
                target=action, args=(argument,), name="queue-beanstalk-keeper-task", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: here, late rather than never
            action(argument)

    def _give_back(self, kept: Kept) -> None:
        """Release the message of a call past its time limit, for another worker to try."""
        lease = kept.lease
        if not lease.claim():
            return  # settled just now: the call returned in time after all
        kept.given_back = True
        logger.error(
            "job %d on %s: its call has run %.1fs, past its time limit of %gs; the message "
            "goes back to the server for another try. The call cannot be stopped (a Python "
            "thread cannot be killed): it runs on, its worker takes no other message until "
            "it returns, and what it returns is ignored",
            lease.job_id,
            lease.tube,
            time.perf_counter() - kept.started,
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

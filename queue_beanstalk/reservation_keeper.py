"""The reservation keeper: touches the messages of callbacks running past their time-to-run.

A callback may run longer than its message's time-to-run; without a touch the
server would hand the message to another worker meanwhile. Each handler has
one keeper, which outlives its workers so that the callbacks still running
when ``stop()`` came stay reserved to the end.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from .backend import Backend, Lease

__all__ = ["KEEP_AFTER", "SCAN", "Kept", "ReservationKeeper"]

logger = logging.getLogger("queue_beanstalk")

# A callback running this long gets its message's time-to-run looked up and kept.
KEEP_AFTER = 0.5
# How often the keeper looks at the running callbacks, in seconds.
SCAN = 0.1


class Kept:
    """A callback's message, and when the keeper should next look at it."""

    __slots__ = ("due", "lease", "ttr")

    def __init__(self, lease: Lease, due: float) -> None:
        self.lease = lease
        self.due = due
        self.ttr: int | None = None


class ReservationKeeper:
    """A thread that has the messages of callbacks running past their time-to-run touched.

    Each worker has a slot in which it puts what its callback holds: starting
    a callback costs one assignment, no lock and no wake-up. Every SCAN seconds
    the keeper looks at the slots; a message whose callback has run KEEP_AFTER
    seconds has its time-to-run looked up once (``stats-job``) and is touched
    well before it runs out, again and again until the callback returns. Each
    touch runs in a short thread of its own, so one slow reply (up to the
    backend's timeout) never delays the touches of other messages past
    their time-to-run.
    """

    def __init__(self, backend: Backend, workers: int, stopping: threading.Event) -> None:
        self._backend = backend
        self.slots: list[Kept | None] = [None] * workers
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
            if self._stopping.is_set() and not any(self.slots):
                return  # stopped, and no callback left to keep: nothing will come
            now = time.monotonic()
            for kept in list(self.slots):
                if kept is not None and kept.due <= now and not kept.lease.settled:
                    self._start_touch(kept)

    def _start_touch(self, kept: Kept) -> None:
        kept.due = math.inf  # until this touch is done: never two at once
        try:
            threading.Thread(
                target=self._touch, args=(kept,), name="queue-beanstalk-touch", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: touch here, late rather than never
            self._touch(kept)

    def _touch(self, kept: Kept) -> None:
        try:
            if kept.ttr is None:
                kept.ttr = self._backend.stats_job(kept.lease.ref).ttr
            self._backend.touch(kept.lease)
        except Exception as exc:  # noqa: BLE001 - logged: no touch thread ends silently
            # kept.due stays infinite: nothing more to do for this one.
            if not kept.lease.settled:
                logger.warning("could not keep job %d reserved: %s", kept.lease.job_id, exc)
            return
        # Touch again well before the time-to-run, restarted now, runs out.
        kept.due = time.monotonic() + max(0.25, kept.ttr / 2 - 0.25)

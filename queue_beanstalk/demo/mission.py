"""Part 2 of the demo, the mission: a producer and a handler on two queues, tallied and checked.

``_Mission`` runs a producer thread and a handler with the script's settings, keeps the tallies
(each job's calls and their outcomes, messages put, in flight, settled) under one lock, prints a
progress line on a fixed schedule, and at the end checks on the server that every message went
where the library documents. ``_Call`` is one call of the handler function.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from typing import NamedTuple

from ..backend import JobRef
from ..errors import NotFound
from ..message import Message
from ..queue_factory import QueueFactory
from ..queues import Queue
from ..retries import Retry
from .output import _Output, _span, _times
from .script import (
    BATCH,
    BATCH_PAUSE,
    BROKEN,
    BUSY,
    CONCURRENCY,
    FAILED,
    FLAKY,
    GIVEN_UP,
    HANDLED,
    LATER,
    MAX_ATTEMPTS,
    RETRY_DELAY,
    RETRY_LATER,
    WORK,
    _expected_calls,
    _plan,
    _Put,
    _script,
    _ScriptedFailure,
)
from .threads import SETTLE_TIMEOUT, _Producer, _running, _stop

#: Seconds between two progress lines.
PROGRESS_EVERY = 0.5
#: beanstalkd times a delay by its own clock: allow it to disagree with ours by this much.
CLOCK_SLACK = 0.05


class _Call(NamedTuple):
    start: float
    end: float
    outcome: str


def _gaps(calls: list[_Call]) -> list[float]:
    """Return the seconds between the end of each call and the start of the next."""
    return [after.start - before.end for before, after in itertools.pairwise(calls)]


class _Mission:
    """Part 2: the producer, the handler function, the tallies and the checks."""

    def __init__(self, show: _Output, queues: QueueFactory, apps: Queue, units: Queue) -> None:
        self._show = show
        self._queues = queues
        self._targets = {"apps": apps, "units": units}
        self._plan = _plan()
        self._settled = threading.Event()
        self._started = 0.0
        self._lock = threading.Lock()
        # Guarded by _lock: written by the producer and the workers, read by the main thread.
        self.counts: Counter[str] = Counter()
        self.put = 0
        self.in_flight = 0
        self.peak = 0
        self.elapsed = 0.0
        self._server = ""  # the one server the demo's jobs are on
        self._puts: dict[int, tuple[_Put, float]] = {}  # job id -> what and when (before put)
        self._calls: dict[int, list[_Call]] = {}

    def run(self) -> None:
        """Put the plan's messages while a handler handles them; check where each one went."""
        apps, units = self._targets["apps"], self._targets["units"]
        self._show.step(
            f"2. a handler with {CONCURRENCY} workers on apps and units "
            f"(max_attempts={MAX_ATTEMPTS}, retry_delay={RETRY_DELAY})"
        )
        scripted = {*FLAKY, BROKEN, BUSY}
        delayed = sum(1 for planned in self._plan if planned.delay)
        plain = sum(
            1 for planned in self._plan if not planned.delay and planned.app not in scripted
        )
        self._show.say(
            f"a producer thread puts {len(self._plan)} messages, {BATCH} every {BATCH_PAUSE}s: "
            f"{plain} plain, {delayed} delayed by 1 or 2s,"
        )
        self._show.say(
            f"flaky-app fails once, flakier-app twice, {BROKEN} always, "
            f"{BUSY} asks Retry(delay={RETRY_LATER})"
        )
        handler = self._queues.handler(
            self.handle,
            apps.name,
            units.name,
            concurrency=CONCURRENCY,
            max_attempts=MAX_ATTEMPTS,
            retry_delay=RETRY_DELAY,
        )
        self._started = time.monotonic()
        # Left in reverse: the producer stops before the handler does.
        with _running(handler), _Producer(self._produce) as producer:
            deadline = self._started + SETTLE_TIMEOUT
            # Ticks on a fixed schedule, so slow printing delays no later line.
            ticks = itertools.count(1)
            while not self._settled.wait(self._until(next(ticks) * PROGRESS_EVERY)):
                producer.check()
                self._progress()
                if time.monotonic() >= deadline:
                    self._show.unexpected(f"not all settled within {SETTLE_TIMEOUT:g}s")
                    break
            self._progress()
            _stop(self._show, handler)
        if self._settled.is_set():
            self._show.say(
                f"all {len(self._plan)} settled in {self.elapsed:.2f}s; the handler has stopped"
            )
        self._check()

    def handle(self, message: Message) -> None:
        """Simulate some work, then do what the script says for the app (the handler function)."""
        start = time.monotonic()
        job_id = message.id
        if job_id is None:
            raise TypeError("a handler's messages come from the server, with an id")
        app = message.args[0]
        with self._lock:
            calls = self._calls.setdefault(job_id, [])
            attempt = len(calls) + 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(random.uniform(*WORK))  # simulated work, not cryptography
        outcome = _script(app, attempt)
        with self._lock:
            calls.append(_Call(start, time.monotonic(), outcome))
            self.in_flight -= 1
            self.counts[outcome] += 1
            if self.counts[HANDLED] + self.counts[GIVEN_UP] == len(self._plan):
                self.elapsed = time.monotonic() - self._started
                self._settled.set()
        if outcome == LATER:
            raise Retry(delay=RETRY_LATER)
        if outcome != HANDLED:
            raise _ScriptedFailure(f"{app} failed (attempt {attempt} of {MAX_ATTEMPTS})")

    def _produce(self, stop: threading.Event) -> None:
        for number, planned in enumerate(self._plan):
            if number and number % BATCH == 0 and stop.wait(BATCH_PAUSE):
                return
            before = time.monotonic()
            message = planned.message()
            job_id = self._targets[planned.queue].put(message, delay=planned.delay)
            with self._lock:
                self._server = message.server or ""
                self._puts[job_id] = (planned, before)
                self.put += 1

    def _until(self, seconds: float) -> float:
        """Return the seconds left until ``seconds`` after the producer started (0 if past)."""
        return max(0.0, self._started + seconds - time.monotonic())

    def _progress(self) -> None:
        with self._lock:
            put, counts, in_flight = self.put, self.counts.copy(), self.in_flight
        self._show.say(
            f"{time.monotonic() - self._started:4.1f}s  put {put:2}/{len(self._plan)}  "
            f"handled {counts[HANDLED]:2}  retried {counts[FAILED] + counts[LATER]}  "
            f"buried {counts[GIVEN_UP]}  in flight {in_flight}"
        )

    def _check(self) -> None:
        """Say what happened to each kind of message, and check it on the server."""
        with self._lock:
            puts = dict(self._puts)
            calls = {job_id: list(made) for job_id, made in self._calls.items()}
        if len(puts) != len(self._plan):
            self._show.unexpected(f"only {len(puts)} of {len(self._plan)} messages were put")
            return
        jobs = {planned.app: job_id for job_id, (planned, _) in puts.items()}
        for job_id, (planned, _) in sorted(puts.items()):
            made, wanted = len(calls.get(job_id, [])), _expected_calls(planned.app)
            if made != wanted:
                self._show.unexpected(
                    f"{planned.app} (job {job_id}) had {made} call(s), not {wanted}"
                )
        for app, failures in FLAKY.items():
            gaps = _gaps(calls.get(jobs[app], []))
            again = "later" if failures == 1 else "after each failure"
            self._show.say(
                f"{app} failed {_times(failures)}; called again {_span(gaps)} {again}, then handled"
            )
            self._check_gaps(app, gaps, RETRY_DELAY)
        gaps = _gaps(calls.get(jobs[BUSY], []))
        self._show.say(
            f"{BUSY} asked Retry(delay={RETRY_LATER}); "
            f"called again {_span(gaps)} later, then handled"
        )
        self._check_gaps(BUSY, gaps, RETRY_LATER)
        self._check_buried(jobs[BROKEN])
        self._check_delays(puts, calls)
        self._check_deleted(calls)
        if self.peak > CONCURRENCY:
            self._show.unexpected(f"{self.peak} calls ran at once, with concurrency={CONCURRENCY}")

    def _check_gaps(self, app: str, gaps: list[float], delay: int) -> None:
        early = [gap for gap in gaps if gap < delay - CLOCK_SLACK]
        if early or not gaps:
            self._show.unexpected(f"{app} was called again after {_span(gaps)}, not {delay}s")

    def _check_buried(self, job_id: int) -> None:
        try:
            stats = self._queues.backend.stats_job(JobRef(job_id, self._server))
        except NotFound:
            self._show.unexpected(f"{BROKEN} (job {job_id}) is gone from the server, not buried")
            return
        self._show.say(
            f"{BROKEN} failed {_times(MAX_ATTEMPTS)}; job {job_id} is now {stats.state!r} "
            f"(stats-job: {stats.reserves} reserves, {stats.buries} bury)"
        )
        if stats.state != "buried":
            self._show.unexpected(f"job {job_id} is {stats.state!r}, not 'buried'")

    def _check_delays(
        self, puts: dict[int, tuple[_Put, float]], calls: dict[int, list[_Call]]
    ) -> None:
        waits = []
        for job_id, (planned, before) in puts.items():
            made = calls.get(job_id)
            if planned.delay and made:
                waited = made[0].start - before
                waits.append(waited)
                if waited < planned.delay - CLOCK_SLACK:
                    self._show.unexpected(
                        f"job {job_id}, delayed by {planned.delay}s, was called after {waited:.2f}s"
                    )
        self._show.say(
            f"{len(waits)} delayed messages: first called {_span(waits)} after their put"
        )

    def _check_deleted(self, calls: dict[int, list[_Call]]) -> None:
        handled = [job_id for job_id, made in calls.items() if made and made[-1].outcome == HANDLED]
        left = []
        for job_id in sorted(handled):
            try:
                stats = self._queues.backend.stats_job(JobRef(job_id, self._server))
            except NotFound:
                continue
            left.append(f"{job_id} ({stats.state})")
        if left:
            self._show.unexpected(f"handled jobs still on the server: {', '.join(left)}")
        else:
            self._show.say(
                f"the {len(handled)} handled jobs are gone from the server; "
                f"at most {self.peak} calls ran at once"
            )

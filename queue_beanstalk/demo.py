"""``queue-beanstalk demo``: a handler at work on two queues, then a throughput burst.

Three parts, each printing what it did and what it measured:

1. the plain Queue API by hand: put, get, release, delete, and a body that is
   not JSON being buried;
2. the mission: a producer thread puts messages on two queues while a handler
   with four workers handles them. Some messages are delayed, some fail once or
   twice and are retried, one always fails and ends buried, one asks to be
   tried again later. A line every half second counts what is handled,
   retried, buried and in flight; once every message is settled, the demo
   checks on the server that each one went where the library documents;
3. a burst of no-op messages through a handler, timed from the first put to
   the last call.

With no URL the demo starts a throwaway beanstalkd
(:class:`~queue_beanstalk.testing.BeanstalkdServer`) and stops it at the end,
also on error or Ctrl-C; when beanstalkd is not installed or will not start, it
says so and uses ``memory://``.

Queue names are unique to each run, so the demo may run against a shared
server. The jobs it buries are left there for inspection.

The library never prints; this module does, to the stream it is given. The
handler logs every failure with its traceback; for the demo's own scripted
failures a traceback would say nothing, so they are logged in one line.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple, TextIO

from . import __version__
from .errors import DecodeError, NotFound
from .handler import Handler, Retry
from .message import Message
from .queue_factory import QueueFactory, factory
from .queues import Queue
from .testing import BeanstalkdNotFound, BeanstalkdServer

__all__ = ["run"]

MEMORY_URL = "memory://"
#: Worker threads of each handler.
CONCURRENCY = 4
#: Calls before a failing message is buried.
MAX_ATTEMPTS = 3
#: Seconds before a failed message is tried again.
RETRY_DELAY = 1
#: Seconds the busy app asks for when it raises Retry.
RETRY_LATER = 1
#: The simulated work of one call: between these many seconds.
WORK = (0.01, 0.05)
#: The producer puts this many messages at once, then pauses this many seconds.
BATCH = 6
BATCH_PAUSE = 0.16
#: Seconds between two progress lines.
PROGRESS_EVERY = 0.5
#: Seconds to wait for every message to be settled, and for stopped workers to end.
SETTLE_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: beanstalkd times a delay by its own clock: allow it to disagree with ours by this much.
CLOCK_SLACK = 0.05

#: Apps whose messages fail this many times, then are handled.
FLAKY = {"flaky-app": 1, "flakier-app": 2}
#: The app whose messages always fail, so they end buried.
BROKEN = "broken-app"
#: The app that asks, once, for its message to come back later.
BUSY = "busy-app"

# What one call of the handler function does.
HANDLED = "handled"
FAILED = "failed"  # raises; the handler releases the message for another try
GIVEN_UP = "given up"  # raises on the last attempt; the handler buries the message
LATER = "later"  # raises Retry


def run(url: str | None, messages: int, out: TextIO) -> int:
    """Run the demo, printing each step to ``out``; return 0, or 1 if a step went unexpectedly.

    :param url: the queue server's URL; None starts a throwaway beanstalkd, or
        uses ``memory://`` when that is not possible.
    :param messages: how many no-op messages the throughput burst puts through a handler.
    :param out: where the demo prints.
    :raises ValueError: when ``messages`` is less than 1, or for a bad URL.
    :raises QueueConnectionError: when the server cannot be reached.
    """
    if messages < 1:
        raise ValueError(f"messages must be at least 1, not {messages}")
    started = time.monotonic()
    show = _Output(out)
    # Unwound in reverse: the factory's connections close before the server stops.
    with contextlib.ExitStack() as stack:
        if url is None:
            url = _start_beanstalkd(stack, out)
        queues = stack.enter_context(factory(url))
        stack.enter_context(_scripted_failures_in_one_line())
        run_id = uuid.uuid4().hex[:8]
        apps, units, burst = (f"demo-{run_id}-{name}" for name in ("apps", "units", "burst"))
        print(f"queue_beanstalk {__version__} demo on {url}", file=out)
        print(f"queues: {apps}, {units} and {burst}", file=out)
        _by_hand(show, queues, queues.get(apps))
        mission = _Mission(show, queues, queues.get(apps), queues.get(units))
        mission.run()
        rate = _burst(show, queues, queues.get(burst), messages)
        _summary(show, mission, messages, rate, time.monotonic() - started)
    return 0 if show.as_expected else 1


def _start_beanstalkd(stack: contextlib.ExitStack, out: TextIO) -> str:
    """Start a throwaway beanstalkd stopped by ``stack``; return its URL, or memory:// if none."""
    try:
        server = stack.enter_context(BeanstalkdServer())
    except BeanstalkdNotFound as exc:
        print(f"beanstalkd is not installed ({exc}); using {MEMORY_URL}", file=out)
        return MEMORY_URL
    except (RuntimeError, OSError) as exc:
        print(f"beanstalkd would not start ({exc}); using {MEMORY_URL}", file=out)
        return MEMORY_URL
    print(f"started a throwaway beanstalkd, pid {server.pid}, stopped at the end", file=out)
    return server.url


class _Output:
    """Prints the demo's lines and remembers whether anything went unexpectedly."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.as_expected = True

    def step(self, title: str) -> None:
        print(f"\n{title}", file=self.out, flush=True)

    def say(self, line: str) -> None:
        # Flushed: the progress lines must show while the handler runs, also through a pipe.
        print(f"   {line}", file=self.out, flush=True)

    def unexpected(self, what: str) -> None:
        self.as_expected = False
        self.say(f"UNEXPECTED: {what}")


def _by_hand(show: _Output, queues: QueueFactory, apps: Queue) -> None:
    """Put, get, release, get again and delete one message; then have a non-JSON body buried."""
    show.step("1. the Queue API by hand, on apps")
    job_id = apps.put(Message("regenerate-apprc", ["app-00"]))
    apps.release(apps.get(0))
    again = apps.get(0)
    apps.delete(again)
    if again.id == job_id:
        show.say(f"put job {job_id}, got it, released it, got it again, deleted it")
    else:
        show.unexpected(f"released job {job_id}, but got job {again.id} back")
    queues.backend.put(apps.name, b"not json", priority=0, delay=0, ttr=60)
    try:
        message = apps.get(0)
    except DecodeError as exc:
        state = queues.backend.stats_job(exc.job_id).state
        show.say(f"job {exc.job_id}, b'not json' from another client: get(0) raised DecodeError")
        show.say(f"job {exc.job_id} is now {state!r} (kick-job would make it ready again)")
        if state != "buried":
            show.unexpected(f"job {exc.job_id} is {state!r}, not 'buried'")
        return
    apps.delete(message)
    show.unexpected(f"get(0) decoded job {message.id}, b'not json', as {message!r}")


@dataclass(frozen=True)
class _Put:
    """One message the producer puts: which queue, for which app, with what delay."""

    queue: str
    app: str
    delay: int = 0

    def message(self) -> Message:
        if self.queue == "apps":
            return Message("regenerate-apprc", [self.app])
        return Message("add-units", [self.app, "2"])


def _plan() -> list[_Put]:
    """Return what the producer puts, in order; the slow stories first, so the demo ends sooner."""
    plan = [
        _Put("apps", "flaky-app"),
        _Put("units", "flakier-app"),
        _Put("apps", BROKEN),
        _Put("units", BUSY),
        _Put("apps", "app-01", delay=1),
        _Put("units", "app-02", delay=1),
        _Put("apps", "app-03", delay=2),
        _Put("units", "app-04", delay=2),
    ]
    plan += [_Put("apps" if number % 2 else "units", f"app-{number:02}") for number in range(5, 29)]
    return plan


def _script(app: str, attempt: int) -> str:
    """Return what call number ``attempt`` (1, 2, ...) of the handler function does for ``app``."""
    if app == BUSY and attempt == 1:
        return LATER
    if app == BROKEN or attempt <= FLAKY.get(app, 0):
        return FAILED if attempt < MAX_ATTEMPTS else GIVEN_UP
    return HANDLED


def _expected_calls(app: str) -> int:
    if app == BROKEN:
        return MAX_ATTEMPTS
    return 1 + FLAKY.get(app, 0) + (app == BUSY)


class _ScriptedFailure(Exception):
    """What the demo's handler function raises for a message scripted to fail."""


class _Call(NamedTuple):
    start: float
    end: float
    outcome: str


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
        time.sleep(random.uniform(*WORK))
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
            job_id = self._targets[planned.queue].put(planned.message(), delay=planned.delay)
            with self._lock:
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
            stats = self._queues.backend.stats_job(job_id)
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
                stats = self._queues.backend.stats_job(job_id)
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


class _Producer:
    """Runs ``target(stop)`` in a thread; on leaving, sets ``stop`` and joins the thread."""

    def __init__(self, target: Callable[[threading.Event], None]) -> None:
        self._target = target
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, name="queue-beanstalk-demo-producer", daemon=True
        )

    def check(self) -> None:
        """Raise, in the calling thread, what the producer raised."""
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._target(self._stop)
        except Exception as exc:  # noqa: BLE001 - check() raises it in the main thread
            self._error = exc

    def __enter__(self) -> _Producer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(STOP_TIMEOUT)


@contextlib.contextmanager
def _running(handler: Handler) -> Iterator[Handler]:
    """Start ``handler``; on leaving, also on error or Ctrl-C, stop it and wait for its workers."""
    handler.start()
    try:
        yield handler
    finally:
        if handler.running:
            handler.stop()
        handler.wait(STOP_TIMEOUT)


def _stop(show: _Output, handler: Handler) -> None:
    handler.stop()
    if not handler.wait(STOP_TIMEOUT):
        show.unexpected(f"the handler's workers did not end within {STOP_TIMEOUT:g}s of stop()")


class _Countdown:
    """A no-op handler function that records when it has been called ``total`` times."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.finished = 0.0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.count += 1
            if self.count == self.total:
                self.finished = time.monotonic()
                self.done.set()


def _burst(show: _Output, queues: QueueFactory, burst: Queue, messages: int) -> float:
    """Put ``messages`` no-op messages for a handler; return messages/s, first put to last call."""
    show.step(
        f"3. throughput: {messages} no-op messages through a handler with {CONCURRENCY} workers"
    )
    countdown = _Countdown(messages)
    handler = queues.handler(countdown, burst.name, concurrency=CONCURRENCY)
    with _running(handler):
        started = time.monotonic()
        for number in range(messages):
            burst.put(Message("noop", [str(number)]))
        if not countdown.done.wait(SETTLE_TIMEOUT):
            show.unexpected(
                f"{countdown.count} of {messages} handled {SETTLE_TIMEOUT:g}s after the last put"
            )
            return 0.0
        _stop(show, handler)
    elapsed = countdown.finished - started
    rate = messages / max(elapsed, 1e-9)
    show.say(f"first put to last call: {elapsed:.3f}s, {rate:,.0f} messages/s")
    return rate


def _summary(show: _Output, mission: _Mission, messages: int, rate: float, elapsed: float) -> None:
    counts = mission.counts
    settled = counts[HANDLED] + counts[GIVEN_UP]
    rows = [
        ("messages put", f"{mission.put} on 2 queues"),
        ("handled", f"{counts[HANDLED]}"),
        ("retried", f"{counts[FAILED] + counts[LATER]} ({counts[FAILED]} failed calls, "
                    f"{counts[LATER]} Retry)"),
        ("buried", f"{counts[GIVEN_UP]}"),
        ("elapsed", f"{mission.elapsed:.2f}s, {settled / max(mission.elapsed, 1e-9):.1f} "
                    "messages/s (mostly waiting out delays and retries)"),
        ("in flight", f"at most {mission.peak} at once (concurrency={CONCURRENCY})"),
        ("throughput", f"{rate:,.0f} messages/s ({messages} no-op messages)"),
        ("demo", f"{elapsed:.2f}s in all"),
    ]  # fmt: skip
    print("\nsummary", file=show.out)
    for label, value in rows:
        print(f"   {label:<14}{value}", file=show.out)
    if not show.as_expected:
        print("some steps did not go as expected: see the UNEXPECTED lines", file=show.out)


@contextlib.contextmanager
def _scripted_failures_in_one_line() -> Iterator[None]:
    """While the demo runs, log the handler's reports of scripted failures without a traceback."""
    logger = logging.getLogger("queue_beanstalk")
    logger.addFilter(_shorten_scripted_failure)
    try:
        yield
    finally:
        logger.removeFilter(_shorten_scripted_failure)


def _shorten_scripted_failure(record: logging.LogRecord) -> bool:
    failure = record.exc_info[1] if record.exc_info else None
    if isinstance(failure, _ScriptedFailure):
        record.msg = f"{record.getMessage()}: {failure}"
        record.args = ()
        record.exc_info = None
    return True


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _gaps(calls: list[_Call]) -> list[float]:
    """Return the seconds between the end of each call and the start of the next."""
    return [after.start - before.end for before, after in itertools.pairwise(calls)]


def _span(seconds: list[float]) -> str:
    """Return ``1.00s``, or ``1.00-2.01s`` for a range; ``?`` when there is nothing to show."""
    if not seconds:
        return "?"
    low, high = min(seconds), max(seconds)
    return f"{low:.2f}s" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}s"

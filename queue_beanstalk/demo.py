"""``queue-beanstalk demo``: the Queue API by hand, a handler at work on two queues, a burst.

1. put, get, release, get again and delete a message; a body that is not JSON
   makes ``get`` raise DecodeError and is buried;
2. a handler with four workers on two queues handles 32 messages: some delayed,
   some failing and retried, one failing every time and so buried, one raising Retry;
3. a burst of no-op messages through a handler, timed.

With no URL the demo starts a throwaway beanstalkd, or uses ``memory://`` when
it cannot. Queue names are unique to each run; buried jobs are left for inspection.
The demo shows and does not check: it returns a :class:`Summary` of what it put
and when each call ran, which ``tests/test_demo.py`` checks against the server.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, TextIO

from . import __version__
from .backend import JobRef
from .errors import DecodeError
from .handler import Handler
from .message import Message
from .queue_factory import QueueFactory, factory
from .queues import Queue
from .retries import Retry
from .testing import BeanstalkdNotFound, BeanstalkdServer

__all__ = ["Call", "Put", "Summary", "run", "run_with"]

MEMORY_URL = "memory://"
CONCURRENCY = 4  # worker threads of each handler
MAX_ATTEMPTS = 3
RETRY_DELAY = 1  # seconds before a failed message is tried again, and the Retry's delay
WORK = 0.02  # seconds of simulated work in each call of part 2
TIMEOUT = 20.0  # seconds for the messages of a part to be settled, and for workers to end

FLAKY = {"flaky-app": 1, "flakier-app": 2}  # fail this many times, then are handled
BROKEN = "broken-app"  # fails every time, so it ends buried
BUSY = "busy-app"  # raises Retry once
DELAYED = {"app-01": 1, "app-02": 1, "app-03": 2, "app-04": 2}  # put with this delay
PLAIN = [f"app-{number:02}" for number in range(5, 29)]

# What one call of the handler function does.
HANDLED, FAILED, GIVEN_UP, RETRIED = "handled", "failed", "failed, given up", "raised Retry"


class Put(NamedTuple):
    """One message of part 2: for which app, with what delay, and when it was put."""

    app: str
    delay: int
    job: JobRef
    at: float  # time.monotonic() just before the put


class Call(NamedTuple):
    """One call of the handler function of part 2, timed by time.monotonic()."""

    start: float
    end: float
    outcome: str


@dataclass(frozen=True)
class Summary:
    """What the demo did, for whoever wants to check it against the server."""

    queues: tuple[str, ...]  # apps, units, burst
    by_hand: tuple[JobRef, ...]  # part 1's message as put, as got, as got again
    undecodable: JobRef | None  # the body that is not JSON; None if get() decoded it
    puts: tuple[Put, ...]
    calls: Mapping[JobRef, tuple[Call, ...]]  # part 2's calls, by job
    burst: int  # the no-op messages the burst's handler was called with
    settled: bool  # whether every message of parts 2 and 3 was settled within TIMEOUT


class ScriptedFailure(Exception):
    """What the handler function of part 2 raises for a message scripted to fail."""


def run(url: str | None, messages: int, out: TextIO) -> Summary:
    """Run the demo, printing each step to ``out``; return what it did.

    :param url: the queue server's URL; None starts a throwaway beanstalkd, or
        uses ``memory://`` when that is not possible.
    :param messages: how many no-op messages the burst puts through a handler.
    :param out: where the demo prints.
    :raises ValueError: when ``messages`` is less than 1, or for a bad URL.
    :raises QueueConnectionError: when the server cannot be reached.
    """
    # Unwound in reverse: the factory's connections close before the server stops.
    with contextlib.ExitStack() as stack:
        if url is None:
            url = _start_beanstalkd(stack, out)
        queues = stack.enter_context(factory(url))
        _print(out, f"queue_beanstalk {__version__} demo on {url}")
        return run_with(queues, messages, out)


def run_with(queues: QueueFactory, messages: int, out: TextIO) -> Summary:
    """Run the demo on new queues of ``queues``, which is left open; as :func:`run`."""
    if messages < 1:
        raise ValueError(f"messages must be at least 1, not {messages}")
    run_id = uuid.uuid4().hex[:8]
    apps, units, burst = (
        queues.get(f"demo-{run_id}-{part}") for part in ("apps", "units", "burst")
    )
    _print(out, f"queues: {apps.name}, {units.name} and {burst.name}")
    logger = logging.getLogger("queue_beanstalk")
    logger.addFilter(_without_traceback)
    try:
        by_hand, undecodable = _by_hand(queues, apps, out)
        puts, mission = _mission(queues, apps, units, out)
        done = _burst(queues, burst, messages, out)
    finally:
        logger.removeFilter(_without_traceback)
    calls = {job: tuple(made) for job, made in mission.calls.items()}
    settled = mission.settled.is_set() and done.settled.is_set()
    names = (apps.name, units.name, burst.name)
    return Summary(names, by_hand, undecodable, puts, calls, len(done.calls), settled)


def _start_beanstalkd(stack: contextlib.ExitStack, out: TextIO) -> str:
    """Start a throwaway beanstalkd stopped by ``stack``; return its URL, or memory:// if none."""
    try:
        server = stack.enter_context(BeanstalkdServer())
    except (RuntimeError, OSError) as exc:  # BeanstalkdNotFound is a RuntimeError
        why = "is not installed" if isinstance(exc, BeanstalkdNotFound) else "would not start"
        _print(out, f"beanstalkd {why} ({exc}); using {MEMORY_URL}")
        return MEMORY_URL
    _print(out, f"started a throwaway beanstalkd, pid {server.pid}, stopped at the end")
    return server.url


def _by_hand(
    queues: QueueFactory, apps: Queue, out: TextIO
) -> tuple[tuple[JobRef, ...], JobRef | None]:
    _print(out, "\n1. the Queue API by hand, on apps")
    message = Message("regenerate-apprc", ["app-00"])
    apps.put(message)
    got = apps.get(0)
    apps.release(got)
    again = apps.get(0)
    apps.delete(again)
    _say(out, f"put job {message.id}; got it, released it, got it again, deleted it")
    by_hand = (_ref(message), _ref(got), _ref(again))
    queues.backend.put(apps.name, b"not json", priority=0, delay=0, ttr=60)
    try:
        decoded = apps.get(0)
    except DecodeError as exc:
        job = JobRef(exc.job_id, exc.server or "")
        state = queues.backend.stats_job(job).state
        _say(out, f"job {job.id}, b'not json' from another client: get(0) raised DecodeError")
        _say(out, f"job {job.id} is now {state!r} (kick-job would make it ready again)")
        return by_hand, job
    apps.delete(decoded)
    _say(out, f"get(0) decoded b'not json' as {decoded!r}")
    return by_hand, None


def _mission(
    queues: QueueFactory, apps: Queue, units: Queue, out: TextIO
) -> tuple[tuple[Put, ...], _Script]:
    settings = f"max_attempts={MAX_ATTEMPTS}, retry_delay={RETRY_DELAY}"
    _print(out, f"\n2. a handler with {CONCURRENCY} workers on apps and units ({settings})")
    _say(out, f"flaky-app fails once, flakier-app twice, {BROKEN} every time;")
    _say(out, f"{BUSY} raises Retry once; app-01 to app-04 are put with a delay of 1 or 2s")
    plan = [*FLAKY, BROKEN, BUSY, *DELAYED, *PLAIN]  # the slow stories first: the demo ends sooner
    script = _Script(len(plan), WORK, out, shown={*FLAKY, BROKEN, BUSY, *DELAYED})
    handler = queues.handler(
        script,
        apps.name,
        units.name,
        concurrency=CONCURRENCY,
        max_attempts=MAX_ATTEMPTS,
        retry_delay=RETRY_DELAY,
    )
    with _running(handler, out):
        puts = tuple(_put(apps if n % 2 else units, app) for n, app in enumerate(plan))
        _say(out, f"put {len(puts)} messages; the calls of the other {len(PLAIN)} go unprinted")
        settled = script.settled.wait(TIMEOUT)
    handled, given_up = script.counts[HANDLED], script.counts[GIVEN_UP]
    took = f"in {script.last - script.started:.2f}s" if settled else f"not all in {TIMEOUT:g}s"
    _say(out, f"{handled} handled, {given_up} given up, {took}; the handler has stopped")
    broken = next(put.job for put in puts if put.app == BROKEN)
    stats = queues.backend.stats_job(broken)
    counts = f"stats-job: {stats.reserves} reserves, {stats.buries} bury"
    _say(out, f"{BROKEN}'s job {broken.id} is now {stats.state!r} ({counts})")
    return puts, script


def _put(queue: Queue, app: str) -> Put:
    action = "regenerate-apprc" if queue.name.endswith("-apps") else "add-units"
    message, delay, at = Message(action, [app]), DELAYED.get(app, 0), time.monotonic()
    queue.put(message, delay=delay)
    return Put(app, delay, _ref(message), at)


def _burst(queues: QueueFactory, burst: Queue, messages: int, out: TextIO) -> _Script:
    _print(out, f"\n3. {messages} no-op messages through a handler with {CONCURRENCY} workers")
    script = _Script(messages, 0.0, out, shown=set())
    with _running(queues.handler(script, burst.name, concurrency=CONCURRENCY), out):
        started = time.monotonic()
        for number in range(messages):
            burst.put(Message("noop", [str(number)]))
        if script.settled.wait(TIMEOUT):
            elapsed = script.last - started
            rate = messages / max(elapsed, 1e-9)
            _say(out, f"first put to last call: {elapsed:.3f}s, {rate:,.0f} messages/s")
        else:
            _say(out, f"not all handled within {TIMEOUT:g}s of the last put")
    return script


class _Script:
    """The handler function: does what the script says for each app, and records each call."""

    def __init__(self, total: int, work: float, out: TextIO, shown: set[str]) -> None:
        self.total, self.work, self.out, self.shown = total, work, out, shown
        self.started = time.monotonic()
        self.calls: dict[JobRef, list[Call]] = {}  # written and read under _lock
        self.counts: Counter[str] = Counter()
        self.settled = threading.Event()  # set by the call that settles the last message
        self.last = 0.0  # when that call ended
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        start, job, app = time.monotonic(), _ref(message), message.args[0]
        with self._lock:
            attempt = len(self.calls.setdefault(job, [])) + 1
        time.sleep(self.work)
        if app == BUSY and attempt == 1:
            outcome = RETRIED
        elif app == BROKEN or attempt <= FLAKY.get(app, 0):
            outcome = FAILED if attempt < MAX_ATTEMPTS else GIVEN_UP
        else:
            outcome = HANDLED
        with self._lock:
            self.calls[job].append(Call(start, time.monotonic(), outcome))
            self.counts[outcome] += 1
            if app in self.shown:
                queue = (message.queue or "").rsplit("-", 1)[-1]  # apps or units
                when = f"{start - self.started:5.2f}s"
                _say(self.out, f"{when}  {queue:<5}  {app:<12}  call {attempt}: {outcome}")
            if self.counts[HANDLED] + self.counts[GIVEN_UP] == self.total:
                self.last = time.monotonic()
                self.settled.set()
        if outcome == RETRIED:
            raise Retry(delay=RETRY_DELAY)
        if outcome != HANDLED:
            raise ScriptedFailure(f"{app} failed (call {attempt} of at most {MAX_ATTEMPTS})")


@contextlib.contextmanager
def _running(handler: Handler, out: TextIO) -> Iterator[None]:
    """Start ``handler``; on leaving, also on error or Ctrl-C, stop it and wait for its workers."""
    handler.start()
    try:
        yield
    finally:
        if handler.running:
            handler.stop()
        if not handler.wait(TIMEOUT):
            _say(out, f"the handler's workers did not end within {TIMEOUT:g}s of stop()")


def _without_traceback(record: logging.LogRecord) -> bool:
    """Leave out the traceback of a scripted failure: the line names it, and it says nothing."""
    failure = record.exc_info[1] if record.exc_info else None
    if isinstance(failure, ScriptedFailure):
        record.exc_info = None
    return True


def _ref(message: Message) -> JobRef:
    if message.id is None or message.server is None:
        raise TypeError(f"{message!r} was neither put nor got")
    return JobRef(message.id, message.server)


def _say(out: TextIO, line: str) -> None:
    _print(out, f"   {line}")


def _print(out: TextIO, line: str) -> None:
    # Flushed: the calls must show while the handler runs, also through a pipe.
    out.write(f"{line}\n")
    out.flush()

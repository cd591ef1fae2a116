"""``queue-beanstalk demo``: messages going through the API on two queues, step by step.

Each step prints what it did and what came back, with the seconds it measured;
a summary and a short throughput burst close the tour. With no URL the demo
starts a throwaway beanstalkd (:class:`~queue_beanstalk.testing.BeanstalkdServer`)
and stops it at the end, also on error or Ctrl-C; when beanstalkd is not
installed or will not start, it says so and uses ``memory://``.

Queue names are unique to each run, so the demo may run against a shared
server. The one job it buries is left there for inspection.

The library never prints; this module does, to the stream it is given.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import TextIO

from . import __version__
from .errors import DecodeError, Timeout
from .message import Message
from .queue_factory import QueueFactory, factory
from .queues import Queue
from .testing import BeanstalkdNotFound, BeanstalkdServer

__all__ = ["run"]

MEMORY_URL = "memory://"
#: The delay of the delayed message, in seconds; the get that waits for it allows twice as long.
DELAY = 1
#: How long the get on an empty queue waits, in seconds.
EMPTY_WAIT = 1


@dataclass
class _Tally:
    """How many messages went through each operation."""

    put: int = 0
    got: int = 0
    deleted: int = 0
    released: int = 0
    buried: int = 0


def run(url: str | None, messages: int, out: TextIO) -> int:
    """Run the demo, printing each step to ``out``; return 0, or 1 if a step went unexpectedly.

    :param url: the queue server's URL; None starts a throwaway beanstalkd, or
        uses ``memory://`` when that is not possible.
    :param messages: how many messages the throughput burst puts, gets and deletes.
    :param out: where the demo prints.
    :raises ValueError: when ``messages`` is less than 1, or for a bad URL.
    :raises QueueConnectionError: when the server cannot be reached.
    """
    if messages < 1:
        raise ValueError(f"messages must be at least 1, not {messages}")
    started = time.perf_counter()
    # Unwound in reverse: the factory's connections close before the server stops.
    with contextlib.ExitStack() as stack:
        if url is None:
            url = _start_beanstalkd(stack, out)
        queues = stack.enter_context(factory(url))
        tour = _Tour(queues, out)
        print(f"queue_beanstalk {__version__} demo on {url}", file=out)
        print(f"queues: {tour.apps.name} and {tour.units.name}", file=out)
        tour.basics()
        tour.delayed()
        tour.undecodable()
        tour.empty()
        rate = tour.burst(messages)
        tour.summary(time.perf_counter() - started, messages, rate)
    return 0 if tour.as_expected else 1


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


class _Tour:
    """The demo's steps, on two queues of one factory."""

    def __init__(self, queues: QueueFactory, out: TextIO) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.queues = queues
        self.apps = queues.get(f"demo-{run_id}-apps")
        self.units = queues.get(f"demo-{run_id}-units")
        self.out = out
        self.tally = _Tally()
        self.as_expected = True

    def basics(self) -> None:
        """Put three messages on two queues; get them, delete two, release one and get it again."""
        self._step("1. put three messages on two queues, get them, delete two, release one")
        self._put(self.apps, Message("regenerate-apprc", ["app-3"]))
        self._put(self.apps, Message("regenerate-apprc", ["app-7"]))
        self._put(self.units, Message("add-units", ["app-3", "2"]))
        self._delete(self.apps, self._get(self.apps, 0))
        self._delete(self.apps, self._get(self.apps, 0))
        message = self._get(self.units, 0)
        self.units.release(message)
        self.tally.released += 1
        self._say(f"released job {message.id}: it is ready again at once")
        again = self._get(self.units, 0)
        if again.id != message.id:
            self._unexpected(f"got job {again.id} back, not job {message.id}")
        else:
            self._say(f"job {again.id} came back with the same id")
        self._delete(self.units, again)

    def delayed(self) -> None:
        """Put a message with a delay; show a get(0) misses it and a longer get waits for it."""
        self._step(f"2. a message delayed by {DELAY} second")
        job_id = self._put(self.apps, Message("regenerate-apprc", ["app-9"]), delay=DELAY)
        waited, early = self._timed_get(self.apps, 0)
        if early is not None:
            self._unexpected(f"get(0) returned job {early.id} before its delay ended")
            self._delete(self.apps, early)
            return
        self._say(f"get(0) raised Timeout after {waited:.3f}s: job {job_id} is not ready yet")
        waited, message = self._timed_get(self.apps, 2 * DELAY)
        if message is None:
            self._unexpected(f"get({2 * DELAY}) raised Timeout after {waited:.3f}s")
            return
        self._say(f"get({2 * DELAY}) returned job {message.id} after {waited:.3f}s")
        self._delete(self.apps, message)

    def undecodable(self) -> None:
        """Show a body another client wrote, which the codec cannot read, being buried."""
        self._step("3. a body that is not JSON, written by another client")
        job_id = self.queues.backend.put(self.apps.name, b"not json", priority=0, delay=0, ttr=60)
        self._say(f"job {job_id} put straight through the backend: b'not json'")
        try:
            message = self.apps.get(0)
        except DecodeError as exc:
            self.tally.buried += 1
            state = self.queues.backend.stats_job(exc.job_id).state
            self._say(f"get(0) raised DecodeError: {exc}")
            self._say(f"job {exc.job_id} is now {state!r} (kick-job would make it ready again)")
            if state != "buried":
                self._unexpected(f"job {exc.job_id} is {state!r}, not 'buried'")
            return
        self._unexpected(f"get(0) decoded job {message.id} as {_show(message)}")
        self._delete(self.apps, message)

    def empty(self) -> None:
        """Show a get on an empty queue raising Timeout once its timeout has passed."""
        self._step("4. an empty queue")
        waited, message = self._timed_get(self.units, EMPTY_WAIT)
        if message is not None:
            self._unexpected(f"get({EMPTY_WAIT}) on an empty queue returned job {message.id}")
            self._delete(self.units, message)
            return
        self._say(f"get({EMPTY_WAIT}) raised Timeout after {waited:.3f}s")

    def burst(self, messages: int) -> float:
        """Put ``messages`` messages, then get and delete each; return messages per second."""
        self._step(f"5. a burst: put {messages} messages, then get and delete each")
        started = time.perf_counter()
        for number in range(messages):
            self.apps.put(Message("regenerate-apprc", [f"app-{number}"]))
        for _ in range(messages):
            self.apps.delete(self.apps.get(1))
        elapsed = time.perf_counter() - started
        self.tally.put += messages
        self.tally.got += messages
        self.tally.deleted += messages
        rate = messages / max(elapsed, 1e-9)
        self._say(f"{messages} messages in {elapsed:.3f}s: {rate:,.0f} messages/s")
        return rate

    def summary(self, elapsed: float, messages: int, rate: float) -> None:
        """Print the totals."""
        tally = self.tally
        print(
            f"\nsummary: {tally.put} put, {tally.got} got, {tally.deleted} deleted, "
            f"{tally.released} released, {tally.buried} buried in {elapsed:.2f}s",
            file=self.out,
        )
        print(f"burst: {messages} messages at {rate:,.0f} messages/s", file=self.out)
        if not self.as_expected:
            print("some steps did not go as expected: see the UNEXPECTED lines", file=self.out)

    def _put(self, queue: Queue, message: Message, delay: int = 0) -> int:
        job_id = queue.put(message, delay=delay)
        self.tally.put += 1
        after = f" with delay={delay}" if delay else ""
        self._say(f"put job {job_id} on {_short(queue)}{after}: {_show(message)}")
        return job_id

    def _get(self, queue: Queue, timeout: float) -> Message:
        message = queue.get(timeout)
        self.tally.got += 1
        self._say(f"got job {message.id} from {_short(queue)}: {_show(message)}")
        return message

    def _timed_get(self, queue: Queue, timeout: float) -> tuple[float, Message | None]:
        """Return the seconds a get took and what it got, None on Timeout."""
        started = time.perf_counter()
        try:
            message = queue.get(timeout)
        except Timeout:
            return time.perf_counter() - started, None
        self.tally.got += 1
        return time.perf_counter() - started, message

    def _delete(self, queue: Queue, message: Message) -> None:
        queue.delete(message)
        self.tally.deleted += 1
        self._say(f"deleted job {message.id}")

    def _unexpected(self, what: str) -> None:
        self.as_expected = False
        self._say(f"UNEXPECTED: {what}")

    def _step(self, title: str) -> None:
        print(f"\n{title}", file=self.out)

    def _say(self, line: str) -> None:
        print(f"   {line}", file=self.out)


def _short(queue: Queue) -> str:
    """Return the queue's name without the run's unique prefix."""
    return queue.name.rsplit("-", 1)[-1]


def _show(message: Message) -> str:
    return " ".join((message.action, *message.args))

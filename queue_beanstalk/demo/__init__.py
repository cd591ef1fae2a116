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

The library never prints; this package does, to the stream it is given. Here
live the entry point, the server it runs on, parts 1 and 3, and the order of
it all; the mission is in ``mission``, what it puts and what each call does in
``script``, the threads and their deadlines in ``threads``, and what is printed
and logged in ``output``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import TextIO

from .. import __version__
from ..backend import JobRef
from ..errors import DecodeError
from ..message import Message
from ..queue_factory import QueueFactory, factory
from ..queues import Queue
from ..testing import BeanstalkdNotFound, BeanstalkdServer
from .mission import _Mission
from .output import _Output, _scripted_failures_in_one_line, _summary
from .script import CONCURRENCY
from .threads import SETTLE_TIMEOUT, _running, _stop

__all__ = ["run"]

MEMORY_URL = "memory://"


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
        state = queues.backend.stats_job(JobRef(exc.job_id, exc.server or "")).state
        show.say(f"job {exc.job_id}, b'not json' from another client: get(0) raised DecodeError")
        show.say(f"job {exc.job_id} is now {state!r} (kick-job would make it ready again)")
        if state != "buried":
            show.unexpected(f"job {exc.job_id} is {state!r}, not 'buried'")
        return
    apps.delete(message)
    show.unexpected(f"get(0) decoded job {message.id}, b'not json', as {message!r}")


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

"""The same work done through queue_beanstalk: Queue loops, put_many, a Handler."""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from queue_beanstalk import Message, Queue, QueueFactory

__all__ = [
    "Countdown",
    "PutMany",
    "handler_latency",
    "handler_run",
    "prefetch_available",
    "put_many_batches",
    "put_many_of",
    "queue_get_delete_loop",
    "queue_put_loop",
]

#: ``Queue.put_many(messages, delay=0, *, priority=None, ttr=None) -> list[int]``.
PutMany = Callable[[Sequence[Message]], list[int]]


class Countdown:
    """Counts calls from any thread; notes the time of the last expected one.

    The count is ``next()`` on an ``itertools.count``, one call into C that no
    two threads can interleave under CPython's GIL (a free-threaded build would
    need the lock back): no lock, so the harness adds as little as it can to
    what a call of the handler's function costs.

    :param count: how many calls are expected.
    """

    def __init__(self, count: int) -> None:
        self._calls = itertools.count(1)
        self._count = count
        self.done = threading.Event()
        #: ``time.perf_counter()`` at the last expected call.
        self.last = 0.0

    def tick(self, message: object = None) -> None:
        """Count one call (of the handler's function, when passed as it: ``message`` is ignored)."""
        if next(self._calls) == self._count:
            self.last = time.perf_counter()
            self.done.set()


def queue_put_loop(queue: Queue, messages: Sequence[Message]) -> float:
    """Put every message with ``Queue.put``; return the seconds taken."""
    put = queue.put
    start = time.perf_counter()
    for message in messages:
        put(message)
    return time.perf_counter() - start


def queue_get_delete_loop(queue: Queue, count: int) -> float:
    """Get (without waiting) and delete ``count`` messages; return the seconds taken."""
    get, delete = queue.get, queue.delete
    start = time.perf_counter()
    for _ in range(count):
        delete(get(0))
    return time.perf_counter() - start


def put_many_of(queue: Queue) -> PutMany | None:
    """Return ``queue.put_many``, or None in a version of the library without it."""
    put_many: PutMany | None = getattr(queue, "put_many", None)
    return put_many


def put_many_batches(
    put_many: PutMany, messages: Sequence[Message], batch: int
) -> tuple[float, list[int]]:
    """Put ``messages`` with ``put_many``, ``batch`` at a time; return the seconds and the ids."""
    chunks = [messages[first : first + batch] for first in range(0, len(messages), batch)]
    ids: list[int] = []
    start = time.perf_counter()
    for chunk in chunks:
        ids += put_many(chunk)
    return time.perf_counter() - start, ids


def prefetch_available(queues: QueueFactory) -> bool:
    """Whether ``queues.handler`` takes ``prefetch`` (issue 15; older versions do not)."""
    return "prefetch" in inspect.signature(queues.handler).parameters


def handler_run(
    queues: QueueFactory,
    tube: str,
    count: int,
    *,
    concurrency: int,
    sleep: float = 0.0,
    prefetch: int = 1,
) -> float:
    """Handle ``count`` waiting messages with a Handler; return seconds from start() to the last.

    The function does nothing (or sleeps ``sleep`` seconds) and counts. The end
    is the start of the last call: its delete, one round trip later, is not
    counted, and the tube is checked to be empty by the caller.

    :param prefetch: jobs each worker reserves at a time; 1 is passed as no
        keyword at all, so that versions without ``prefetch`` run too.
    """
    countdown = Countdown(count)

    def handle(message: Message) -> None:
        time.sleep(sleep)
        countdown.tick()

    options: dict[str, Any] = {} if prefetch == 1 else {"prefetch": prefetch}
    # A no-op function is the countdown's own tick: one call, as a no-op's.
    function = handle if sleep else countdown.tick
    handler = queues.handler(function, tube, concurrency=concurrency, **options)
    start = time.perf_counter()
    handler.start()
    try:
        if not countdown.done.wait(max(60.0, count * (sleep + 0.01))):
            raise RuntimeError(f"the handler did not handle {count} messages in time")
    finally:
        handler.stop()
        if not handler.wait(30):
            raise RuntimeError("the handler did not stop within 30 s")
    return countdown.last - start


def handler_latency(
    queues: QueueFactory, tube: str, messages: Sequence[Message], *, warmup: int, pause: float
) -> list[float]:
    """Return seconds from each ``Queue.put`` to the start of its callback in a Handler.

    The handler (one worker) is idle in reserve when each message is put: the
    next put waits for the previous callback, then ``pause`` seconds more. The
    first ``warmup`` messages are not counted.
    """
    arrived = threading.Event()
    times: list[float] = []

    def handle(message: Message) -> None:
        times.append(time.perf_counter())
        arrived.set()

    queue = queues.get(tube)
    handler = queues.handler(handle, tube, concurrency=1)
    handler.start()
    delays: list[float] = []
    try:
        for number, message in enumerate(messages):
            arrived.clear()
            sent = time.perf_counter()
            queue.put(message)
            if not arrived.wait(10):
                raise RuntimeError("a put did not reach the callback within 10 s")
            if number >= warmup:
                delays.append(times[-1] - sent)
            time.sleep(pause)
    finally:
        handler.stop()
        handler.wait(30)
    return delays

"""A handler's workers survive whatever the codec, the wire or the backend raise.

Failures are injected on every backend; what a worker cannot survive fails the
handler visibly (``running`` False, ``failure`` set). Also: settling never
skipped for want of a priority, ``wait()`` from a callback, start after stop,
and a clean stop that logs nothing alarming.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import pytest

from queue_beanstalk import (
    Handler,
    HandlerNotRunning,
    JsonCodec,
    Message,
    QueueConnectionError,
    QueueFactory,
    Retry,
)
from queue_beanstalk.backend import Consumer, Lease, Prepare, Reserved

from ..support import eventually, gone, put_job
from .cases import BackendCase


class Boom(Exception):
    """An error no layer of the library knows about."""


class Fatal(BaseException):
    """An error a worker cannot catch as an Exception: it must fail the handler."""


class FlakyCodec(JsonCodec):
    """A JSON codec whose decode raises a non-ValueError the first ``times`` times."""

    def __init__(self, times: int) -> None:
        self.left = times

    def decode(self, body: bytes) -> Message:
        if self.left > 0:
            self.left -= 1
            raise Boom("the codec fell over")
        return super().decode(body)


class FlakyConsumer(Consumer):
    """Wraps a consumer; its reserves raise ``errors`` in turn before working."""

    def __init__(self, inner: Consumer, errors: list[BaseException]) -> None:
        self.backend = inner.backend
        self._inner = inner
        self._errors = errors

    def reserve(self, timeout: float) -> Reserved | None:
        if self._errors:
            raise self._errors.pop(0)
        return self._inner.reserve(timeout)

    def reserve_batch(
        self,
        deletes: Sequence[Lease],
        count: int,
        timeout: float,
        prepare: Prepare | None = None,
    ) -> tuple[list[Lease], list[Reserved]]:
        if self._errors:
            raise self._errors.pop(0)
        return self._inner.reserve_batch(deletes, count, timeout, prepare)

    def interrupt(self) -> None:
        self._inner.interrupt()

    def close(self) -> None:
        self._inner.close()


def _flaky_consumers(
    monkeypatch: pytest.MonkeyPatch, queues: QueueFactory, errors: list[BaseException]
) -> None:
    backend = queues.backend
    make = backend.consumer

    def consumer(tubes: Sequence[str]) -> Consumer:
        return FlakyConsumer(make(tubes), errors)

    monkeypatch.setattr(backend, "consumer", consumer)


def _handled(
    queues: QueueFactory, codec: JsonCodec | None = None
) -> tuple[QueueFactory, list[str], Callable[[Message], None]]:
    made = queues if codec is None else QueueFactory(queues.backend, codec=codec)
    seen: list[str] = []
    return made, seen, lambda message: seen.append(message.action)


class SurvivalContract(BackendCase):
    """What a handler's workers survive, and how they fail when they cannot, on every backend."""

    def test_a_codec_raising_anything_does_not_kill_the_worker(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        made, seen, func = _handled(queues, FlakyCodec(times=1))
        queue = made.get(tube)
        jobs = {action: put_job(queue, Message(action)) for action in ("first", "second")}
        handler = made.handler(func, tube)
        stopping.append(handler)
        handler.start()
        eventually(lambda: len(seen) == 1)  # the other one met the failing codec
        assert handler.running
        # The message the codec failed on was not lost: buried for inspection.
        (failed,) = set(jobs) - set(seen)
        assert queues.backend.stats_job(jobs[failed]).state == "buried"

    @pytest.mark.parametrize(
        "error",
        [Boom("a bug below"), OverflowError("huge"), MemoryError(), RecursionError("deep")],
        ids=["exception", "overflow", "memory", "recursion"],
    )
    def test_a_reserve_raising_anything_is_survived_with_backoff(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
        error: BaseException,
    ) -> None:
        _flaky_consumers(monkeypatch, queues, [error, error])
        made, seen, func = _handled(queues)
        made.get(tube).put(Message("after"))
        handler = made.handler(func, tube)
        stopping.append(handler)
        handler.start()
        eventually(lambda: seen == ["after"])
        assert handler.running
        assert handler.failure is None
        logged = [r for r in caplog.records if r.name == "queue_beanstalk" and r.exc_info]
        assert logged, "the error was not logged with its traceback"

    def test_an_error_a_worker_cannot_survive_fails_the_handler_visibly(
        self,
        queues: QueueFactory,
        tube: str,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        fatal = Fatal("the worker cannot go on")
        _flaky_consumers(monkeypatch, queues, [fatal])
        handler = queues.handler(lambda message: None, tube, concurrency=3)
        handler.start()
        eventually(lambda: not handler.running)
        assert handler.failure is fatal
        assert "failed" in repr(handler)
        assert handler.wait(10), "the other workers did not stop"
        with pytest.raises(HandlerNotRunning, match="failed"):
            handler.stop()
        assert any(r.levelno == logging.CRITICAL for r in caplog.records)
        # A failed handler can be started again, and then works.
        seen: list[str] = []
        queues.get(tube).put(Message("again"))
        handler._func = lambda message: seen.append(message.action)
        handler.start()
        try:
            assert handler.running
            assert handler.failure is None
            eventually(lambda: seen == ["again"])
        finally:
            handler.stop()
            assert handler.wait(10)

    def test_a_failing_settle_does_not_kill_the_worker(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        backend = queues.backend
        release = backend.release
        calls: list[int] = []

        def broken_release(lease: Lease, *, priority: int, delay: int) -> None:
            calls.append(lease.job_id)
            if len(calls) == 1:
                raise Boom("release fell over")
            release(lease, priority=priority, delay=delay)

        monkeypatch.setattr(backend, "release", broken_release)
        seen: list[str] = []

        def func(message: Message) -> None:
            seen.append(message.action)
            if message.action == "retry":
                raise Retry(0)

        queue = queues.get(tube)
        queue.put(Message("retry"), ttr=1)
        queue.put(Message("next"))
        handler = queues.handler(func, tube)
        stopping.append(handler)
        handler.start()
        eventually(lambda: "next" in seen)
        assert handler.running

    def test_a_retry_is_released_even_when_its_priority_cannot_be_looked_up(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def no_stats(job_id: int) -> object:
            raise QueueConnectionError("stats-job failed", "test")

        monkeypatch.setattr(queues.backend, "stats_job", no_stats)
        tries: list[float] = []

        def func(message: Message) -> None:
            tries.append(time.monotonic())
            if len(tries) == 1:
                raise Retry(0)

        queues.get(tube).put(Message("again"), ttr=60)
        handler = queues.handler(func, tube)
        stopping.append(handler)
        handler.start()
        # Released at once: not left to wait out its 60 s time-to-run.
        eventually(lambda: len(tries) == 2, timeout=10)

    def test_wait_from_a_callback_waits_for_the_others_and_the_message_is_deleted(
        self, queues: QueueFactory, tube: str
    ) -> None:
        results: list[object] = []
        job = put_job(queues.get(tube), Message("wait"))
        handler: Handler

        def func(message: Message) -> None:
            handler.stop()
            results.append(handler.wait(5))

        handler = queues.handler(func, tube, concurrency=2)
        handler.start()
        eventually(lambda: results == [True])
        assert handler.wait(10)
        assert not handler.running
        eventually(lambda: gone(queues, job))

    def test_a_clean_stop_under_load_logs_no_warning(
        self, queues: QueueFactory, tube: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="queue_beanstalk")
        queue = queues.get(tube)
        feeding = threading.Event()

        def feed() -> None:
            while not feeding.is_set():
                queue.put_many([Message("load")] * 20)
                time.sleep(0.001)

        producer = threading.Thread(target=feed)
        producer.start()
        try:
            for _ in range(40):
                handler = queues.handler(lambda message: None, tube, concurrency=2)
                handler.start()
                time.sleep(0.005)
                handler.stop()
                assert handler.wait(10)
        finally:
            feeding.set()
            producer.join()
        alarming = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert alarming == []

    def test_start_after_stop_lets_a_callback_still_running_call_wait(
        self, queues: QueueFactory, tube: str
    ) -> None:
        entered, go = threading.Event(), threading.Event()
        waited: list[bool] = []
        handler: Handler

        def func(message: Message) -> None:
            if message.action == "first":
                entered.set()
                go.wait(10)
                waited.append(handler.wait(0.5))

        queues.get(tube).put(Message("first"))
        handler = queues.handler(func, tube)
        handler.start()
        assert entered.wait(10)
        handler.stop()
        starter = threading.Thread(target=handler.start)
        starter.start()
        starter.join(0.2)  # start() now waits for the callback's worker to end
        go.set()
        starter.join(10)
        try:
            assert not starter.is_alive(), "start() and wait() deadlocked"
            assert waited == [True]  # its fellow workers (none) have ended
            assert handler.running
        finally:
            handler.stop()
            assert handler.wait(10)

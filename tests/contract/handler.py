"""The Handler's contract: start/stop/wait, and what happens to a message."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import pytest

from queue_beanstalk import (
    Bury,
    Handler,
    HandlerNotRunning,
    InvalidName,
    Message,
    NotFound,
    QueueFactory,
    Retry,
)

from ..support import CallsAtOnce, eventually, gone, put_job
from .cases import BackendCase, RawPut


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("queue-beanstalk-worker")]


class HandlerContract(BackendCase):
    """What a Handler does on every backend."""

    def test_wait_on_a_handler_never_started_returns_at_once(
        self, queues: QueueFactory, tube: str
    ) -> None:
        handler = queues.handler(lambda message: None, tube)
        assert not handler.running
        assert handler.wait(0)

    def test_stop_when_not_running_raises(self, queues: QueueFactory, tube: str) -> None:
        handler = queues.handler(lambda message: None, tube)
        with pytest.raises(HandlerNotRunning):
            handler.stop()
        with pytest.raises(RuntimeError):
            handler.stop()
        handler.start()
        handler.stop()
        with pytest.raises(HandlerNotRunning):
            handler.stop()
        assert handler.wait(5)

    def test_an_idle_handler_stops_within_about_a_second(
        self, queues: QueueFactory, tube: str
    ) -> None:
        handler = queues.handler(lambda message: None, tube, concurrency=3)
        handler.start()
        assert handler.running
        time.sleep(0.3)  # let every worker block in its reserve
        started = time.monotonic()
        handler.stop()
        assert not handler.running
        assert handler.wait(5)
        assert time.monotonic() - started < 1.0

    def test_start_from_many_threads_starts_one_set_of_workers(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        handled: Counter[str] = Counter()
        lock = threading.Lock()

        def count(message: Message) -> None:
            with lock:
                handled[message.args[0]] += 1

        handler = queues.handler(count, tube, concurrency=2)
        stopping.append(handler)
        before = len(_workers())
        barrier = threading.Barrier(8)

        def start() -> None:
            barrier.wait()
            handler.start()

        starters = [threading.Thread(target=start) for _ in range(8)]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        assert len(_workers()) - before == 2
        queue = queues.get(tube)
        for number in range(40):
            queue.put(Message("n", [str(number)]))
        self.drain(queues, tube, until=lambda: sum(handled.values()) >= 40)
        handler.stop()
        assert handler.wait(5)
        assert handled == Counter({str(number): 1 for number in range(40)})

    def test_wait_returns_only_after_the_running_callback_and_its_delete(
        self, queues: QueueFactory, tube: str
    ) -> None:
        entered, release = threading.Event(), threading.Event()

        def slow(message: Message) -> None:
            entered.set()
            release.wait(10)

        handler = queues.handler(slow, tube)
        job = put_job(queues.get(tube), Message("slow"))
        handler.start()
        assert entered.wait(5)
        handler.stop()
        assert not handler.wait(0.3)
        release.set()
        assert handler.wait(5)
        with pytest.raises(NotFound):
            queues.backend.stats_job(job)

    def test_a_failing_message_is_tried_max_attempts_times_then_buried(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        calls: list[float] = []

        def fail(message: Message) -> None:
            calls.append(time.monotonic())
            raise RuntimeError("always fails")

        handler = queues.handler(fail, tube, max_attempts=3, retry_delay=0)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("doomed"))
        handler.start()
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
        stats = queues.backend.stats_job(job)
        assert (stats.reserves, stats.releases, stats.buries) == (3, 2, 1)
        assert len(calls) == 3
        failures = [r for r in caplog.records if "handler function failed" in r.getMessage()]
        assert len(failures) == 3
        assert failures[0].exc_info is not None
        assert any("giving up" in r.getMessage() for r in caplog.records)

    def test_a_call_past_its_time_limit_gives_its_message_back(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        first_call = threading.Event()
        release_first = threading.Event()
        calls: list[int | None] = []

        def hang_once(message: Message) -> None:
            calls.append(message.id)
            if len(calls) == 1:
                first_call.set()
                assert release_first.wait(20)

        handler = queues.handler(hang_once, tube, concurrency=2, time_limit=1)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("hangs"))
        handler.start()
        assert first_call.wait(10)
        # Past the limit, the message goes back and the other worker takes it.
        self.drain(queues, tube, until=lambda: len(calls) == 2)
        assert calls == [job.id, job.id]
        assert any("past its time limit" in r.getMessage() for r in caplog.records)
        release_first.set()
        eventually(lambda: any("returned" in r.getMessage() for r in caplog.records))
        self.drain(queues, tube, until=lambda: gone(queues, job))  # by the second call's worker
        assert calls == [job.id, job.id]

    def test_each_kick_gives_a_buried_message_a_fresh_set_of_tries(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        calls: list[int | None] = []

        def fail(message: Message) -> None:
            calls.append(message.id)
            raise RuntimeError("fails until the bug is fixed")

        handler = queues.handler(fail, tube, max_attempts=3, retry_delay=0)
        stopping.append(handler)
        queue = queues.get(tube)
        job = put_job(queue, Message("kicked"))
        handler.start()
        for kicks in range(3):
            self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
            assert len(calls) == 3 * (kicks + 1)
            queues.backend.kick_job(job)
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).buries == 4)
        stats = queues.backend.stats_job(job)
        assert (stats.reserves, stats.kicks, stats.buries) == (12, 3, 4)

    def test_a_failing_message_waits_retry_delay_between_attempts(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        calls: list[float] = []

        def fail_once(message: Message) -> None:
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise ValueError("first try fails")

        attempts_seen: list[int] = []

        def delay(attempt: int) -> float:
            attempts_seen.append(attempt)
            return 1

        handler = queues.handler(fail_once, tube, retry_delay=delay)
        stopping.append(handler)
        queues.get(tube).put(Message("flaky"))
        handler.start()
        self.drain(queues, tube, until=lambda: len(calls) == 2)
        assert calls[1] - calls[0] >= 1.0
        assert attempts_seen == [1]

    def test_one_failing_callback_does_not_stop_the_others(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        done: list[str] = []

        def handle(message: Message) -> None:
            if message.action == "bad":
                raise KeyError("boom")
            done.append(message.args[0])

        handler = queues.handler(handle, tube, max_attempts=1)
        stopping.append(handler)
        queue = queues.get(tube)
        queue.put(Message("bad"))
        for number in range(3):
            queue.put(Message("good", [str(number)]))
        handler.start()
        self.drain(queues, tube, until=lambda: len(done) == 3)
        assert handler.running

    def test_retry_releases_with_its_delay_without_counting_as_a_failure(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        calls: list[float] = []

        def later(message: Message) -> None:
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise Retry(delay=1)

        handler = queues.handler(later, tube, max_attempts=1)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("later"))
        handler.start()
        self.drain(queues, tube, until=lambda: len(calls) == 2 and gone(queues, job))
        assert calls[1] - calls[0] >= 1.0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    def test_a_retry_is_a_try_toward_max_attempts(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        calls: list[int] = []

        def retry_twice_then_fail(message: Message) -> None:
            calls.append(1)
            if len(calls) <= 2:
                raise Retry(0)
            raise RuntimeError("third try fails")

        handler = queues.handler(retry_twice_then_fail, tube, max_attempts=3, retry_delay=0)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("patient"))
        handler.start()
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
        assert len(calls) == 3

    def test_bury_buries_at_once(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        calls: list[Message] = []

        def bury(message: Message) -> None:
            calls.append(message)
            raise Bury

        handler = queues.handler(bury, tube)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("bury-me"))
        handler.start()
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
        assert queues.backend.stats_job(job).buries == 1
        assert len(calls) == 1

    def test_a_callback_running_past_its_ttr_keeps_the_message(
        self, queues: QueueFactory, tube: str
    ) -> None:
        calls: list[int | None] = []
        finished = threading.Event()

        def slow(message: Message) -> None:
            calls.append(message.id)
            time.sleep(3)
            finished.set()

        handler = queues.handler(slow, tube, concurrency=2)
        job = put_job(queues.get(tube), Message("slow"), ttr=1)
        handler.start()
        # No stats-job while the callback runs: on beanstalkd 1.12, commands from
        # other connections can hold back a TTR expiry and hide a missing touch.
        assert finished.wait(10)
        handler.stop()
        assert handler.wait(5)
        assert calls == [job.id]
        assert gone(queues, job)

    @pytest.mark.parametrize(
        "body", [b"\x00 not json", b"\xc3\x28 not utf-8", b'{"action": ["wrong", "shape"]}']
    )
    def test_an_undecodable_body_is_buried_and_the_next_message_handled(
        self, queues: QueueFactory, tube: str, raw_put: RawPut, stopping: list[Handler], body: bytes
    ) -> None:
        handled: list[Message] = []
        handler = queues.handler(handled.append, tube)
        stopping.append(handler)
        bad_id = raw_put(tube, body)
        queues.get(tube).put(Message("good"))
        handler.start()
        self.drain(queues, tube, until=lambda: len(handled) == 1)
        assert handled == [Message("good")]
        assert queues.backend.stats_job(bad_id).state == "buried"

    def test_concurrency_runs_that_many_callbacks_at_once_and_never_more(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        busy = CallsAtOnce(0.3)
        handler = queues.handler(busy, tube, concurrency=3)
        stopping.append(handler)
        queue = queues.get(tube)
        for _ in range(9):
            queue.put(Message("busy"))
        handler.start()
        self.drain(queues, tube, until=lambda: busy.done == 9)
        assert busy.peak == 3

    def test_a_stopped_handler_starts_again(self, queues: QueueFactory, tube: str) -> None:
        handled: list[Message] = []
        handler = queues.handler(handled.append, tube)
        queue = queues.get(tube)
        for round_number in range(2):
            queue.put(Message("round", [str(round_number)]))
            handler.start()
            self.drain(queues, tube, until=lambda: len(handled) == round_number + 1)  # noqa: B023
            handler.stop()
            assert handler.wait(5)
        assert [message.args for message in handled] == [("0",), ("1",)]

    def test_message_queue_names_where_it_came_from(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        handled: list[tuple[str | None, str]] = []
        lock = threading.Lock()

        def record(message: Message) -> None:
            with lock:
                handled.append((message.queue, message.action))

        handler = queues.handler(record, tube + "-a", tube + "-b", concurrency=2)
        stopping.append(handler)
        queues.get(tube + "-a").put(Message("on-a"))
        queues.get(tube + "-b").put(Message("on-b"))
        handler.start()
        self.drain(queues, tube + "-a", tube + "-b", until=lambda: len(handled) == 2)
        assert sorted(handled) == [(tube + "-a", "on-a"), (tube + "-b", "on-b")]

    def test_a_callback_may_settle_its_message_itself(
        self,
        queues: QueueFactory,
        tube: str,
        stopping: list[Handler],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        queue = queues.get(tube)
        handled: list[Message] = []

        def release_it(message: Message) -> None:
            handled.append(message)
            if len(handled) == 1:
                queue.release(message)

        handler = queues.handler(release_it, tube)
        stopping.append(handler)
        job = put_job(queue, Message("self-settled"))
        handler.start()
        self.drain(queues, tube, until=lambda: len(handled) == 2 and gone(queues, job))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    def test_handler_arguments_are_checked(self, queues: QueueFactory, tube: str) -> None:
        with pytest.raises(TypeError):
            queues.handler("not callable", tube)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one"):
            queues.handler(print)
        with pytest.raises(ValueError, match="concurrency"):
            queues.handler(print, tube, concurrency=0)
        with pytest.raises(ValueError, match="max_attempts"):
            queues.handler(print, tube, max_attempts=0)
        with pytest.raises(ValueError, match="retry_delay"):
            queues.handler(print, tube, retry_delay=-1)
        with pytest.raises(InvalidName):
            queues.handler(print, "bad name")

    def test_a_bad_retry_delay_is_a_failure_not_a_dead_worker(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        with pytest.raises(ValueError, match="Retry delay"):
            Retry(-1)
        calls: list[str] = []

        def handle(message: Message) -> None:
            calls.append(message.action)
            if message.action == "bad" and calls.count("bad") == 1:
                raise Retry(-1)

        handler = queues.handler(handle, tube, retry_delay=0)
        stopping.append(handler)
        queues.get(tube).put(Message("bad"))
        handler.start()
        self.drain(queues, tube, until=lambda: calls.count("bad") == 2)
        queues.get(tube).put(Message("next"))
        self.drain(queues, tube, until=lambda: "next" in calls)

    def test_a_released_or_buried_message_keeps_its_priority(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        seen: list[int | None] = []

        def fail(message: Message) -> None:
            seen.append(message.id)
            raise RuntimeError("fails")

        handler = queues.handler(fail, tube, max_attempts=2, retry_delay=0)
        stopping.append(handler)
        job = put_job(queues.get(tube), Message("urgent"), priority=5)
        handler.start()
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
        stats = queues.backend.stats_job(job)
        assert (stats.releases, stats.priority) == (1, 5)

    def test_the_keeper_ends_after_stop_even_without_wait(
        self, queues: QueueFactory, tube: str
    ) -> None:
        def keepers() -> set[threading.Thread]:
            return {t for t in threading.enumerate() if t.name == "queue-beanstalk-keeper"}

        before = keepers()  # other tests' keepers may still be winding down
        handler = queues.handler(lambda message: None, tube)
        handler.start()
        (ours,) = keepers() - before
        handler.stop()
        eventually(lambda: not ours.is_alive(), timeout=5)
        assert handler.wait(5)

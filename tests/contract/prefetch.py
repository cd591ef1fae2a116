"""A prefetching handler's guarantees: each message started once, kept reserved, given back at stop.

The messages of each test are put with one ``put_many``, which keeps a batch
on one server: so on several servers too, a worker can prefetch all of them.
"""

from __future__ import annotations

import threading
import time

import pytest

from queue_beanstalk import Bury, Handler, Message, QueueFactory, Timeout

from ..support import CallsAtOnce, eventually, gone, ref
from .cases import BackendCase


def _put(queues: QueueFactory, tube: str, count: int, **options: int) -> list[Message]:
    messages = [Message("prefetched", [str(n)]) for n in range(count)]
    queues.get(tube).put_many(messages, **options)
    return messages


class PrefetchContract(BackendCase):
    """What ``handler(prefetch=N)`` guarantees on every backend."""

    def test_every_message_is_handled_once_and_deleted(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        messages = _put(queues, tube, 100)
        handled: list[str] = []
        handler = queues.handler(lambda m: handled.append(m.args[0]), tube, prefetch=32)
        stopping.append(handler)
        handler.start()
        self.drain(queues, tube, until=lambda: len(handled) == 100)
        assert sorted(handled, key=int) == [str(n) for n in range(100)]
        assert all(gone(queues, ref(message)) for message in messages)

    @pytest.mark.parametrize(
        "slow",
        [
            # The second message waits in the worker, prefetched, while the
            # first call runs more than twice its time-to-run.
            pytest.param("0", id="waiting-its-turn"),
            # The first message, handled, waits for its delete to go out with
            # the next reserve, which comes after the second call.
            pytest.param("1", id="waiting-for-its-delete"),
        ],
    )
    def test_a_message_the_worker_holds_stays_reserved_past_its_ttr(
        self, queues: QueueFactory, tube: str, stopping: list[Handler], slow: str
    ) -> None:
        # A time-to-run of 2 s, not 1: the keeper's first touch comes half a
        # second after the reserve, which a loaded machine may stretch.
        messages = _put(queues, tube, 2, ttr=2)
        started, calls = threading.Event(), []

        def slow_one(message: Message) -> None:
            calls.append(message.args[0])
            if message.args[0] == slow:
                started.set()
                time.sleep(5)

        handler = queues.handler(slow_one, tube, prefetch=2)
        stopping.append(handler)
        handler.start()
        assert started.wait(10)
        # Without touches the server would hand the other message to this reserve.
        with pytest.raises(Timeout):
            queues.get(tube).get(timeout=4.5)
        self.drain(queues, tube, until=lambda: all(gone(queues, ref(m)) for m in messages))
        assert calls == ["0", "1"]

    def test_stop_releases_the_messages_not_started_at_once_at_their_priority(
        self, queues: QueueFactory, tube: str
    ) -> None:
        messages = _put(queues, tube, 5, priority=77)
        started, go_on = threading.Event(), threading.Event()
        calls: list[str] = []

        def block_first(message: Message) -> None:
            calls.append(message.args[0])
            started.set()
            assert go_on.wait(10)

        handler = queues.handler(block_first, tube, prefetch=5)
        handler.start()
        assert started.wait(10)
        assert queues.get(tube).stats().reserved == 5
        handler.stop()
        go_on.set()
        assert handler.wait(10)
        # Given back by the time wait() returns: no time-to-run to wait out.
        stats = queues.get(tube).stats()
        assert (stats.ready, stats.reserved) == (4, 0)
        assert calls == ["0"]
        assert gone(queues, ref(messages[0]))
        for message in messages[1:]:
            job = queues.backend.stats_job(ref(message))
            assert (job.state, job.priority, job.releases) == ("ready", 77, 1)
        assert handler.stats().messages[tube]["released"] == 0

    @pytest.mark.slow
    def test_each_message_is_called_once_across_a_stop_and_start(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        # Unstarted messages released at the stop are handled after the start:
        # none is called twice, or lost.
        queue = queues.get(tube)
        for batch in range(20):
            queue.put_many(Message("many", [str(batch * 100 + n)]) for n in range(100))
        calls: list[str] = []
        lock = threading.Lock()

        def record(message: Message) -> None:
            with lock:
                calls.append(message.args[0])

        handler = queues.handler(record, tube, concurrency=3, prefetch=16)
        stopping.append(handler)
        handler.start()
        eventually(lambda: len(calls) >= 500)
        handler.stop()
        assert handler.wait(10)
        assert queue.stats().reserved == 0
        handler.start()

        def drained() -> bool:
            stats = queue.stats()
            return (stats.ready, stats.reserved, stats.buried) == (0, 0, 0)

        self.drain(queues, tube, until=drained)
        assert sorted(calls, key=int) == [str(n) for n in range(2000)]
        assert handler.stats().messages[tube]["deleted"] == 2000

    def test_max_attempts_counts_as_without_prefetch(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        (message,) = _put(queues, tube, 1)
        calls: list[int | None] = []

        def fail(received: Message) -> None:
            calls.append(received.id)
            raise RuntimeError("always")

        handler = queues.handler(fail, tube, prefetch=8, max_attempts=3, retry_delay=0)
        stopping.append(handler)
        handler.start()
        job = ref(message)
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(job).state == "buried")
        assert len(calls) == 3
        assert queues.backend.stats_job(job).reserves == 3

    def test_an_undecodable_body_in_a_batch_is_buried_and_the_rest_handled(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        good = _put(queues, tube, 2)
        bad = queues.backend.put(tube, b"not json", priority=1024, delay=0, ttr=60)
        good += _put(queues, tube, 2)
        calls: list[str] = []
        handler = queues.handler(lambda m: calls.append(m.args[0]), tube, prefetch=8)
        stopping.append(handler)
        handler.start()
        self.drain(queues, tube, until=lambda: queues.backend.stats_job(bad).state == "buried")
        eventually(lambda: len(calls) == 4)
        assert sorted(calls) == sorted(m.args[0] for m in good)

    def test_bury_and_retry_settle_each_prefetched_message_once(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        messages = _put(queues, tube, 6)
        calls: list[str] = []

        def some_buried(message: Message) -> None:
            calls.append(message.args[0])
            if int(message.args[0]) % 2:
                raise Bury("odd")

        handler = queues.handler(some_buried, tube, prefetch=4)
        stopping.append(handler)
        handler.start()
        self.drain(queues, tube, until=lambda: len(calls) == 6)
        assert sorted(calls, key=int) == [str(n) for n in range(6)]
        for n, message in enumerate(messages):
            if n % 2:
                assert queues.backend.stats_job(ref(message)).state == "buried"
            else:
                assert gone(queues, ref(message))

    def test_concurrency_still_bounds_the_calls_at_once(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        busy = CallsAtOnce(0.05)
        _put(queues, tube, 20)
        handler = queues.handler(busy, tube, concurrency=2, prefetch=4)
        stopping.append(handler)
        handler.start()
        self.drain(queues, tube, until=lambda: busy.done == 20)
        assert busy.peak <= 2

    def test_a_burst_handler_with_prefetch_drains_and_stops(
        self, queues: QueueFactory, tube: str
    ) -> None:
        _put(queues, tube, 50)
        handled: list[Message] = []
        handler = queues.handler(handled.append, tube, prefetch=16, burst=True)
        handler.start()
        assert handler.wait(20)
        assert len(handled) == 50
        stats = queues.get(tube).stats()
        assert (stats.ready, stats.reserved, stats.buried) == (0, 0, 0)

    def test_prefetch_over_several_queues_names_each_message_s_queue(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        other = f"{tube}-other"
        _put(queues, tube, 5)
        _put(queues, other, 5)
        seen: list[str | None] = []
        handler = queues.handler(lambda m: seen.append(m.queue), tube, other, prefetch=8)
        stopping.append(handler)
        handler.start()
        self.drain(queues, tube, other, until=lambda: len(seen) == 10)
        assert sorted(seen, key=str) == [tube] * 5 + [other] * 5

    @pytest.mark.parametrize(
        ("prefetch", "error"), [(0, ValueError), (1001, ValueError), ("2", TypeError)]
    )
    def test_prefetch_is_checked(
        self, queues: QueueFactory, tube: str, prefetch: object, error: type[Exception]
    ) -> None:
        with pytest.raises(error, match="prefetch"):
            queues.handler(print, tube, prefetch=prefetch)  # type: ignore[arg-type]

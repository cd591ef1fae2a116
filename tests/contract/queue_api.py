"""The queue API's contract: put, get, delete, release, bury, touch, names, limits, threads."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from queue_beanstalk import (
    DecodeError,
    InvalidName,
    Message,
    MessageTooBig,
    NotFound,
    QueueError,
    QueueFactory,
    Timeout,
)
from queue_beanstalk.backend import JobRef, Lease, Reserved

from ..support import put_job
from .cases import BackendCase, RawPut

# beanstalkd waits in whole seconds, so a wait may end up to a second late;
# the rest is room for a loaded machine.
LATE = 1.0 + 0.5


class QueueContract(BackendCase):
    """What a Queue does on every backend."""

    def test_round_trip_sets_id_and_queue(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        sent = Message("regenerate-apprc", ["myapp"])
        job_id = queue.put(sent)
        assert sent.id == job_id
        assert sent.queue == tube
        got = queue.get(timeout=1)
        assert got == sent
        assert got.id == job_id
        assert got.queue == tube
        assert got.args == ("myapp",)
        queue.delete(got)

    def test_no_args_round_trip(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("ping"))
        got = queue.get(timeout=1)
        assert got == Message("ping")
        assert got.args == ()
        queue.delete(got)

    def test_get_on_empty_queue_times_out_not_early(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        started = time.monotonic()
        with pytest.raises(Timeout):
            queue.get(timeout=1.3)
        waited = time.monotonic() - started
        assert 1.3 <= waited < 1.3 + LATE

    def test_timeout_is_also_a_builtin_timeout_error(self, queues: QueueFactory, tube: str) -> None:
        with pytest.raises(TimeoutError):
            queues.get(tube).get(timeout=timedelta(0))

    def test_get_zero_polls(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        started = time.monotonic()
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        assert time.monotonic() - started < 0.5

    def test_get_waits_for_a_put_from_another_thread(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        timer = threading.Timer(0.2, queue.put, args=(Message("late"),))
        timer.start()
        try:
            got = queue.get(timeout=5)
        finally:
            timer.join()
        assert got == Message("late")
        queue.delete(got)

    def test_delayed_message_is_not_available_before_its_delay(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        put_at = time.monotonic()
        queue.put(Message("later"), delay=1)
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        got = queue.get(timeout=3)
        assert time.monotonic() - put_at >= 1.0
        assert got == Message("later")
        queue.delete(got)

    def test_a_fraction_of_a_second_delay_is_rounded_up_not_down(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("soon"), delay=0.2)
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        got = queue.get(timeout=timedelta(seconds=3))
        queue.delete(got)

    def test_queues_are_isolated(self, queues: QueueFactory, tube: str) -> None:
        first, second = queues.get(tube), queues.get(tube + "-other")
        first.put(Message("for-first"))
        with pytest.raises(Timeout):
            second.get(timeout=0)
        got = first.get(timeout=1)
        assert got.queue == tube
        first.delete(got)

    def test_one_reserve_may_watch_several_tubes(self, queues: QueueFactory, tube: str) -> None:
        queues.get(tube + "-b").put(Message("on b"))
        queues.get(tube + "-a").put(Message("on a"), priority=2000)
        first = queues.backend.reserve([tube + "-a", tube + "-b"], 1)
        second = queues.backend.reserve([tube + "-a", tube + "-b"], 1)
        got = (first.tube, second.tube)
        if self.orders_across_puts:  # the more urgent first
            assert got == (tube + "-b", tube + "-a")
        else:
            assert sorted(got) == [tube + "-a", tube + "-b"]
        queues.backend.delete(first.lease)
        queues.backend.delete(second.lease)

    def test_reserve_returns_a_reserved_with_its_fields_in_order(
        self, queues: QueueFactory, tube: str
    ) -> None:
        job = put_job(queues.get(tube), Message("reserved", ["a"]))
        reserved = queues.backend.reserve((tube,), 1)
        assert type(reserved) is Reserved
        assert reserved == Reserved(reserved.job_id, reserved.body, reserved.tube, reserved.lease)
        assert reserved.lease.ref == job
        assert queues.codec.decode(reserved.body) == Message("reserved", ["a"])
        assert reserved.tube == tube
        assert isinstance(reserved.lease, Lease)
        assert (reserved.lease.job_id, reserved.lease.tube) == (job.id, tube)
        queues.backend.delete(reserved.lease)

    def test_priority_orders_ready_messages(self, queues: QueueFactory, tube: str) -> None:
        if not self.orders_across_puts:
            pytest.skip("separate puts may land on different servers, each ordering its own")
        queue = queues.get(tube)
        queue.put(Message("low"), priority=2000)
        queue.put(Message("urgent"), priority=0)
        queue.put(Message("normal"))
        order = []
        for _ in range(3):
            got = queue.get(timeout=1)
            order.append(got.action)
            queue.delete(got)
        assert order == ["urgent", "normal", "low"]

    def test_same_priority_comes_out_in_put_order(self, queues: QueueFactory, tube: str) -> None:
        if not self.orders_across_puts:
            pytest.skip("separate puts may land on different servers, each ordering its own")
        queue = queues.get(tube)
        for number in range(5):
            queue.put(Message("n", [str(number)]))
        got = [queue.get(timeout=1) for _ in range(5)]
        assert [message.args[0] for message in got] == ["0", "1", "2", "3", "4"]
        for message in got:
            queue.delete(message)

    def test_release_now_gives_the_same_id_back(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        job = put_job(queue, Message("again"))
        queue.release(queue.get(timeout=1))
        got = queue.get(timeout=1)
        assert got.id == job.id
        assert queues.backend.stats_job(job).releases == 1
        queue.delete(got)

    def test_release_with_delay_hides_then_gives_the_same_id_back(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        job = put_job(queue, Message("again"))
        queue.release(queue.get(timeout=1), delay=1)
        assert queues.backend.stats_job(job).state == "delayed"
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        got = queue.get(timeout=3)
        assert got.id == job.id
        queue.delete(got)

    def test_after_delete_nothing_is_left(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        job = put_job(queue, Message("once"))
        queue.delete(queue.get(timeout=1))
        with pytest.raises(NotFound):
            queues.backend.stats_job(job)
        with pytest.raises(Timeout):
            queue.get(timeout=0)

    def test_second_delete_and_release_after_delete_raise_not_found(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("once"))
        got = queue.get(timeout=1)
        queue.delete(got)
        with pytest.raises(NotFound):
            queue.delete(got)
        with pytest.raises(NotFound):
            queue.release(got)

    def test_delete_after_release_raises_not_found(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("once"))
        got = queue.get(timeout=1)
        queue.release(got)
        with pytest.raises(NotFound):
            queue.delete(got)
        queue.delete(queue.get(timeout=1))

    def test_unknown_messages_raise_not_found(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        never_got = Message("never-got")
        with pytest.raises(NotFound):
            queue.delete(never_got)
        with pytest.raises(NotFound):
            queue.release(never_got)
        queue.put(never_got)
        with pytest.raises(NotFound, match="not got"):
            queue.delete(never_got)
        queue.delete(queue.get(timeout=1))

    def test_a_message_settles_only_on_the_queue_it_came_from(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue, other = queues.get(tube), queues.get(tube + "-other")
        queue.put(Message("mine"))
        got = queue.get(timeout=1)
        with pytest.raises(NotFound, match="got from queue"):
            other.delete(got)
        queue.delete(got)

    def test_bury_keeps_the_message_and_kick_brings_it_back(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        job = put_job(queue, Message("dead-letter"))
        queue.bury(queue.get(timeout=1))
        stats = queues.backend.stats_job(job)
        assert (stats.state, stats.buries) == ("buried", 1)
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        queues.backend.kick_job(job)
        got = queue.get(timeout=1)
        assert got.id == job.id
        queue.delete(got)

    def test_reservation_ends_after_its_ttr(self, queues: QueueFactory, tube: str) -> None:
        # Where the backend misses_idle_ttr, a try whose expiry went unnoticed is
        # left as it is, its message still held, and the test starts again on a
        # queue of its own, three tries at most.
        held: list[Message] = []
        for attempt in range(3 if self.misses_idle_ttr else 1):
            queue = queues.get(f"{tube}-{attempt}")
            job = put_job(queue, Message("slow"), ttr=1)
            first = queue.get(timeout=1)
            held.append(first)
            with contextlib.suppress(Timeout):
                second = queue.get(timeout=3)  # handed out again once the first hold expired
                break
        else:
            pytest.fail("the server never handed the message out again after its ttr")
        assert second.id == job.id
        assert queues.backend.stats_job(job).timeouts == 1
        with pytest.raises(NotFound):
            queue.release(first)
        queue.delete(second)

    def test_touch_restarts_the_ttr(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("slow"), ttr=2)
        got = queue.get(timeout=1)
        for _ in range(3):
            time.sleep(0.8)
            queue.touch(got)
        # 2.4 s after the get, past the ttr: still ours because it was touched.
        with pytest.raises(Timeout):
            queue.get(timeout=0)
        queue.delete(got)
        with pytest.raises(NotFound):
            queue.touch(got)

    def test_a_get_after_a_message_was_dropped_unsettled_waits_for_it(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        job_id = queue.put(Message("dropped"), ttr=1)
        message = queue.get(timeout=1)
        del message  # never settled; on beanstalkd its connection is reused at once
        gc.collect()
        # beanstalkd answers DEADLINE_SOON to this reserve: it must not be an error.
        again = queue.get(timeout=5)
        assert again.id == job_id
        queue.delete(again)

    def test_a_get_times_out_cleanly_while_a_job_of_its_connection_is_due(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("dropped"), ttr=2)
        message = queue.get(timeout=1)
        del message
        gc.collect()
        with pytest.raises(TimeoutError):
            queue.get(timeout=0)

    def test_raw_json_from_another_client_is_read(
        self, queues: QueueFactory, tube: str, raw_put: RawPut
    ) -> None:
        queue = queues.get(tube)
        raw_put(tube, b'{"action": "resize", "args": ["img-1", "800"]}')
        raw_put(tube, '{"action":"caf\u00e9","extra":1}'.encode())
        first, second = queue.get(timeout=1), queue.get(timeout=1)
        assert first == Message("resize", ["img-1", "800"])
        assert second == Message("caf\u00e9")
        queue.delete(first)
        queue.delete(second)

    @pytest.mark.parametrize(
        "body",
        [
            b"\xff\xfe not utf-8",
            b"not json",
            b"[1, 2]",
            b'{"action": 5}',
            b'{"action": "x", "args": [1]}',
            b'{"args": []}',
        ],
    )
    def test_undecodable_body_is_buried_with_decode_error(
        self, queues: QueueFactory, tube: str, raw_put: RawPut, body: bytes
    ) -> None:
        queue = queues.get(tube)
        bad_id = raw_put(tube, body)
        with pytest.raises(DecodeError) as caught:
            queue.get(timeout=1)
        assert (caught.value.job_id, caught.value.server) == bad_id
        assert caught.value.body == body
        assert caught.value.queue == tube
        assert queues.backend.stats_job(bad_id).state == "buried"
        queue.put(Message("next"))  # the queue goes on as before
        got = queue.get(timeout=1)
        assert got == Message("next")
        queue.delete(got)

    @pytest.mark.parametrize(
        "name",
        ["", "a" * 201, "-leading-dash", "with space", "x\r\nput 0 0 1 1", "caf\u00e9", "a:b"],
    )
    def test_refused_names_raise_invalid_name(self, queues: QueueFactory, name: str) -> None:
        with pytest.raises(InvalidName):
            queues.get(name)

    def test_every_character_beanstalkd_allows_is_accepted(self, queues: QueueFactory) -> None:
        name = ("Az09-+/;.$_()" * 16)[:200]
        queue = queues.get(name)
        queue.put(Message("edge"))
        got = queue.get(timeout=1)
        assert got.queue == name
        queue.delete(got)

    def test_body_at_the_limit_is_stored_and_over_it_is_refused(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        limit = queues.backend.max_job_size()
        overhead = len(queues.codec.encode(Message("big", [""])))
        fits = Message("big", ["x" * (limit - overhead)])
        assert len(queues.codec.encode(fits)) == limit
        queue.put(fits)
        with pytest.raises(MessageTooBig) as caught:
            queue.put(Message("big", ["x" * (limit - overhead + 1)]))
        assert caught.value.limit == limit
        assert str(limit) in str(caught.value)
        got = queue.get(timeout=1)  # the connection is still usable
        assert got == fits
        queue.delete(got)

    @pytest.mark.parametrize("bad", [-1, -0.5, timedelta(seconds=-1), float("nan"), float("inf")])
    def test_negative_or_non_finite_times_are_value_errors(
        self, queues: QueueFactory, tube: str, bad: float
    ) -> None:
        queue = queues.get(tube)
        with pytest.raises(ValueError, match="seconds"):
            queue.put(Message("x"), delay=bad)
        with pytest.raises(ValueError, match="seconds"):
            queue.get(timeout=bad)

    def test_a_timeout_over_beanstalkds_bound_is_a_value_error(
        self, queues: QueueFactory, tube: str
    ) -> None:
        with pytest.raises(ValueError, match="at most"):
            queues.get(tube).get(timeout=2**33)

    def test_wrong_types_are_type_errors(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        with pytest.raises(TypeError):
            queue.put("not a message")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            queue.get(timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            queue.put(Message("x"), priority=1.5)  # type: ignore[arg-type]

    def test_concurrent_puts_from_many_threads_all_arrive_intact(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        threads, each = 8, 100

        def produce(thread: int) -> list[JobRef]:
            return [put_job(queue, Message("n", [str(thread), str(i)])) for i in range(each)]

        with ThreadPoolExecutor(threads) as pool:
            jobs = [job for batch in pool.map(produce, range(threads)) for job in batch]
        assert len(set(jobs)) == threads * each
        seen = set()
        for _ in range(threads * each):
            got = queue.get(timeout=1)
            seen.add(got.args)
            queue.delete(got)
        assert seen == {(str(t), str(i)) for t in range(threads) for i in range(each)}

    def test_a_message_got_in_one_thread_is_deleted_from_another(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        job = put_job(queue, Message("handoff"))
        with ThreadPoolExecutor(1) as pool:
            got = pool.submit(queue.get, 1).result()
        queue.delete(got)
        with pytest.raises(NotFound):
            queues.backend.stats_job(job)

    def test_concurrent_deletes_of_one_message_settle_it_once(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("race"))
        got = queue.get(timeout=1)
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def delete() -> None:
            barrier.wait()
            try:
                queue.delete(got)
                outcomes.append("deleted")
            except NotFound:
                outcomes.append("not found")

        workers = [threading.Thread(target=delete) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sorted(outcomes) == ["deleted", "not found", "not found", "not found"]

    def test_a_blocked_get_does_not_hold_up_a_put(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(queue.get, 5)
            time.sleep(0.2)  # let the get block first
            started = time.monotonic()
            queues.get(tube + "-other").put(Message("elsewhere"))
            assert time.monotonic() - started < 0.5
            assert not waiting.done()
            queue.put(Message("wake"))
            got = waiting.result(timeout=5)
        queue.delete(got)
        queues.get(tube + "-other").delete(queues.get(tube + "-other").get(timeout=1))

    def test_a_held_message_can_be_settled_while_another_thread_waits_in_get(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("held"))
        held = queue.get(timeout=1)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(queue.get, 5)
            time.sleep(0.2)
            started = time.monotonic()
            queue.delete(held)
            assert time.monotonic() - started < 0.5
            queue.put(Message("wake"))
            queue.delete(waiting.result(timeout=5))

    def test_close_wakes_a_blocked_get(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(queue.get, 10)
            time.sleep(0.2)
            started = time.monotonic()
            queues.close()
            with pytest.raises(QueueError):
                waiting.result(timeout=5)
            assert time.monotonic() - started < 1.0
        with pytest.raises(QueueError):
            queue.put(Message("after close"))

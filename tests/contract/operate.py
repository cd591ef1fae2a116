"""Operating the queues: stats, peek, kick, delete a peeked message, pause, empty, list queues."""

from __future__ import annotations

import threading

import pytest

from queue_beanstalk import Handler, Message, NotFound, QueueFactory, Timeout

from ..support import eventually, gone, ref
from .cases import BackendCase, RawPut


class OperateContract(BackendCase):
    """What an operator sees and does, on every backend."""

    def test_a_queue_in_use_is_listed(self, queues: QueueFactory, tube: str) -> None:
        queues.get(tube).put(Message("here"))
        listed = queues.queues()
        assert tube in listed
        assert listed == sorted(listed)

    def test_stats_count_each_state(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("ready"), priority=5)
        queue.put(Message("ready"))
        queue.put(Message("delayed"), delay=60)
        queue.put(Message("to-bury"), priority=0)
        queue.put(Message("to-hold"), priority=1)
        queue.bury(queue.get(timeout=1))
        held = queue.get(timeout=1)
        stats = queue.stats()
        assert (stats.ready, stats.delayed, stats.reserved, stats.buried) == (2, 1, 1, 1)
        assert stats.urgent == 1
        assert stats.total == 5
        assert stats.name == tube
        assert not stats.paused
        queue.delete(held)

    def test_stats_of_an_unused_queue_are_zeros(self, queues: QueueFactory, tube: str) -> None:
        stats = queues.get(tube).stats()
        assert (stats.ready, stats.delayed, stats.reserved, stats.buried, stats.total) == (
            0,
            0,
            0,
            0,
            0,
        )

    def test_peek_ready_shows_the_most_urgent_without_reserving_it(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put_many([Message("later"), Message("first", ["a"])], priority=7)
        urgent = Message("urgent", ["x"])
        queue.put(urgent, priority=0)
        peeked = queue.peek_ready()
        assert peeked is not None
        assert peeked.message == urgent
        assert (peeked.id, peeked.server, peeked.queue) == (urgent.id, urgent.server, tube)
        assert peeked.state == "ready"
        assert peeked.stats.priority == 0
        assert peeked.error is None
        assert queue.stats().reserved == 0
        assert queues.backend.stats_job(peeked.ref).state == "ready"

    def test_peek_delayed_and_buried(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        assert queue.peek_delayed() is None
        assert queue.peek_buried() is None
        queue.put(Message("soon"), delay=30)
        queue.put(Message("sooner"), delay=10)
        delayed = queue.peek_delayed()
        assert delayed is not None
        assert (delayed.message, delayed.state) == (Message("sooner"), "delayed")
        queue.put(Message("bad"))
        queue.bury(queue.get(timeout=1))
        buried = queue.peek_buried()
        assert buried is not None
        assert (buried.message, buried.state, buried.stats.buries) == (Message("bad"), "buried", 1)
        assert queue.peek_ready() is None

    def test_a_body_that_cannot_be_decoded_is_shown_not_raised(
        self, queues: QueueFactory, tube: str, raw_put: RawPut
    ) -> None:
        job = raw_put(tube, b"\x00 not json")
        peeked = queues.get(tube).peek_ready()
        assert peeked is not None
        assert (peeked.ref, peeked.body, peeked.message) == (job, b"\x00 not json", None)
        assert peeked.error

    def test_kick_brings_buried_back_then_delayed(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        for number in range(3):
            queue.put(Message("b", [str(number)]))
        for _ in range(3):
            queue.bury(queue.get(timeout=1))
        queue.put(Message("delayed"), delay=60)
        assert queue.kick(2) == 2
        assert (queue.stats().ready, queue.stats().buried) == (2, 1)
        assert queue.kick(5) == 1
        assert queue.kick(5) == 1  # no buried left: the delayed one
        assert queue.stats().ready == 4
        assert queue.kick() == 0
        with pytest.raises(ValueError, match="count"):
            queue.kick(0)

    def test_kick_message_and_delete_peeked(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put_many([Message("poison"), Message("fixed")])  # one batch: one server, in order
        for _ in range(2):
            queue.bury(queue.get(timeout=1))
        poison = queue.peek_buried()
        assert poison is not None
        queue.delete_peeked(poison)
        with pytest.raises(NotFound):
            queues.backend.stats_job(poison.ref)
        fixed = queue.peek_buried()
        assert fixed is not None
        assert fixed.message == Message("fixed")
        queue.kick_message(fixed)
        got = queue.get(timeout=1)
        assert got == Message("fixed")
        queue.delete(got)
        with pytest.raises(NotFound):
            queue.kick_message(fixed)

    def test_delete_peeked_refuses_a_message_a_worker_holds(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("held"))
        peeked = queue.peek_ready()
        assert peeked is not None
        held = queue.get(timeout=1)  # taken between the peek and the delete
        with pytest.raises(NotFound, match="reserved"):
            queue.delete_peeked(peeked)
        queue.delete(held)  # still the worker's to settle

    def test_a_peeked_message_acts_only_on_its_own_queue(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("x"))
        peeked = queue.peek_ready()
        assert peeked is not None
        with pytest.raises(NotFound, match="peeked on queue"):
            queues.get(f"{tube}-other").delete_peeked(peeked)

    def test_pause_holds_messages_back_until_resumed(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("paused"))
        queue.pause(60)
        assert queue.stats().paused
        with pytest.raises(Timeout):
            queue.get(timeout=1)
        queue.pause(0)
        got = queue.get(timeout=2)
        queue.delete(got)

    @pytest.mark.parametrize("state", ["buried", "delayed"])
    def test_empty_deletes_every_message_in_that_state_only(
        self, queues: QueueFactory, tube: str, state: str
    ) -> None:
        queue = queues.get(tube)
        queue.put(Message("stays"))
        for number in range(5):
            queue.put(Message("d", [str(number)]), delay=60)
        for number in range(4):
            queue.put(Message("b", [str(number)]), priority=0)
            queue.bury(queue.get(timeout=1))
        emptied = queue.empty(state)
        assert emptied == {"delayed": 5, "buried": 4}[state]
        stats = queue.stats()
        assert getattr(stats, state) == 0
        assert stats.ready == 1
        assert stats.delayed + stats.buried == 9 - emptied

    def test_empty_ready_while_a_handler_runs_leaves_the_held_one_alone(
        self, queues: QueueFactory, tube: str, stopping: list[Handler]
    ) -> None:
        queue = queues.get(tube)
        started: list[Message] = []
        swept = threading.Event()

        def hold(message: Message) -> None:  # holds the first message until the sweep is done
            started.append(message)
            assert swept.wait(20)

        handler = queues.handler(hold, tube)
        stopping.append(handler)
        held = Message("held")
        queue.put(held, priority=0)
        handler.start()
        eventually(lambda: len(started) == 1)
        queue.put_many([Message("r", [str(n)]) for n in range(10)])
        try:
            assert queue.empty("ready") == 10
        finally:
            swept.set()
        assert not queue.stats().paused
        # The held message, handled once the sweep was done, is deleted by its worker.
        self.drain(queues, tube, until=lambda: gone(queues, ref(held)))
        assert started == [held]

    def test_empty_ready_keeps_a_pause_the_queue_was_in(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        queue.put_many([Message("r")] * 3)
        queue.pause(300)
        assert queue.empty("ready") == 3
        assert queue.stats().pause_left > 200

    def test_empty_refuses_another_state(self, queues: QueueFactory, tube: str) -> None:
        with pytest.raises(ValueError, match="state"):
            queues.get(tube).empty("reserved")

"""A QueueFactory on every backend: a context manager, closed for good, with reprs that say so."""

from __future__ import annotations

import pytest

from queue_beanstalk import Message, QueueError, QueueFactory

from .cases import BackendCase


class FactoryContract(BackendCase):
    """What a factory's close and reprs do on every backend."""

    def test_the_factory_is_a_context_manager(self, queues: QueueFactory, tube: str) -> None:
        with queues as entered:
            assert entered is queues
            queue = queues.get(tube)
        with pytest.raises(QueueError, match="closed"):
            queue.put(Message("x"))

    def test_after_close_a_put_raises(self, queues: QueueFactory, tube: str) -> None:
        queue = queues.get(tube)
        queue.put(Message("before"))
        queues.close()
        with pytest.raises(QueueError, match="closed"):
            queue.put(Message("after"))
        with pytest.raises(QueueError, match="closed"):
            queue.get(timeout=0)

    def test_closing_twice_is_harmless(self, queues: QueueFactory) -> None:
        queues.close()
        queues.close()

    def test_reprs_name_the_package(self, queues: QueueFactory, tube: str) -> None:
        assert repr(queues).startswith("queue_beanstalk.QueueFactory(")
        assert repr(queues.get(tube)).startswith("queue_beanstalk.Queue(")
        assert repr(queues.backend).startswith("queue_beanstalk.")
        assert tube in repr(queues.get(tube))

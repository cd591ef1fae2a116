"""Many threads through one Queue, on every backend: every message arrives exactly once, intact."""

from __future__ import annotations

import threading

import pytest

from queue_beanstalk import Message, QueueFactory, Timeout

from .cases import BackendCase

PRODUCERS, EACH, CONSUMERS = 8, 2000, 4


def _args(producer: int, number: int) -> list[str]:
    # Bodies of varied length and alphabet, so a mix-up between threads shows.
    return [str(producer), str(number), "\u00e9\u4e2d" * (number % 7) + "x" * (number % 50)]


class StressContract(BackendCase):
    """What one Queue shared by many threads does under load, on every backend."""

    @pytest.mark.slow
    def test_eight_producers_and_four_consumers_on_one_queue(
        self, queues: QueueFactory, tube: str
    ) -> None:
        queue = queues.get(tube)
        received: list[tuple[str, ...]] = []
        lock = threading.Lock()
        errors: list[BaseException] = []
        expected = PRODUCERS * EACH

        def produce(producer: int) -> None:
            try:
                for number in range(EACH):
                    queue.put(Message("stress", _args(producer, number)))
            except BaseException as exc:
                errors.append(exc)
                raise

        def consume() -> None:
            try:
                while True:
                    with lock:
                        if len(received) >= expected or errors:
                            return
                    try:
                        message = queue.get(timeout=1)
                    except Timeout:
                        continue
                    queue.delete(message)
                    with lock:
                        received.append(message.args)
            except BaseException as exc:
                errors.append(exc)
                raise

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(PRODUCERS)]
        threads += [threading.Thread(target=consume) for _ in range(CONSUMERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert not errors
        assert len(received) == expected
        assert sorted(received) == sorted(
            tuple(_args(p, n)) for p in range(PRODUCERS) for n in range(EACH)
        )
        with pytest.raises(Timeout):
            queue.get(timeout=0)

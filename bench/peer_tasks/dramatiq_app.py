"""dramatiq's broker and no-op actor: ``dramatiq bench.peer_tasks.dramatiq_app``.

The broker's Redis is named by ``BENCH_REDIS_URL``, set by the benchmark for
its workers and for itself before it imports this module.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from . import mark

__all__ = ["QUEUE", "broker", "noop"]

QUEUE = "bench"

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop(path: str) -> None:
    """:func:`bench.peer_tasks.mark`, nothing else."""
    mark(path)

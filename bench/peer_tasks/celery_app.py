"""Celery's app and no-op task: ``celery -A bench.peer_tasks.celery_app worker``.

The broker's Redis is named by ``BENCH_REDIS_URL``, set by the benchmark for
its workers and for itself before it imports this module. No result backend:
nothing is stored for a task once it has run, as with Celery's defaults.
"""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

from . import mark

__all__ = ["app", "noop"]

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
# Celery 5.3+ warns at start-up unless this is named; True is what it does anyway.
app.conf.broker_connection_retry_on_startup = True


@app.task  # type: ignore[untyped-decorator]
def noop(path: str) -> None:
    """:func:`bench.peer_tasks.mark`, nothing else."""
    mark(path)

"""Small helpers shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from queue_beanstalk import NotFound, QueueFactory


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def gone(queues: QueueFactory, job_id: int) -> bool:
    """Return whether the server no longer holds the job (it was deleted)."""
    try:
        queues.backend.stats_job(job_id)
    except NotFound:
        return True
    return False

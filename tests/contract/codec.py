"""A body the codec refuses, on every backend: buried where it is, at the priority it had."""

from __future__ import annotations

from typing import NoReturn

import pytest

from queue_beanstalk import DecodeError, NotFound, QueueFactory
from queue_beanstalk.backend import JobRef
from queue_beanstalk.queue_factory import DEFAULT_PRIORITY

from .cases import BackendCase, RawPut


class CodecContract(BackendCase):
    """What a get does with a body the codec cannot read, on every backend."""

    def test_an_undecodable_job_is_buried_at_its_own_priority(
        self, queues: QueueFactory, tube: str
    ) -> None:
        job_id = queues.backend.put(tube, b"not json", priority=7, delay=0, ttr=60)
        with pytest.raises(DecodeError):
            queues.get(tube).get(timeout=1)
        stats = queues.backend.stats_job(job_id)
        assert (stats.state, stats.priority) == ("buried", 7)

    def test_an_undecodable_job_is_buried_even_when_its_priority_is_unknown(
        self,
        queues: QueueFactory,
        tube: str,
        raw_put: RawPut,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        job = raw_put(tube, b"not json")

        def lost(job: JobRef) -> NoReturn:
            raise NotFound(f"job {job.id} does not exist")

        monkeypatch.setattr(queues.backend, "stats_job", lost)
        with pytest.raises(DecodeError):
            queues.get(tube).get(timeout=1)
        monkeypatch.undo()
        stats = queues.backend.stats_job(job)
        assert (stats.state, stats.priority) == ("buried", DEFAULT_PRIORITY)
        assert f"could not read job {job.id}'s priority" in caplog.text

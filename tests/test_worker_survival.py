"""A handler's survival beyond the contract: the worker command, a closed factory, the log.

What every backend's workers survive is in ``tests/contract/survival.py``.
Here: the worker command exits non-zero when its handler fails, a handler
outlives its factory's close, a slow lookup lets no other message run out (on
memory://, whose time-to-run ends exactly on time), and a lost settle is
logged in plain words.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from queue_beanstalk import Message, cli, factory
from queue_beanstalk.backend import JobRef, Lease

from .support import eventually, put_job

TASKS = """
import queue_beanstalk.handler as handler

class Fatal(BaseException):
    pass

def _next(self, consumer, done):
    raise Fatal("a worker cannot survive this")

handler.Handler._next = _next

def handle(message):
    pass
"""


def test_the_worker_command_exits_non_zero_when_its_handler_fails(
    tmp_path: Path, beanstalkd_url: str
) -> None:
    (tmp_path / "fatal_tasks.py").write_text(textwrap.dedent(TASKS))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "queue_beanstalk", "worker", "fatal_tasks:handle"),
            *("--queue", "fatal", "--url", beanstalkd_url, "--concurrency", "2"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == cli.EXIT_HANDLER_FAILED, done.stderr
    assert "a worker cannot survive this" in done.stderr
    assert "handler failed" in done.stderr


def test_a_handler_is_not_left_running_after_its_factory_closes(tube: str) -> None:
    with factory("memory://") as queues:
        handler = queues.handler(lambda message: None, tube)
        handler.start()
    # The workers back off from the closed factory's errors; the handler still
    # answers stop() and wait().
    handler.stop()
    assert handler.wait(10)


def test_one_slow_lookup_does_not_let_another_message_run_out(
    monkeypatch: pytest.MonkeyPatch, tube: str
) -> None:
    # memory:// runs out a time-to-run exactly when it ends, so a late touch shows.
    with factory("memory://") as queues:
        backend = queues.backend
        lookup = backend.stats_job
        queue = queues.get(tube)
        slow = put_job(queue, Message("slow-lookup", ["4"]), ttr=30)
        short = put_job(queue, Message("short-ttr", ["4"]), ttr=2)

        def stats_job(job: JobRef) -> object:
            if job == slow:
                time.sleep(4)
            return lookup(job)

        monkeypatch.setattr(backend, "stats_job", stats_job)
        timeouts: list[int] = []

        def func(message: Message) -> None:
            time.sleep(float(message.args[0]))
            if message.id == short.id:
                timeouts.append(lookup(short).timeouts)

        handler = queues.handler(func, tube, concurrency=2)
        handler.start()
        try:
            eventually(lambda: len(timeouts) == 1, timeout=15)
        finally:
            handler.stop()
            assert handler.wait(15)
        assert timeouts == [0], "the short message ran out while another's lookup was slow"


@pytest.mark.parametrize(
    ("outcome", "word"),
    [("DELETE", "deleted"), ("RELEASE", "released"), ("BURY", "buried")],
)
def test_a_lost_settle_is_logged_in_plain_words(
    caplog: pytest.LogCaptureFixture, outcome: str, word: str
) -> None:
    from queue_beanstalk.handler import _log_lost
    from queue_beanstalk.retries import Outcome

    _log_lost(Lease(7, "q", "127.0.0.1:11300"), Outcome[outcome])
    assert f"job 7 was no longer reserved when it was to be {word};" in caplog.text

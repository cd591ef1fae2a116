"""Faults: beanstalkd killed and restarted, workers killed, a server that is not there yet.

Real processes on loopback; only processes these tests started are killed, by PID.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from queue_beanstalk import (
    Message,
    QueueConnectionError,
    factory,
)
from queue_beanstalk.testing import BeanstalkdServer, free_port

from .support import eventually, gone, put_job, ref


def test_after_a_restart_the_first_put_already_succeeds(server: BeanstalkdServer) -> None:
    with factory(server.url) as queues:
        queue = queues.get("restart")
        for _ in range(3):  # several idle connections in the pool
            queue.put(Message("before"))
        server.stop()
        server.start()
        job = put_job(queue, Message("after"))
        assert queues.backend.stats_job(job).state == "ready"


@pytest.mark.parametrize("many", [False, True], ids=["put", "put_many"])
def test_put_retries_within_its_budget_while_the_server_restarts(
    server: BeanstalkdServer, many: bool
) -> None:
    with factory(server.url, retry_for=10, connect_timeout=1) as queues:
        queue = queues.get("budget")
        queue.put(Message("before"))
        server.kill()
        restart = threading.Timer(1.0, server.start)
        restart.start()
        try:
            started = time.monotonic()
            messages = [Message("during", [str(n)]) for n in range(5 if many else 1)]
            if many:
                queue.put_many(messages)
            else:
                queue.put(messages[0])
        finally:
            restart.join()
        assert 0.5 < time.monotonic() - started < 10
        assert all(queues.backend.stats_job(ref(m)).state == "ready" for m in messages)


def test_put_gives_up_when_its_budget_is_spent(server: BeanstalkdServer) -> None:
    server.stop()
    with factory(server.url, retry_for=1, connect_timeout=1) as queues:
        started = time.monotonic()
        with pytest.raises(QueueConnectionError):
            queues.get("budget").put(Message("never"))
        assert 0.5 < time.monotonic() - started < 3


def test_a_handler_started_before_the_server_exists_begins_once_it_is_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="queue_beanstalk")
    port = free_port()
    handled: list[Message] = []
    with factory(f"beanstalk://127.0.0.1:{port}", connect_timeout=1) as queues:
        handler = queues.handler(handled.append, "early", concurrency=2)
        handler.start()
        try:
            eventually(lambda: "lost the server" in caplog.text)
            with BeanstalkdServer(port=port):
                queues.get("early").put(Message("hello"))
                eventually(lambda: handled == [Message("hello")])
                assert "reached the server again" in caplog.text
        finally:
            handler.stop()
            assert handler.wait(10)


@pytest.mark.slow
def test_an_outage_of_five_seconds_logs_a_handful_of_lines(
    server: BeanstalkdServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="queue_beanstalk")
    handled: list[Message] = []
    with factory(server.url, connect_timeout=1) as queues:
        handler = queues.handler(handled.append, "outage", concurrency=4)
        handler.start()
        try:
            queues.get("outage").put(Message("before"))
            eventually(lambda: len(handled) == 1)
            caplog.clear()
            server.kill()
            time.sleep(5)  # the outage itself
            server.start()
            queues.get("outage").put(Message("after"))
            eventually(lambda: len(handled) == 2)
        finally:
            handler.stop()
            assert handler.wait(10)
    lines = [record.getMessage() for record in caplog.records]
    print(f"{len(lines)} log lines during a 5 s outage: {lines}")
    assert 2 <= len(lines) <= 10


@pytest.mark.slow
def test_kill_and_restart_with_a_binlog_loses_no_acknowledged_message(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    binlog = tmp_path / "binlog"
    binlog.mkdir()
    total = 400
    handled: Counter[str] = Counter()
    lock = threading.Lock()

    def record(message: Message) -> None:
        with lock:
            handled[message.args[0]] += 1
        time.sleep(0.01)  # slower than the producer, so jobs wait on the server

    with (
        BeanstalkdServer(binlog_dir=binlog) as server,
        factory(server.url, retry_for=15, connect_timeout=1) as queues,
    ):
        handler = queues.handler(record, "durable", concurrency=2)
        handler.start()
        queue = queues.get("durable")
        acknowledged: list[str] = []

        def produce() -> None:
            for number in range(total):
                queue.put(Message("n", [str(number)]))
                acknowledged.append(str(number))

        producer = threading.Thread(target=produce)
        producer.start()
        eventually(lambda: len(acknowledged) >= total // 3)
        with lock:
            waiting = len(acknowledged) - len(handled)
        assert waiting > 10, "the kill must find jobs waiting on the server"
        server.kill()
        server.start()
        producer.join(60)
        assert not producer.is_alive()
        try:
            eventually(lambda: all(handled[n] for n in acknowledged), timeout=60)
        finally:
            handler.stop()
            assert handler.wait(10)
    assert len(acknowledged) == total
    duplicates = sum(count - 1 for count in handled.values())
    record_property("duplicates", duplicates)
    print(f"{total} acknowledged, all handled, {duplicates} handled twice or more")


TASKS = """
import os, pathlib, time

HERE = pathlib.Path(__file__).parent

def work(message):
    with (HERE / "calls.log").open("a") as log:
        log.write(f"started {message.id} {os.getpid()}\\n")
    while (HERE / "block").exists():
        time.sleep(0.05)
    with (HERE / "calls.log").open("a") as log:
        log.write(f"finished {message.id} {os.getpid()}\\n")
"""


def _worker(tasks: Path, url: str, queue: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{tasks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "queue_beanstalk", "worker", "fault_tasks:work", "--queue", queue,
         "--url", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_worker_killed_mid_callback_leaves_the_message_to_another(
    tmp_path: Path, beanstalkd_url: str, tube: str
) -> None:
    (tmp_path / "fault_tasks.py").write_text(textwrap.dedent(TASKS))
    (tmp_path / "block").touch()
    log = tmp_path / "calls.log"
    with factory(beanstalkd_url) as queues:
        job = put_job(queues.get(tube), Message("work"), ttr=5)
        first = _worker(tmp_path, beanstalkd_url, tube)
        second: subprocess.Popen[bytes] | None = None
        try:
            eventually(lambda: log.exists() and f"started {job.id} {first.pid}" in log.read_text())
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            (tmp_path / "block").unlink()
            second = _worker(tmp_path, beanstalkd_url, tube)
            eventually(lambda: f"finished {job.id} {second.pid}" in log.read_text())
            eventually(lambda: gone(queues, job))
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(10)
    assert f"finished {job.id} {first.pid}" not in log.read_text()

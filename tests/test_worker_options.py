"""The worker command's --retry-delay, --burst and --processes, on a real beanstalkd."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_beanstalk import Message, QueueFactory, cli, factory
from queue_beanstalk.worker_command import restart_delay

from .support import eventually, gone, put_job, ref

TASKS = """
import os, pathlib, time

LOG = pathlib.Path(__file__).with_name("calls.log")

def note(message):
    with LOG.open("a") as log:
        log.write(f"{message.args[0]} {os.getpid()}\\n")

def slow(message):
    time.sleep(float(message.args[1]))
    note(message)

def fail(message):
    note(message)
    raise ValueError("always fails")
"""


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    (tmp_path / "option_tasks.py").write_text(textwrap.dedent(TASKS))
    return tmp_path


@pytest.fixture
def queues(beanstalkd_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_url) as made:
        yield made


@pytest.fixture(params=["memory", "beanstalkd"])
def any_queues(request: pytest.FixtureRequest) -> Iterator[QueueFactory]:
    """A factory on each backend, for what the handler itself does."""
    url = "memory://" if request.param == "memory" else request.getfixturevalue("beanstalkd_url")
    with factory(url) as made:
        yield made


class Worker:
    """A worker command run as a subprocess, its stderr in a file, killed after the test."""

    def __init__(self, tasks: Path, *args: str) -> None:
        self.tasks = tasks
        self.err_path = tasks / "stderr.log"
        env = {
            **os.environ,
            "PYTHONPATH": f"{tasks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        with self.err_path.open("w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "queue_beanstalk", "worker", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def calls(self) -> list[str]:
        path = self.tasks / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit in {timeout}s:\n{self.err}")

    def children(self) -> dict[int, int]:
        """Return the pid of each worker process the parent logged as started, by number."""
        found: dict[int, int] = {}
        for number, pid in re.findall(r"worker process (\d+) started: pid (\d+)", self.err):
            found[int(number)] = int(pid)
        return found


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        # Only this test's processes: the parent, then each child it logged
        # (which may outlive a parent the test killed).
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)
        for pid in worker.children().values():
            _kill(pid)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_retry_delay_sets_the_delay_of_a_failed_message(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    job = put_job(queues.get(tube), Message("fail", ["once"]))
    worker = Worker(
        tasks, "option_tasks:fail", "--queue", tube, "--url", beanstalkd_url, "--retry-delay", "40"
    )
    workers.append(worker)
    eventually(lambda: "attempt 1 of 5: ValueError: always fails; retrying in 40s" in worker.err)
    stats = queues.backend.stats_job(job)
    assert stats.state == "delayed"
    assert stats.time_left > 30
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == cli.EXIT_OK


@pytest.mark.parametrize("value", ["-1", "soon", "nan", str(2**32)])
def test_a_bad_retry_delay_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["worker", "m:f", "--queue", "q", "--url", "memory://", "--retry-delay", value]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "error: argument --retry-delay: " in capsys.readouterr().err


def test_burst_handles_what_is_ready_then_exits_0(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    queue = queues.get(tube)
    jobs = [put_job(queue, Message("slow", [str(n), "0.05"])) for n in range(20)]
    delayed = put_job(queue, Message("slow", ["delayed", "0"]), delay=60)
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url,
        "--concurrency", "4", "--burst",
    )  # fmt: skip
    workers.append(worker)
    assert worker.wait() == cli.EXIT_OK, worker.err
    assert sorted(int(line.split()[0]) for line in worker.calls()) == list(range(20))
    assert all(gone(queues, job) for job in jobs)
    assert queues.backend.stats_job(delayed).state == "delayed"  # not ready: not waited for
    assert "no message ready" in worker.err


def test_prefetch_with_burst_handles_everything_then_exits_0(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    messages = [Message("slow", [str(n), "0"]) for n in range(40)]
    queues.get(tube).put_many(messages)
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url,
        "--prefetch", "16", "--burst",
    )  # fmt: skip
    workers.append(worker)
    assert worker.wait() == cli.EXIT_OK, worker.err
    assert sorted(int(line.split()[0]) for line in worker.calls()) == list(range(40))
    assert all(gone(queues, ref(message)) for message in messages)


def test_sigterm_gives_back_prefetched_messages_before_the_worker_exits(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    queues.get(tube).put_many([Message("slow", [str(n), "0.5"]) for n in range(10)])
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url, "--prefetch", "10"
    )
    workers.append(worker)
    eventually(lambda: queues.get(tube).stats().reserved == 10)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == cli.EXIT_OK, worker.err
    handled = len(worker.calls())
    stats = queues.get(tube).stats()
    assert (stats.ready, stats.reserved) == (10 - handled, 0)
    assert handled < 10
    assert f"released {10 - handled} prefetched message(s) not started" in worker.err


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_a_bad_prefetch_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["worker", "m:f", "--queue", "q", "--url", "memory://", "--prefetch", value]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "error: argument --prefetch: " in capsys.readouterr().err


def test_burst_on_an_empty_queue_exits_0_at_once(
    tasks: Path, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    started = time.monotonic()
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url,
        "--concurrency", "3", "--burst",
    )  # fmt: skip
    workers.append(worker)
    assert worker.wait() == cli.EXIT_OK, worker.err
    assert time.monotonic() - started < 5
    assert worker.calls() == []


def test_burst_keeps_on_while_a_failed_message_is_ready_again(
    any_queues: QueueFactory, tube: str
) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def fail(message: Message) -> None:
        with lock:
            calls.append(message.action)
        raise ValueError("always fails")

    job = put_job(any_queues.get(tube), Message("doomed"))
    handler = any_queues.handler(
        fail, tube, concurrency=3, max_attempts=4, retry_delay=0, burst=True
    )
    handler.start()
    assert handler.wait(20)
    assert not handler.running
    assert handler.failure is None
    assert calls == ["doomed"] * 4
    assert any_queues.backend.stats_job(job).state == "buried"


def test_a_burst_handler_may_be_started_again(any_queues: QueueFactory, tube: str) -> None:
    seen: list[str] = []
    handler = any_queues.handler(lambda message: seen.append(message.action), tube, burst=True)
    for action in ("first", "second"):
        any_queues.get(tube).put(Message(action))
        handler.start()
        assert handler.wait(20)
    assert seen == ["first", "second"]


def test_processes_runs_children_restarts_a_killed_one_and_stops_on_sigterm(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url, "--processes", "2"
    )
    workers.append(worker)
    eventually(lambda: len(worker.children()) == 2 and worker.err.count("worker running") == 2)
    first = worker.children()
    queue = queues.get(tube)
    for n in range(10):
        queue.put(Message("slow", [str(n), "0"]))
    eventually(lambda: len(worker.calls()) == 10)
    assert {int(line.split()[1]) for line in worker.calls()} <= set(first.values())

    os.kill(first[1], signal.SIGKILL)
    eventually(lambda: worker.children()[1] != first[1])
    assert f"worker process 1 (pid {first[1]}) was killed by SIGKILL; restarting it" in worker.err
    restarted = worker.children()
    assert restarted[2] == first[2]
    eventually(lambda: worker.err.count("worker running") == 3)
    for n in range(10, 20):
        queue.put(Message("slow", [str(n), "0"]))
    eventually(lambda: len(worker.calls()) == 20)

    # A callback in flight when SIGTERM comes is let finish, in every child.
    queue.put(Message("slow", ["last", "1.5"]))
    eventually(lambda: queues.backend.stats_tube(tube).reserved == 1)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == cli.EXIT_OK, worker.err
    assert "last" in {line.split()[0] for line in worker.calls()}
    for pid in restarted.values():
        assert not _alive(pid)
    assert worker.err.count("worker stopped") == 2


def test_processes_children_stop_gracefully_when_the_parent_is_killed(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url, "--processes", "2"
    )
    workers.append(worker)
    eventually(lambda: len(worker.children()) == 2 and worker.err.count("worker running") == 2)
    children = worker.children()
    job = put_job(queues.get(tube), Message("slow", ["in-flight", "1.5"]))
    eventually(lambda: queues.backend.stats_job(job).state == "reserved")
    worker.process.kill()  # SIGKILL: the parent can pass nothing on
    worker.process.wait(10)
    eventually(lambda: not any(_alive(pid) for pid in children.values()), timeout=10)
    # Each child stopped as on SIGTERM: the callback in flight finished.
    assert "in-flight" in {line.split()[0] for line in worker.calls()}
    assert gone(queues, job)
    assert worker.err.count("is gone; stopping") == 2


def test_processes_a_second_signal_stops_every_child_at_once(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    job = put_job(queues.get(tube), Message("slow", ["long", "60"]))
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url, "--processes", "2"
    )
    workers.append(worker)
    eventually(lambda: queues.backend.stats_job(job).state == "reserved")
    # Both children must have their signal handlers before the first signal.
    eventually(lambda: worker.err.count("worker running (pid") == 2)
    worker.process.send_signal(signal.SIGTERM)
    eventually(lambda: worker.err.count("stopping: waiting for callbacks in flight") == 2)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(10) == cli.EXIT_INTERRUPTED, worker.err
    stats = queues.backend.stats_job(job)
    assert (stats.state, stats.reserves) == ("ready", 1)
    assert worker.calls() == []
    assert not any(_alive(pid) for pid in worker.children().values())


def test_processes_with_burst_exit_0_once_every_child_is_done(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str, workers: list[Worker]
) -> None:
    queue = queues.get(tube)
    for n in range(10):
        queue.put(Message("slow", [str(n), "0.05"]))
    worker = Worker(
        tasks, "option_tasks:slow", "--queue", tube, "--url", beanstalkd_url,
        "--processes", "2", "--burst",
    )  # fmt: skip
    workers.append(worker)
    assert worker.wait() == cli.EXIT_OK, worker.err
    assert sorted(int(line.split()[0]) for line in worker.calls()) == list(range(10))
    assert "restarting" not in worker.err


def test_processes_with_a_target_that_cannot_be_had_exits_with_its_code(
    tasks: Path, workers: list[Worker]
) -> None:
    worker = Worker(tasks, "option_tasks:missing", "--queue", "q", "--processes", "2")
    workers.append(worker)
    assert worker.wait() == cli.EXIT_IMPORT, worker.err
    assert "restarting" not in worker.err


def test_a_child_that_keeps_dying_is_restarted_ever_more_slowly() -> None:
    delays = []
    delay = 0.0
    for _ in range(10):
        delay = restart_delay(delay, lived=0.1)
        delays.append(delay)
    assert delays[0] == 0.5
    assert delays == sorted(delays)
    assert delays[-1] == 30.0
    assert restart_delay(30.0, lived=600) == 0.5

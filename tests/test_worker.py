"""The worker command, as a real subprocess sent real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_beanstalk import Message, NotFound, QueueFactory, cli, factory
from queue_beanstalk.testing import free_port
from queue_beanstalk.worker_command import TargetError, resolve

from .support import ref

TASKS = """
import pathlib, time

LOG = pathlib.Path(__file__).with_name("calls.log")

def note(text):
    with LOG.open("a") as log:
        log.write(text + "\\n")

def slow(message):
    note(f"started {message.id}")
    time.sleep(float(message.args[0]))
    note(f"finished {message.id}")

not_a_function = 42
"""


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    """A module of handler functions, importable as ``worker_tasks``."""
    (tmp_path / "worker_tasks.py").write_text(textwrap.dedent(TASKS))
    return tmp_path


@pytest.fixture
def queues(beanstalkd_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_url) as made:
        yield made


def _start(tasks: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{tasks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "queue_beanstalk", "worker", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_line(path: Path, text: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 15
    while not (path.exists() and text in path.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{text!r} never appeared"
        time.sleep(0.05)


def test_sigterm_lets_the_callback_in_flight_finish(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    message = Message("slow", ["1.5"])
    job_id = queues.get(tube).put(message)
    process = _start(tasks, "worker_tasks:slow", "--queue", tube, "--url", beanstalkd_url)
    try:
        _wait_for_line(tasks / "calls.log", f"started {job_id}", process)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_OK, stderr
    assert f"finished {job_id}" in (tasks / "calls.log").read_text()
    assert "worker stopped" in stderr
    with pytest.raises(NotFound):
        queues.backend.stats_job(ref(message))


def test_a_second_signal_exits_at_once_and_gives_the_message_back(
    tasks: Path, queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    message = Message("slow", ["60"])
    job_id = queues.get(tube).put(message)
    process = _start(tasks, "worker_tasks:slow", "--queue", tube, "--url", beanstalkd_url)
    try:
        _wait_for_line(tasks / "calls.log", f"started {job_id}", process)
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)  # let the first signal be taken before the second
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_INTERRUPTED, stderr
    assert time.monotonic() - started < 5
    assert f"finished {job_id}" not in (tasks / "calls.log").read_text()
    stats = queues.backend.stats_job(ref(message))
    assert (stats.state, stats.reserves) == ("ready", 1)


@pytest.mark.parametrize(
    ("target", "code", "words"),
    [
        ("no_such_module:f", cli.EXIT_IMPORT, "cannot import 'no_such_module'"),
        ("worker_tasks:missing", cli.EXIT_IMPORT, "has no attribute 'missing'"),
        ("worker_tasks:not_a_function", cli.EXIT_NOT_CALLABLE, "is not callable: it is an int"),
        ("no-colon", cli.EXIT_IMPORT, "package.module:function"),
    ],
)
def test_a_target_that_cannot_be_had_is_a_clear_error(
    tasks: Path, target: str, code: int, words: str
) -> None:
    process = _start(tasks, target, "--queue", "q", "--url", "memory://")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code
    assert words in stderr
    assert "Traceback" not in stderr


def test_a_server_that_cannot_be_reached_is_waited_for_and_said_so(tasks: Path) -> None:
    url = f"beanstalk://127.0.0.1:{free_port()}"
    process = _start(tasks, "worker_tasks:slow", "--queue", "q", "--url", url)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while "cannot reach the queue server yet" not in line:
            assert line, "the worker ended instead of waiting"
            line = process.stderr.readline()
        assert "waiting for it" in line
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_OK, stderr
    assert "Traceback" not in stderr


def test_resolve_finds_dotted_attributes() -> None:
    found: list[object] = [resolve("os.path:join"), resolve("queue_beanstalk:Message.__eq__")]
    assert found == [os.path.join, Message.__eq__]
    with pytest.raises(TargetError):
        resolve(":f")

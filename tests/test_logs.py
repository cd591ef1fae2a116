"""What the handler logs when a function fails, and the text and JSON formats of the command."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_beanstalk import Bury, Handler, Message, QueueFactory, Retry, cli, factory
from queue_beanstalk.logs import JsonFormatter, TextFormatter

from .support import eventually, put_job

PERSONAL = "alice@example.com"


@pytest.fixture
def queues() -> Iterator[QueueFactory]:
    with factory("memory://") as made:
        yield made


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "handler function failed" in r.getMessage()]


def _run(handler: Handler, until: object) -> None:
    assert callable(until)
    handler.start()
    try:
        eventually(until)
    finally:
        handler.stop()
        assert handler.wait(10)


def test_a_failure_says_the_exception_the_attempt_and_what_comes_next(
    queues: QueueFactory, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="queue_beanstalk")

    def fail(message: Message) -> None:
        raise ValueError("bad size")

    handler = queues.handler(fail, tube, max_attempts=3, retry_delay=0)
    job = put_job(queues.get(tube), Message("resize", [PERSONAL, "640x480"]))
    _run(handler, lambda: queues.backend.stats_job(job).state == "buried")
    lines = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in _failures(caplog)]
    where = f"handler function failed on job {job.id} (queue '{tube}', action 'resize', 2 args)"
    assert lines == [
        (logging.ERROR, f"{where}, attempt 1 of 3: ValueError: bad size; retrying in 0s", True),
        (logging.WARNING, f"{where}, attempt 2 of 3: ValueError: bad size; retrying in 0s", False),
        (logging.ERROR, f"{where}, attempt 3 of 3: ValueError: bad size; giving up, buried", False),
    ]
    assert PERSONAL not in caplog.text


def test_the_first_failure_per_exception_type_and_queue_has_the_traceback(
    queues: QueueFactory, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[str] = []
    lock = threading.Lock()

    def fail(message: Message) -> None:
        with lock:
            failed.append(message.action)
        raise (KeyError if message.action == "key" else ValueError)(message.action)

    other = tube + "-other"
    handler = queues.handler(fail, tube, other, concurrency=4, max_attempts=1)
    for name in (tube, other):
        for action in ("key", "value") * 10:
            queues.get(name).put(Message(action))
    _run(handler, lambda: len(failed) == 40)
    with_traceback = sorted(
        (r.getMessage().split("(queue ")[1].split(",")[0], r.exc_info[0].__name__)
        for r in _failures(caplog)
        if r.exc_info is not None and r.exc_info[0] is not None
    )
    assert with_traceback == sorted(
        (f"'{name}'", kind) for name in (tube, other) for kind in ("KeyError", "ValueError")
    )
    assert len(_failures(caplog)) == 40


def test_retry_is_logged_at_debug_and_bury_at_info(
    queues: QueueFactory, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="queue_beanstalk")

    def later(message: Message) -> None:
        if message.action == "later":
            raise Retry(delay=30)
        raise Bury

    queue = queues.get(tube)
    later_job = put_job(queue, Message("later", [PERSONAL]))
    bury_job = put_job(queue, Message("bury", [PERSONAL]))
    handler = queues.handler(later, tube)
    _run(
        handler,
        lambda: (
            queues.backend.stats_job(later_job).state == "delayed"
            and queues.backend.stats_job(bury_job).state == "buried"
        ),
    )
    logged = {r.getMessage(): r.levelno for r in caplog.records}
    retried = (
        f"handler function raised Retry on job {later_job.id} (queue '{tube}', "
        "action 'later', 1 arg); released, tried again in 30s"
    )
    buried = (
        f"handler function raised Bury on job {bury_job.id} (queue '{tube}', "
        "action 'bury', 1 arg); buried"
    )
    assert (logged.get(retried), logged.get(buried)) == (logging.DEBUG, logging.INFO)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert PERSONAL not in caplog.text


def test_what_is_logged_of_a_message_is_capped(
    queues: QueueFactory, tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(message: Message) -> None:
        raise RuntimeError("x" * 60_000)

    handler = queues.handler(fail, tube, max_attempts=2, retry_delay=0)
    job = put_job(queues.get(tube), Message("a" * 5000, ["y" * 60_000]))
    _run(handler, lambda: queues.backend.stats_job(job).state == "buried")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) >= 2
    assert all(len(m) < 1000 for m in messages), [len(m) for m in messages]
    assert "y" * 10 not in caplog.text
    assert f"action '{'a' * 100}'... (5000 characters), 1 arg)" in messages[0]


def _record(exc_info: bool = False) -> logging.LogRecord:
    try:
        raise ValueError("bad\nsize")
    except ValueError:
        info = sys.exc_info() if exc_info else None
    return logging.LogRecord(
        "queue_beanstalk", logging.WARNING, __file__, 1, "job %d failed", (42,), info
    )


def test_the_text_format_has_date_milliseconds_and_pid() -> None:
    line = TextFormatter().format(_record())
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} pid={os.getpid()} WARNING "
        r"queue_beanstalk: job 42 failed",
        line,
    ), line


def test_the_json_format_is_one_object_per_line() -> None:
    record = _record(exc_info=True)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    fields = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["time"])
    assert {k: v for k, v in fields.items() if k not in ("time", "exc_info")} == {
        "level": "WARNING",
        "logger": "queue_beanstalk",
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "message": "job 42 failed",
    }
    assert fields["exc_info"].startswith("Traceback (most recent call last):")
    assert fields["exc_info"].endswith("ValueError: bad\nsize")
    assert "exc_info" not in json.loads(JsonFormatter().format(_record()))


TASKS = """
def fail(message):
    raise ValueError("bad size")
"""


def _worker(tmp_path: Path, url: str, tube: str, *options: str) -> subprocess.Popen[str]:
    (tmp_path / "log_tasks.py").write_text(textwrap.dedent(TASKS))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with (tmp_path / "stderr.log").open("w") as err:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "queue_beanstalk", "worker", "log_tasks:fail"),
                *("--queue", tube, "--url", url, "--max-attempts", "1", *options),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )


def _stop(process: subprocess.Popen[str], tmp_path: Path, until: str) -> str:
    try:
        eventually(lambda: until in (tmp_path / "stderr.log").read_text())
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == cli.EXIT_OK
    finally:
        process.kill()
    return (tmp_path / "stderr.log").read_text()


def test_the_worker_logs_json_lines(tmp_path: Path, beanstalkd_url: str, tube: str) -> None:
    with factory(beanstalkd_url) as queues:
        job = put_job(queues.get(tube), Message("resize", [PERSONAL]))
    process = _worker(tmp_path, beanstalkd_url, tube, "--log-format", "json")
    err = _stop(process, tmp_path, "giving up")
    records = [json.loads(line) for line in err.splitlines()]
    assert {r["logger"] for r in records} == {"queue_beanstalk"}
    assert {r["pid"] for r in records} == {process.pid}
    failure = next(r for r in records if "handler function failed" in r["message"])
    assert failure["level"] == "ERROR"
    assert f"job {job.id} (queue '{tube}', action 'resize', 1 arg)" in failure["message"]
    assert "ValueError: bad size" in failure["exc_info"]
    assert PERSONAL not in err
    assert records[-1]["message"] == "worker stopped"


def test_the_worker_log_level_leaves_out_what_is_below_it(
    tmp_path: Path, beanstalkd_url: str, tube: str
) -> None:
    with factory(beanstalkd_url) as queues:
        queues.get(tube).put(Message("resize"))
    process = _worker(tmp_path, beanstalkd_url, tube, "--log-level", "warning")
    err = _stop(process, tmp_path, "giving up")
    assert "handler function failed" in err
    assert " INFO " not in err
    assert "worker running" not in err


def test_the_default_text_log_of_the_worker(tmp_path: Path, beanstalkd_url: str) -> None:
    process = _worker(tmp_path, beanstalkd_url, "quiet")
    err = _stop(process, tmp_path, "worker running")
    assert re.search(
        rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{{3}} pid={process.pid} INFO queue_beanstalk: "
        r"worker running",
        err,
        re.MULTILINE,
    ), err


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--log-level", "LOUD"], "invalid choice: 'LOUD'"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
        (["--log-level"], "expected one argument"),
    ],
)
def test_bad_log_options_are_usage_errors(
    option: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["worker", "m:f", "--queue", "q", "--url", "memory://", *option]
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("usage: queue-beanstalk")
    assert words in err

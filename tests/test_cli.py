"""The queue-beanstalk command line and its demo."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import queue_beanstalk
from queue_beanstalk import (
    Handler,
    JobStats,
    MemoryBackend,
    Message,
    QueueConnectionError,
    QueueFactory,
    cli,
    demo,
)
from queue_beanstalk.backend import JobRef
from queue_beanstalk.demo.mission import _Mission
from queue_beanstalk.testing import BeanstalkdServer, free_port

ROOT = Path(__file__).resolve().parent.parent

# A progress line: seconds since the producer started, then the running counts.
PROGRESS = re.compile(
    r"^ +(\d+\.\d)s  put +(\d+)/32  handled +(\d+)  retried (\d+)  buried (\d)  in flight (\d)$",
    re.MULTILINE,
)
SUMMARY = """
summary
   messages put  32 on 2 queues
   handled       31
   retried       6 (5 failed calls, 1 Retry)
   buried        1
"""


def check_demo_output(out: str, messages: int) -> None:
    # Job ids are the server's: on a shared beanstalkd they depend on earlier tests.
    assert re.search(r"put job \d+, got it, released it, got it again, deleted it\n", out), out
    decoded = re.search(
        r"job (\d+), b'not json' from another client: get\(0\) raised DecodeError", out
    )
    assert decoded, out
    assert f"job {decoded[1]} is now 'buried'" in out

    progress = PROGRESS.findall(out)
    # At least the 0.5, 1.0, 1.5 and 2.0 s lines (a 2 s delay ends the mission) and the last.
    assert len(progress) >= 5, out
    seconds = [float(line[0]) for line in progress]
    assert seconds == sorted(seconds)
    assert progress[-1][1:] == ("32", "31", "6", "1", "0")
    assert max(int(line[5]) for line in progress) <= 4
    assert "all 32 settled in " in out

    assert re.search(r"flaky-app failed once; called again 1\.\d\ds later, then handled", out)
    assert re.search(r"flakier-app failed twice; called again [\d.-]+s after each failure", out)
    assert re.search(r"busy-app asked Retry\(delay=1\); called again 1\.\d\ds later", out)
    assert re.search(
        r"broken-app failed 3 times; job \d+ is now 'buried' \(stats-job: 3 reserves, 1 bury\)",
        out,
    )
    delayed = re.search(
        r"4 delayed messages: first called (\d\.\d\d)-(\d\.\d\d)s after their put", out
    )
    assert delayed, out
    # beanstalkd counts a delay by its own clock, which may disagree with ours by a hair.
    assert float(delayed[1]) >= 0.95
    assert float(delayed[2]) >= 1.95
    peak = re.search(r"the 31 handled jobs are gone from the server; at most (\d) calls ran", out)
    assert peak, out
    assert 1 <= int(peak[1]) <= 4

    assert f"3. throughput: {messages} no-op messages through a handler with 4 workers" in out
    assert re.search(r"first put to last call: \d+\.\d{3}s, [\d,]+ messages/s", out)
    assert SUMMARY in out
    assert re.search(rf"   throughput    [\d,]+ messages/s \({messages} no-op messages\)", out)
    assert "UNEXPECTED" not in out
    assert not demo_threads()
    assert not logging.getLogger("queue_beanstalk").filters


def demo_threads() -> list[str]:
    """Return the names of the demo's producer and handler workers still alive."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith(("queue-beanstalk-worker-", "queue-beanstalk-demo-"))
    ]


def test_demo_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--url", "memory://", "--messages", "50"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "demo on memory://" in out
    check_demo_output(out, 50)


def test_demo_on_beanstalkd(beanstalkd_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Twice: queue names are unique to each run, so the jobs the first run left buried
    # on the server do not disturb the second.
    for _ in range(2):
        assert cli.main(["demo", "--url", beanstalkd_url, "--messages", "50"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert f"demo on {beanstalkd_url}" in out
        check_demo_output(out, 50)


def test_demo_without_url_starts_and_stops_a_throwaway_beanstalkd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[BeanstalkdServer] = []

    class Recorded(BeanstalkdServer):
        def start(self) -> BeanstalkdServer:
            started.append(self)
            return super().start()

    try:
        Recorded()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(demo, "BeanstalkdServer", Recorded)
    assert cli.main(["demo", "--messages", "10"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "started a throwaway beanstalkd" in out
    [server] = started
    assert f"demo on {server.url}" in out
    check_demo_output(out, 10)
    assert server.pid is None


def test_ctrl_c_while_the_handler_runs_stops_it_and_the_throwaway_beanstalkd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[BeanstalkdServer] = []

    class Recorded(BeanstalkdServer):
        def start(self) -> BeanstalkdServer:
            started.append(self)
            return super().start()

    def interrupted(self: object) -> None:
        # The first progress line comes while the producer puts and the workers handle.
        assert demo_threads()
        raise KeyboardInterrupt

    try:
        Recorded()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(demo, "BeanstalkdServer", Recorded)
    monkeypatch.setattr(_Mission, "_progress", interrupted)
    assert cli.main(["demo", "--messages", "1"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "queue-beanstalk: interrupted\n"
    [server] = started
    assert server.pid is None
    assert not demo_threads()
    assert not logging.getLogger("queue_beanstalk").filters


def test_a_connection_lost_by_the_producer_stops_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_put = MemoryBackend.put

    def lost_on_units(
        self: MemoryBackend, tube: str, body: bytes, *, priority: int, delay: int, ttr: int
    ) -> JobRef:
        if tube.endswith("-units"):
            raise QueueConnectionError("connection reset", "127.0.0.1:11300")
        return real_put(self, tube, body, priority=priority, delay=delay, ttr=ttr)

    monkeypatch.setattr(MemoryBackend, "put", lost_on_units)
    assert cli.main(["demo", "--url", "memory://"]) == cli.EXIT_CONNECTION
    assert capsys.readouterr().err == (
        "queue-beanstalk: error: cannot reach the queue server: "
        "connection reset (server 127.0.0.1:11300)\n"
    )
    assert not demo_threads()


def test_demo_falls_back_to_memory_without_beanstalkd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "")
    assert cli.main(["demo", "--messages", "10"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("beanstalkd is not installed (")
    assert lines[0].endswith("); using memory://")
    assert lines[1].endswith("demo on memory://")
    check_demo_output(out, 10)


def test_demo_falls_back_to_memory_when_beanstalkd_will_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(BeanstalkdServer):
        def __init__(self) -> None:
            super().__init__(binary=sys.executable)

        def start(self) -> BeanstalkdServer:
            raise RuntimeError("beanstalkd did not start: it exited")

    monkeypatch.setattr(demo, "BeanstalkdServer", Broken)
    assert cli.main(["demo", "--messages", "10"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "beanstalkd would not start (beanstalkd did not start: it exited); using memory://"
    )
    check_demo_output(out, 10)


def test_demo_reports_a_job_that_was_not_buried(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_stats_job = MemoryBackend.stats_job

    def not_buried(self: MemoryBackend, job: JobRef) -> JobStats:
        stats = real_stats_job(self, job)
        return dataclasses.replace(stats, state="ready")

    monkeypatch.setattr(MemoryBackend, "stats_job", not_buried)
    assert cli.main(["demo", "--url", "memory://", "--messages", "1"]) == cli.EXIT_ERROR
    out = capsys.readouterr().out
    # Once for the undecodable body, once for the message that always fails.
    assert len(re.findall(r"UNEXPECTED: job \d+ is 'ready', not 'buried'", out)) == 2
    assert out.rstrip().endswith("some steps did not go as expected: see the UNEXPECTED lines")


def test_demo_reports_a_retry_that_came_too_soon(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_handler = QueueFactory.handler

    def hasty(
        self: QueueFactory, func: Callable[[Message], object], *names: str, **options: Any
    ) -> Handler:
        return real_handler(self, func, *names, **{**options, "retry_delay": 0})

    monkeypatch.setattr(QueueFactory, "handler", hasty)
    assert cli.main(["demo", "--url", "memory://", "--messages", "1"]) == cli.EXIT_ERROR
    out = capsys.readouterr().out
    assert re.search(r"UNEXPECTED: flaky-app was called again after 0\.\d\ds, not 1s", out)
    assert re.search(r"UNEXPECTED: flakier-app was called again after 0\.\d\ds, not 1s", out)
    assert "busy-app was called again" not in out  # Retry(delay=1) still waits its second
    assert out.rstrip().endswith("some steps did not go as expected: see the UNEXPECTED lines")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == cli.EXIT_OK
    assert capsys.readouterr().out == f"queue-beanstalk {queue_beanstalk.__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["demo", "--messages", "0"],
        ["demo", "--messages", "many"],
        ["demo", "--url", "redis://127.0.0.1"],
        ["demo", "--url", "memory://?ttr=soon"],
    ],
)
def test_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: queue-beanstalk")
    assert "queue-beanstalk" in captured.err.splitlines()[-1]
    assert "Traceback" not in captured.err


def test_unknown_scheme_names_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--url", "redis://127.0.0.1"]) == cli.EXIT_USAGE
    assert "known schemes: beanstalk://, memory://" in capsys.readouterr().err


def test_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert cli.main(["demo", "--url", f"beanstalk://{address}"]) == cli.EXIT_CONNECTION
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("queue-beanstalk: error: cannot reach the queue server: ")
    assert f"(server {address})" in err
    assert "Traceback" not in err


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "queue_beanstalk", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_python_dash_m_runs_the_demo() -> None:
    result = run_module("demo", "--url", "memory://", "--messages", "20")
    assert result.returncode == cli.EXIT_OK, result.stderr
    check_demo_output(result.stdout, 20)
    # main() set up logging, so what the library logs reaches stderr; the demo's scripted
    # failures come without a traceback.
    err = result.stderr
    assert re.search(
        r"WARNING queue_beanstalk: job 2 on queue '[^']+' on server [^ ]+ could not be decoded", err
    )
    assert err.count("ERROR queue_beanstalk: handler function failed on ") == 6
    assert "flakier-app failed (attempt 2 of 3)\n" in err
    assert err.count("ERROR queue_beanstalk: giving up on ") == 1
    assert "args=('broken-app',)" in err
    assert "Traceback" not in err


def test_python_dash_m_unreachable_server_prints_one_line() -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_module("demo", "--url", f"beanstalk://{address}")
    assert result.returncode == cli.EXIT_CONNECTION
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"(server {address})" in result.stderr


def test_importing_the_cli_does_not_configure_logging() -> None:
    code = "import logging, queue_beanstalk.cli, queue_beanstalk.demo; print(logging.root.handlers)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "[]\n"

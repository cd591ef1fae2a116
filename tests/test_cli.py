"""The queue-beanstalk command line and its demo."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import queue_beanstalk
from queue_beanstalk import JobStats, MemoryBackend, cli, demo
from queue_beanstalk.testing import BeanstalkdServer, free_port

ROOT = Path(__file__).resolve().parent.parent

SUMMARY = "summary: 54 put, 55 got, 54 deleted, 1 released, 1 buried in "


def check_demo_output(out: str, messages: int) -> None:
    # Job ids are the server's: on a shared beanstalkd they depend on earlier tests.
    released = re.search(r"released job (\d+): it is ready again at once", out)
    assert released, out
    assert out.count(f"got job {released[1]} from units") == 2
    assert f"job {released[1]} came back with the same id" in out
    delayed = re.search(r"put job (\d+) on apps with delay=1", out)
    assert delayed, out
    assert "get(0) raised Timeout after " in out
    assert re.search(rf"get\(2\) returned job {delayed[1]} after \d+\.\d{{3}}s", out)
    buried = re.search(r"get\(0\) raised DecodeError: job (\d+) on queue '[^']+-apps'", out)
    assert buried, out
    assert f"job {buried[1]} is now 'buried'" in out
    empty = re.search(r"get\(1\) raised Timeout after (\d+\.\d{3})s", out)
    assert empty, out
    assert float(empty[1]) >= 1.0  # a get never gives up before its timeout
    assert f"burst: {messages} messages at " in out
    assert "UNEXPECTED" not in out


def test_demo_on_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--url", "memory://", "--messages", "50"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "demo on memory://" in out
    check_demo_output(out, 50)
    assert SUMMARY in out


def test_demo_on_beanstalkd(beanstalkd_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Twice: queue names are unique to each run, so the job the first run left buried
    # on the server does not disturb the second.
    for _ in range(2):
        assert cli.main(["demo", "--url", beanstalkd_url, "--messages", "50"]) == cli.EXIT_OK
        out = capsys.readouterr().out
        assert f"demo on {beanstalkd_url}" in out
        check_demo_output(out, 50)
        assert SUMMARY in out


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


def test_throwaway_beanstalkd_is_stopped_on_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started: list[BeanstalkdServer] = []

    class Recorded(BeanstalkdServer):
        def start(self) -> BeanstalkdServer:
            started.append(self)
            return super().start()

    def interrupted(self: MemoryBackend, job_id: int) -> JobStats:
        raise KeyboardInterrupt

    try:
        Recorded()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(demo, "BeanstalkdServer", Recorded)
    monkeypatch.setattr(demo, "factory", lambda url: queue_beanstalk.factory("memory://"))
    monkeypatch.setattr(MemoryBackend, "stats_job", interrupted)
    assert cli.main(["demo", "--messages", "1"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "queue-beanstalk: interrupted\n"
    [server] = started
    assert server.pid is None


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


def test_demo_reports_a_step_that_went_unexpectedly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_stats_job = MemoryBackend.stats_job

    def not_buried(self: MemoryBackend, job_id: int) -> JobStats:
        stats = real_stats_job(self, job_id)
        return dataclasses.replace(stats, state="ready")

    monkeypatch.setattr(MemoryBackend, "stats_job", not_buried)
    assert cli.main(["demo", "--url", "memory://", "--messages", "1"]) == cli.EXIT_ERROR
    out = capsys.readouterr().out
    assert re.search(r"UNEXPECTED: job \d+ is 'ready', not 'buried'", out)
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
    # The library logs the burial; main() set up logging, so it reaches stderr.
    assert "WARNING queue_beanstalk: job 5 on queue" in result.stderr


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

"""The queue-beanstalk command line (the demo's own tests are in test_demo.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import queue_beanstalk
from queue_beanstalk import cli
from queue_beanstalk.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


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

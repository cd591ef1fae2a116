"""Metrics: a handler's counts, the Prometheus collector, and the worker's ``--metrics-port``.

Every endpoint is scraped as Prometheus would, and read with ``prometheus_client``'s own parser.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from queue_beanstalk import Bury, Message, QueueFactory, Retry, cli, factory
from queue_beanstalk.metrics import (
    DURATION_BUCKETS,
    INSTALL_HINT,
    OUTCOMES,
    HandlerCollector,
    HandlerStats,
    serve,
)
from queue_beanstalk.testing import free_port

from .support import eventually

TASKS = """
import time

from queue_beanstalk import Bury, Retry


def work(message):
    if message.action == "fail":
        raise ValueError("failed on purpose")
    if message.action == "retry":
        raise Retry(3600)
    if message.action == "bury":
        raise Bury()
    if message.action == "sleep":
        time.sleep(float(message.args[0]))
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: A sample the worker test looks for: its name, queue label, and outcome or state label.
Key = tuple[str, str | None, str | None]


def work(message: Message) -> None:
    """The handler function of the in-process tests: as ``TASKS``'s ``work``."""
    if message.action == "fail":
        raise ValueError("failed on purpose")
    if message.action == "retry":
        raise Retry(3600)
    if message.action == "bury":
        raise Bury()


def _samples(text: str) -> Samples:
    """Parse Prometheus text: every sample's value by its name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a loopback URL
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return _samples(response.read().decode())


def _collected(queues: QueueFactory, *handlers: object) -> Samples:
    registry = CollectorRegistry()
    registry.register(HandlerCollector(queues, *handlers))  # type: ignore[arg-type]
    return _samples(generate_latest(registry).decode())


def _one_of_each(queues: QueueFactory, tube: str) -> None:
    """Put one message of each kind: handled, failing, retried, buried, undecodable."""
    queues.get(tube).put_many([Message(action) for action in ("ok", "fail", "retry", "bury")])
    queues.backend.put(tube, b"not json", priority=1024, delay=0, ttr=60)


# What _one_of_each's messages come to with max_attempts=2: the failing one is
# tried twice (released, then buried); the retried one waits, delayed.
EXPECTED = {"deleted": 1, "released": 2, "buried": 3, "failed": 2, "retried": 1}
CALLS = 5  # the undecodable body is never handed to the function


@pytest.fixture
def memory() -> Iterator[QueueFactory]:
    with factory("memory://") as queues:
        yield queues


def test_a_handler_counts_each_outcome_and_times_each_call(memory: QueueFactory) -> None:
    _one_of_each(memory, "jobs")
    handler = memory.handler(work, "jobs", "idle", max_attempts=2, retry_delay=0, burst=True)
    assert handler.stats().messages == {
        "jobs": dict.fromkeys(OUTCOMES, 0),
        "idle": dict.fromkeys(OUTCOMES, 0),
    }
    handler.start()
    assert handler.wait(10)

    stats = handler.stats()
    assert isinstance(stats, HandlerStats)
    assert stats.messages["jobs"] == EXPECTED
    assert stats.messages["idle"] == dict.fromkeys(OUTCOMES, 0)
    durations = stats.durations["jobs"]
    assert durations.count == CALLS
    assert 0 <= durations.sum < 5
    bounds = [bound for bound, _ in durations.buckets]
    assert bounds == [*DURATION_BUCKETS, float("inf")]
    counts = [count for _, count in durations.buckets]
    assert counts == sorted(counts)  # cumulative
    assert counts[-1] == CALLS
    assert stats.durations["idle"].count == 0


def test_the_counts_go_on_across_a_stop_and_a_start(memory: QueueFactory) -> None:
    jobs = memory.get("jobs")
    handler = memory.handler(work, "jobs", burst=True)
    for _ in range(2):
        jobs.put(Message("ok"))
        handler.start()
        assert handler.wait(10)
    assert handler.stats().messages["jobs"]["deleted"] == 2


def test_a_message_the_function_settled_itself_is_not_counted(memory: QueueFactory) -> None:
    jobs = memory.get("jobs")
    jobs.put(Message("ok"))
    handler = memory.handler(jobs.delete, "jobs", burst=True)
    handler.start()
    assert handler.wait(10)
    stats = handler.stats()
    assert stats.messages["jobs"] == dict.fromkeys(OUTCOMES, 0)
    assert stats.durations["jobs"].count == 1


def test_the_collector_gives_the_counts_and_the_queues_own(memory: QueueFactory) -> None:
    _one_of_each(memory, "jobs")
    handler = memory.handler(work, "jobs", "later", max_attempts=2, retry_delay=0, burst=True)
    handler.start()
    assert handler.wait(10)
    memory.get("later").put(Message("ok"))

    samples = _collected(memory, handler)

    for outcome, count in EXPECTED.items():
        assert _value(samples, "queue_beanstalk_messages_total", queue="jobs", outcome=outcome) == (
            count
        )
    assert _value(samples, "queue_beanstalk_handler_seconds_count", queue="jobs") == CALLS
    assert _value(samples, "queue_beanstalk_handler_seconds_bucket", queue="jobs", le="+Inf") == (
        CALLS
    )
    assert _value(samples, "queue_beanstalk_handler_seconds_bucket", queue="jobs", le="0.005") == (
        CALLS
    )
    states = {"ready": 0, "delayed": 1, "reserved": 0, "buried": 3}
    for state, count in states.items():
        assert _value(samples, "queue_beanstalk_queue_messages", queue="jobs", state=state) == count
    assert _value(samples, "queue_beanstalk_queue_messages", queue="later", state="ready") == 1
    assert _value(samples, "queue_beanstalk_queue_next_ready_age_seconds", queue="jobs") == 0
    assert _value(samples, "queue_beanstalk_queue_next_ready_age_seconds", queue="later") == 0
    assert _value(samples, "queue_beanstalk_up") == 1


def test_the_collector_adds_up_several_handlers(memory: QueueFactory) -> None:
    memory.get("jobs").put_many([Message("ok") for _ in range(10)])
    first = memory.handler(work, "jobs", burst=True)
    second = memory.handler(work, "jobs", "other", burst=True)
    for handler in (first, second):
        handler.start()
    for handler in (first, second):
        assert handler.wait(10)

    samples = _collected(memory, first, second)

    assert _value(samples, "queue_beanstalk_messages_total", queue="jobs", outcome="deleted") == 10
    assert _value(samples, "queue_beanstalk_handler_seconds_count", queue="jobs") == 10
    assert _value(samples, "queue_beanstalk_messages_total", queue="other", outcome="deleted") == 0


def test_a_scrape_without_the_server_says_so_and_keeps_the_counts() -> None:
    with factory(f"beanstalk://127.0.0.1:{free_port()}") as queues:
        handler = queues.handler(work, "jobs")
        registry = CollectorRegistry(auto_describe=True)
        registry.register(HandlerCollector(queues, handler))  # describe(): no round trip

        samples = _samples(generate_latest(registry).decode())

    assert _value(samples, "queue_beanstalk_up") == 0
    assert _value(samples, "queue_beanstalk_messages_total", queue="jobs", outcome="failed") == 0
    assert not any(name.startswith("queue_beanstalk_queue_") for name, _ in samples)


def test_serve_answers_over_http_until_closed(memory: QueueFactory) -> None:
    memory.get("jobs").put(Message("ok"))
    handler = memory.handler(work, "jobs", burst=True)
    handler.start()
    assert handler.wait(10)
    endpoint = serve(memory, handler, 0)
    try:
        assert endpoint.url.startswith("http://127.0.0.1:")
        samples = _scrape(endpoint.url)
    finally:
        endpoint.close()
    assert _value(samples, "queue_beanstalk_messages_total", queue="jobs", outcome="deleted") == 1
    assert any(name.startswith("process_") for name, _ in samples)
    with pytest.raises(urllib.error.URLError):
        _scrape(endpoint.url)


# The worker command


@pytest.fixture
def tasks(tmp_path: Path) -> str:
    """A module with the handler function, importable as ``<name>:work`` with ``--path``."""
    name = f"metrics_tasks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(TASKS))
    return name


def test_the_worker_serves_its_metrics(
    tasks: str, tmp_path: Path, beanstalkd_url: str, tube: str
) -> None:
    paused = f"{tube}-paused"
    port = free_port()
    with factory(beanstalkd_url) as queues:
        _one_of_each(queues, tube)
        queues.get(tube).put(Message("sleep", ["0.03"]))
        queues.get(paused).put(Message("ok"))
        queues.get(paused).pause(60)  # its message stays ready, and grows old
        process = subprocess.Popen(
            [
                sys.executable, "-m", "queue_beanstalk", "worker", f"{tasks}:work",
                "--queue", tube, "--queue", paused, "--url", beanstalkd_url,
                "--path", str(tmp_path), "--max-attempts", "2", "--retry-delay", "0",
                "--concurrency", "2", "--metrics-port", str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/metrics"
        # Each sample Prometheus should see once every message is settled (the
        # sleeping one deleted too; the paused queue's message a second old).
        outcomes = {**EXPECTED, "deleted": 2}
        states = {"ready": 0, "delayed": 1, "reserved": 0, "buried": 3}
        expected: dict[Key, float | None] = {
            **{("queue_beanstalk_messages_total", tube, o): n for o, n in outcomes.items()},
            **{("queue_beanstalk_queue_messages", tube, s): n for s, n in states.items()},
            ("queue_beanstalk_queue_messages", paused, "ready"): 1,
            ("queue_beanstalk_queue_next_ready_age_seconds", tube, None): 0,
            ("queue_beanstalk_handler_seconds_count", tube, None): 6,
            ("queue_beanstalk_up", None, None): 1,
        }
        scraped: list[Samples] = []

        def seen(samples: Samples) -> dict[Key, float | None]:
            def one(name: str, queue: str | None, label: str | None) -> float | None:
                labels = {} if queue is None else {"queue": queue}
                if label is not None:
                    labels["outcome" if name.endswith("_total") else "state"] = label
                return _value(samples, name, **labels)

            return {key: one(*key) for key in expected}

        def settled() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                scraped.append(_scrape(url))
            except urllib.error.URLError:
                return False  # not listening yet
            age = _value(scraped[-1], "queue_beanstalk_queue_next_ready_age_seconds", queue=paused)
            return seen(scraped[-1]) == expected and (age or 0) >= 1

        try:
            eventually(settled)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=15)
        finally:
            process.kill()
            queues.get(paused).pause(0)
    assert process.returncode == cli.EXIT_OK, stderr
    assert f"metrics at {url}" in stderr
    samples = scraped[-1]
    assert seen(samples) == expected
    # The sleeping call took 0.03 s or more: it is in no bucket below.
    assert _value(samples, "queue_beanstalk_handler_seconds_bucket", queue=tube, le="+Inf") == 6
    below = _value(samples, "queue_beanstalk_handler_seconds_bucket", queue=tube, le="0.025")
    assert below is not None
    assert below <= 5
    assert (_value(samples, "queue_beanstalk_handler_seconds_sum", queue=tube) or 0) >= 0.03
    assert _value(samples, "process_open_fds") is not None


def _two_free_ports() -> int:
    """Return a port that is free, with the next one free too."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            with contextlib.suppress(OSError), socket.create_server(("127.0.0.1", port + 1)):
                return port
    pytest.fail("no two free ports in a row")


def test_each_worker_process_serves_its_metrics_on_a_port_of_its_own(
    tasks: str, tmp_path: Path, beanstalkd_url: str, tube: str
) -> None:
    port = _two_free_ports()
    with factory(beanstalkd_url) as queues:
        queues.get(tube).put_many(Message("ok") for _ in range(20))
        err_path = tmp_path / "stderr.log"
        with err_path.open("w") as err:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "queue_beanstalk", "worker", f"{tasks}:work",
                    "--queue", tube, "--url", beanstalkd_url, "--path", str(tmp_path),
                    "--processes", "2", "--metrics-port", str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )  # fmt: skip

        def handled() -> float | None:
            try:
                counts = [
                    _value(_scrape(f"http://127.0.0.1:{p}/metrics"),
                           "queue_beanstalk_handler_seconds_count", queue=tube)
                    for p in (port, port + 1)
                ]  # fmt: skip
            except urllib.error.URLError:
                return None  # one is not listening yet
            return sum(count or 0 for count in counts)

        try:
            eventually(lambda: handled() == 20)
            process.send_signal(signal.SIGTERM)
            assert process.wait(15) == cli.EXIT_OK, err_path.read_text()
        finally:
            process.kill()
            # Only this test's processes: each worker process the parent logged.
            for pid in re.findall(r"started: pid (\d+)", err_path.read_text()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    log = err_path.read_text()
    assert f"metrics at http://127.0.0.1:{port}/metrics" in log
    assert f"metrics at http://127.0.0.1:{port + 1}/metrics" in log


def _worker(tasks: str, tmp_path: Path, *options: str) -> list[str]:
    """Return an in-process worker's command line, on memory://."""
    return [
        "worker", f"{tasks}:work", "--queue", "q", "--url", "memory://",
        "--path", str(tmp_path), *options,
    ]  # fmt: skip


@pytest.fixture
def restore_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let an in-process worker change the import path; it is put back after the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.mark.usefixtures("restore_path")
def test_without_prometheus_client_the_flag_says_what_to_install(
    tasks: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails, as if absent
    code = cli.main(_worker(tasks, tmp_path, "--metrics-port", str(free_port())))
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert INSTALL_HINT in err
    assert "Traceback" not in err


def test_the_library_imports_without_prometheus_client() -> None:
    script = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import queue_beanstalk, queue_beanstalk.cli, queue_beanstalk.metrics\n"
        "from queue_beanstalk import factory\n"
        "with factory('memory://') as queues:\n"
        "    print(queues.handler(print, 'q').stats().messages['q']['deleted'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr


@pytest.mark.usefixtures("restore_path")
def test_a_metrics_port_in_use_is_a_clear_error(
    tasks: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(_worker(tasks, tmp_path, "--metrics-port", str(port)))
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot serve the metrics on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--processes", "3", "--metrics-port", "65534"], "would need ports up to 65536"),
        (["--metrics-port", "70000"], "must be at most 65535"),
        (["--metrics-port", "0"], "must be at least 1"),
    ],
)
def test_metrics_options_that_cannot_work_are_usage_errors(
    options: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["worker", "no_such_module:work", "--queue", "q", "--url", "memory://", *options]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert words in capsys.readouterr().err


def test_the_metrics_help_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["worker", "--help"]) == cli.EXIT_OK
    assert "queue_beanstalk[metrics]" in capsys.readouterr().out.replace("\n", " ")

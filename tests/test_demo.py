"""The demo: where each of its messages went, checked on the server, and its command line.

The demo only shows; these tests check what it shows against the library's
documented behaviour, from the :class:`~queue_beanstalk.demo.Summary` it returns
and the server's own state after the run. ``problems`` is the check; the tests
that break a run on purpose prove that it can fail.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TextIO

import pytest

from queue_beanstalk import (
    Handler,
    MemoryBackend,
    Message,
    NotFound,
    QueueConnectionError,
    QueueFactory,
    Timeout,
    __version__,
    cli,
    demo,
    factory,
)
from queue_beanstalk.backend import JobRef
from queue_beanstalk.demo import Call, Summary
from queue_beanstalk.testing import BeanstalkdServer

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 20  # in the burst
# beanstalkd times a delay by its own clock: allow it to disagree with ours by this much.
CLOCK_SLACK = 0.05
# Calls each scripted app takes (written out here, not taken from the demo's script):
# one failure then handled, two failures then handled, a Retry then handled, and
# max_attempts failures then buried. Every other app: one call.
CALLS = {"flaky-app": 2, "flakier-app": 3, "busy-app": 2, "broken-app": 3}


def problems(summary: Summary, queues: QueueFactory) -> list[str]:
    """Return how the run went other than the library documents; empty when it did not."""
    found: list[str] = []

    def state(job: JobRef) -> str:
        try:
            return queues.backend.stats_job(job).state
        except NotFound:
            return "gone"

    # Part 1: the released message comes back and is deleted; the undecodable one is buried.
    first, got, again = summary.by_hand
    if not first == got == again:
        found.append(f"put job {first.id}, got job {got.id}, released it and got job {again.id}")
    if state(first) != "gone":
        found.append(f"deleted job {first.id} is {state(first)!r}")
    if summary.undecodable is None:
        found.append("get() decoded b'not json'")
    elif state(summary.undecodable) != "buried":
        found.append(f"undecodable job {summary.undecodable.id} is {state(summary.undecodable)!r}")

    # Part 2: every message put is called as scripted, no sooner than its delay or the
    # retry delay allow, and ends deleted, or buried for the one that always fails.
    if len(summary.puts) != 32 or {put.job for put in summary.puts} != set(summary.calls):
        found.append(f"{len(summary.puts)} messages put, {len(summary.calls)} called")
    for put in summary.puts:
        calls = summary.calls.get(put.job, ())
        if len(calls) != CALLS.get(put.app, 1):
            found.append(f"{put.app} had {len(calls)} call(s), not {CALLS.get(put.app, 1)}")
        if calls and calls[0].start - put.at < put.delay - CLOCK_SLACK:
            waited = calls[0].start - put.at
            found.append(f"{put.app}, delayed by {put.delay}s, was called after {waited:.2f}s")
        for before, after in pairwise(calls):
            if after.start - before.end < demo.RETRY_DELAY - CLOCK_SLACK:
                gap = after.start - before.end
                found.append(f"{put.app} was called again after {gap:.2f}s")
        wanted = "buried" if put.app == demo.BROKEN else "gone"
        if state(put.job) != wanted:
            found.append(f"{put.app}'s job {put.job.id} is {state(put.job)!r}, not {wanted!r}")
        elif wanted == "buried":
            stats = queues.backend.stats_job(put.job)
            if (stats.reserves, stats.buries) != (demo.MAX_ATTEMPTS, 1):
                found.append(f"{put.app}: {stats.reserves} reserves, {stats.buries} buries")
    if most_at_once(summary) > demo.CONCURRENCY:
        found.append(f"{most_at_once(summary)} calls at once, concurrency={demo.CONCURRENCY}")

    # Part 3, and what is left: every message settled in time, nothing ready on the queues.
    if summary.burst != MESSAGES or not summary.settled:
        found.append(f"burst: {summary.burst} of {MESSAGES} handled; settled={summary.settled}")
    for name in summary.queues:
        try:
            left = queues.get(name).get(0)
        except Timeout:
            continue
        found.append(f"job {left.id} left ready on {name}")
    return found


def most_at_once(summary: Summary) -> int:
    """Return the most calls of part 2 that overlapped in time."""
    # An end sorts before a start at the same instant: those two calls did not overlap.
    calls = [call for made in summary.calls.values() for call in made]
    edges = sorted([(call.start, 1) for call in calls] + [(call.end, -1) for call in calls])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def demo_threads() -> list[str]:
    """Return the names of handler workers still alive."""
    return [t.name for t in threading.enumerate() if t.name.startswith("queue-beanstalk-worker-")]


class Run(NamedTuple):
    queues: QueueFactory
    summary: Summary
    out: str


@pytest.fixture(scope="module")
def on_memory() -> Iterator[Run]:
    """One run of the demo on memory://, its factory left open to inspect."""
    out = io.StringIO()
    with factory("memory://") as queues:
        yield Run(queues, demo.run_with(queues, MESSAGES, out), out.getvalue())


def test_on_memory_every_message_goes_where_the_library_says(on_memory: Run) -> None:
    assert problems(on_memory.summary, on_memory.queues) == []


def test_on_beanstalkd_every_message_goes_where_the_library_says(beanstalkd_url: str) -> None:
    # Twice on one server: queue names are unique to each run, so the jobs the
    # first run left buried do not disturb the second.
    with factory(beanstalkd_url) as queues:
        first = demo.run_with(queues, MESSAGES, io.StringIO())
        second = demo.run_with(queues, MESSAGES, io.StringIO())
        assert problems(first, queues) == []
        assert problems(second, queues) == []
    assert not set(first.queues) & set(second.queues)


def test_the_demo_prints_what_happens_and_leaves_nothing_behind(on_memory: Run) -> None:
    out = on_memory.out
    assert re.search(r"put job \d+; got it, released it, got it again, deleted it\n", out)
    undecodable = re.search(r"job (\d+), b'not json' from another client: get\(0\) raised", out)
    assert undecodable, out
    assert f"job {undecodable[1]} is now 'buried'" in out
    calls = re.findall(r"^ +\d+\.\d\ds  (apps|units) +([\w-]+) +call (\d): (.+)$", out, re.M)
    assert [call[1:] for call in calls if call[1] == "flakier-app"] == [
        ("flakier-app", "1", "failed"),
        ("flakier-app", "2", "failed"),
        ("flakier-app", "3", "handled"),
    ]
    assert ("busy-app", "1", "raised Retry") in [call[1:] for call in calls]
    assert ("broken-app", "3", "failed, given up") in [call[1:] for call in calls]
    assert len(calls) == 14  # the 10 calls of the 4 scripted apps, and the 4 delayed ones
    assert "31 handled, 1 given up, in " in out
    assert re.search(r"broken-app's job \d+ is now 'buried' \(stats-job: 3 reserves, 1 bury\)", out)
    assert f"3. {MESSAGES} no-op messages through a handler with 4 workers" in out
    assert re.search(r"first put to last call: \d+\.\d{3}s, [\d,]+ messages/s\n$", out)
    assert not demo_threads()
    assert not logging.getLogger("queue_beanstalk").filters


def _moved(summary: Summary, app: str, index: int, seconds: float) -> Summary:
    """Return ``summary`` with the start of call ``index`` of ``app``'s job moved by ``seconds``."""
    job = next(put.job for put in summary.puts if put.app == app)
    calls = list(summary.calls[job])
    calls[index] = calls[index]._replace(start=calls[index].start + seconds)
    return dataclasses.replace(summary, calls={**summary.calls, job: tuple(calls)})


def _swapped(summary: Summary, app: str, other: str) -> Summary:
    """Return ``summary`` with the jobs of ``app`` and ``other`` swapped, calls and all."""
    jobs = {put.app: put.job for put in summary.puts}
    puts = tuple(
        put._replace(job=jobs[other] if put.app == app else jobs[app])
        if put.app in (app, other)
        else put
        for put in summary.puts
    )
    return dataclasses.replace(summary, puts=puts)


def _crowded(summary: Summary) -> Summary:
    """Return ``summary`` with five jobs called once each, all at the same moment, later."""
    start = max(call.end for calls in summary.calls.values() for call in calls) + 10
    calls = {job: (Call(start, start + 1, "handled"),) for job in list(summary.calls)[-5:]}
    return dataclasses.replace(summary, calls={**summary.calls, **calls})


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (lambda s: _moved(s, "flaky-app", 1, -0.5), "flaky-app was called again after 0.5"),
        (lambda s: _moved(s, "app-03", 0, -1.5), "app-03, delayed by 2s, was called after 0."),
        (lambda s: _swapped(s, "broken-app", "app-07"), "app-07's job"),  # not deleted
        (lambda s: _swapped(s, "broken-app", "app-07"), "broken-app's job"),  # not buried
        (lambda s: dataclasses.replace(s, undecodable=s.by_hand[0]), "undecodable job"),
        (lambda s: dataclasses.replace(s, by_hand=(*s.by_hand[:2], s.puts[0].job)), "and got job"),
        (lambda s: dataclasses.replace(s, puts=s.puts[:-1]), "31 messages put, 32 called"),
        (lambda s: dataclasses.replace(s, calls=dict(list(s.calls.items())[1:])), "had 0 call"),
        (_crowded, "5 calls at once"),
        (lambda s: dataclasses.replace(s, burst=MESSAGES - 1), "burst: 19 of 20 handled"),
    ],
)
def test_the_check_finds_a_run_gone_wrong(
    on_memory: Run, broken: Callable[[Summary], Summary], problem: str
) -> None:
    found = problems(broken(on_memory.summary), on_memory.queues)
    assert any(problem in line for line in found), found


def test_the_check_finds_retries_that_came_too_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    real_handler = QueueFactory.handler

    def hasty(
        self: QueueFactory, func: Callable[[Message], object], *names: str, **options: Any
    ) -> Handler:
        return real_handler(self, func, *names, **{**options, "retry_delay": 0})

    monkeypatch.setattr(QueueFactory, "handler", hasty)
    with factory("memory://") as queues:
        found = problems(demo.run_with(queues, MESSAGES, io.StringIO()), queues)
    assert any(line.startswith("flaky-app was called again after 0.") for line in found), found
    assert any(line.startswith("flakier-app was called again after 0.") for line in found)
    # Retry(delay=1) still waits its second.
    assert not any(line.startswith("busy-app") for line in found), found


def test_run_with_refuses_an_empty_burst() -> None:
    with factory("memory://") as queues, pytest.raises(ValueError, match="at least 1, not 0"):
        demo.run_with(queues, 0, io.StringIO())


# The command line. Where only the choice of server matters, run_with is replaced by
# a quick stand-in that proves the factory it was given reaches a working server.


def quick_run_with(queues: QueueFactory, messages: int, out: TextIO) -> Summary:
    echo = queues.get("demo-quick")
    echo.put(Message("ping"))
    echo.delete(echo.get(0))
    out.write("quick demo\n")
    return Summary((), (), None, (), {}, messages, settled=True)


def test_the_command_exits_1_when_the_messages_were_not_settled_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unsettled(queues: QueueFactory, messages: int, out: TextIO) -> Summary:
        return dataclasses.replace(quick_run_with(queues, messages, out), settled=False)

    monkeypatch.setattr(demo, "run_with", unsettled)
    assert cli.main(["demo", "--url", "memory://"]) == cli.EXIT_ERROR


class Recorded(BeanstalkdServer):
    """A throwaway beanstalkd that tells the test it was started."""

    started: ClassVar[list[BeanstalkdServer]] = []

    def start(self) -> BeanstalkdServer:
        self.started.append(self)
        return super().start()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[BeanstalkdServer]:
    """Throwaway servers the demo starts, listed; skips when beanstalkd is not installed."""
    try:
        BeanstalkdServer()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(Recorded, "started", [])
    monkeypatch.setattr(demo, "BeanstalkdServer", Recorded)
    return Recorded.started


def test_without_url_the_demo_starts_and_stops_a_throwaway_beanstalkd(
    recorded: list[BeanstalkdServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(demo, "run_with", quick_run_with)
    assert cli.main(["demo"]) == cli.EXIT_OK
    [server] = recorded
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"started a throwaway beanstalkd, pid \d+, stopped at the end", lines[0])
    assert lines[1:] == [f"queue_beanstalk {__version__} demo on {server.url}", "quick demo"]
    assert server.pid is None


def test_ctrl_c_while_the_handler_runs_stops_it_and_the_throwaway_beanstalkd(
    recorded: list[BeanstalkdServer],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    class CtrlCOnceAllArePut(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("   put 32 messages"):
                assert demo_threads()  # the handler's workers are at work
                raise KeyboardInterrupt
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", CtrlCOnceAllArePut())
    assert cli.main(["demo", "--messages", "1"]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "queue-beanstalk: interrupted\n"
    [server] = recorded
    assert server.pid is None
    assert not demo_threads()
    assert not logging.getLogger("queue_beanstalk").filters


def test_a_connection_lost_while_putting_stops_the_demo(
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
    assert not logging.getLogger("queue_beanstalk").filters


def test_the_demo_falls_back_to_memory_without_beanstalkd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(demo, "run_with", quick_run_with)
    assert cli.main(["demo"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("beanstalkd is not installed (")
    assert lines[0].endswith("); using memory://")
    assert lines[1:] == [f"queue_beanstalk {__version__} demo on memory://", "quick demo"]


def test_the_demo_falls_back_to_memory_when_beanstalkd_will_not_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Broken(BeanstalkdServer):
        def __init__(self) -> None:
            super().__init__(binary=sys.executable)

        def start(self) -> BeanstalkdServer:
            raise RuntimeError("beanstalkd did not start: it exited")

    monkeypatch.setattr(demo, "BeanstalkdServer", Broken)
    monkeypatch.setattr(demo, "run_with", quick_run_with)
    assert cli.main(["demo"]) == cli.EXIT_OK
    assert capsys.readouterr().out.splitlines() == [
        "beanstalkd would not start (beanstalkd did not start: it exited); using memory://",
        f"queue_beanstalk {__version__} demo on memory://",
        "quick demo",
    ]


def test_python_dash_m_runs_the_demo() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "queue_beanstalk", "demo", "--url", "memory://", "--messages", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == cli.EXIT_OK, result.stderr
    assert "31 handled, 1 given up, in " in result.stdout
    # main() set up logging, so what the library logs reaches stderr; the demo's scripted
    # failures come without a traceback.
    err = result.stderr
    assert re.search(
        r"WARNING queue_beanstalk: job 2 on queue '[^']+' on server [^ ]+ could not be decoded", err
    )
    # Six failed calls, one line each; the first of each queue's at ERROR, and the
    # message given up on too; what the message's arguments are is never logged.
    failures = [line for line in err.splitlines() if "handler function failed on " in line]
    assert len(failures) == 6
    assert sum(" ERROR queue_beanstalk: " in line for line in failures) == 3
    assert "ScriptedFailure: flakier-app failed (call 2 of at most 3); retrying in 1s\n" in err
    assert err.count("; giving up, buried\n") == 1
    assert "args=(" not in err
    assert "Traceback" not in err

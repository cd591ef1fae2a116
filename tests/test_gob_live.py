"""Go and Python sharing queues: Go's encoding/gob against GobCodec, both ways, live.

These tests need ``go`` (Debian: ``apt-get install golang-go``; ``make test``
installs it under CI=true). Without it they are skipped, saying why, except
under CI=true, where they fail. The Go programs in ``tests/gob/`` use the
standard library only and build offline; the peer speaks beanstalkd's protocol
itself. Here:

- the committed vectors are still what the generator writes, and GobCodec reads
  every vector it writes now as Go's decoder does;
- Go's decoder reads what GobCodec writes;
- a Go producer and consumer and Python's queues and handler share real
  beanstalkd tubes, with ``codec="gob"``, ``"auto"`` and ``"auto:gob"``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queue_beanstalk import GobCodec, Handler, Message, Received, factory

from .gob_support import PYTHON_WRITES, check_vector, load_vectors
from .support import eventually, put_job, ref

GO_SOURCES = Path(__file__).parent / "gob"


@dataclass(frozen=True)
class GoPrograms:
    """The Go programs of ``tests/gob/``, built."""

    generator: Path
    peer: Path

    def peer_run(self, *args: str, lines: Sequence[str] = ()) -> list[Any]:
        """Run the peer with ``lines`` on its standard input; return the JSON lines it prints."""
        done = subprocess.run(
            [str(self.peer), *args],
            input="".join(f"{line}\n" for line in lines),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"peer {' '.join(args)} failed: {done.stderr}"
        return [json.loads(line) for line in done.stdout.splitlines()]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def go(tmp_path_factory: pytest.TempPathFactory) -> GoPrograms:
    """The Go programs, built once for the session with the ``go`` on the PATH."""
    binary = shutil.which("go")
    if binary is None:
        reason = "'go' is not on the PATH (Debian: apt-get install golang-go)"
        if _in_ci():
            pytest.fail(f"CI=true and {reason}: the Go peer tests cannot run")
        pytest.skip(f"{reason}; the tests against Go's encoding/gob need it")
    work = tmp_path_factory.mktemp("go")
    # Standard library only, no modules, no network, no C compiler, nothing
    # written outside the temporary directory.
    environment = {
        **os.environ,
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOCACHE": str(work / "cache"),
        "GOPATH": str(work / "gopath"),
    }
    built = {}
    for name in ("generate", "peer"):
        output = work / name
        done = subprocess.run(
            [binary, "build", "-o", str(output), str(GO_SOURCES / name / "main.go")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"go build of tests/gob/{name} failed: {done.stderr}")
        built[name] = output
    return GoPrograms(built["generate"], built["peer"])


def _address(url: str) -> str:
    return url.removeprefix("beanstalk://")


def _as_json(message: Message) -> str:
    return json.dumps({"action": message.action, "args": list(message.args)})


def _decoded(message: Message) -> dict[str, object]:
    return {"action": message.action, "args": list(message.args)}


# Offline: the vectors, and Go reading Python's bodies ---------------------------------


def test_the_vectors_are_what_go_writes(go: GoPrograms, tmp_path: Path) -> None:
    fresh = tmp_path / "vectors.jsonl"
    done = subprocess.run([str(go.generator)], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    fresh.write_bytes(done.stdout)
    now, committed = load_vectors(fresh), load_vectors()
    assert [vector.name for vector in now] == [vector.name for vector in committed]
    for vector, before in zip(now, committed, strict=True):
        # Go's decoder says the same of each body as when the vectors were made
        # (maps are written in random order, so not every body is the same).
        assert (vector.action, vector.args, vector.error) == (
            before.action,
            before.args,
            before.error,
        ), vector.name
        if vector.name in PYTHON_WRITES:
            assert vector.body == before.body, vector.name
        check_vector(vector, GobCodec())


def _messages() -> list[Message]:
    """Messages of every shape: the edge cases, then random ones (seeded)."""
    messages = [
        Message("x"),
        Message("regenerate-apprc", ["myapp"]),
        Message("x", [""]),
        Message("x", ["", "", ""]),
        Message("café ☕", ["ü", "日本語", "🎉", "\x00", "\r\n", "\u2028", "\ufeff"]),
        Message("a" * 127, ["b" * 128, "c" * 255, "d" * 256, "e" * 65535]),
        Message("many", [str(number) for number in range(5000)]),
        Message("big", ["z" * 1_000_000]),
    ]
    rng = random.Random(14)
    alphabet = 'aé日🎉\x00\n"\\ {}[]:,'
    for _ in range(300):
        action = "".join(rng.choices(alphabet, k=rng.randint(1, 20)))
        args = [
            "".join(rng.choices(alphabet, k=rng.choice([0, 1, 5, 130, 300])))
            for _ in range(rng.choice([0, 1, 2, 10, 200]))
        ]
        messages.append(Message(action, args))
    return messages


def test_go_decodes_what_python_encodes(go: GoPrograms) -> None:
    messages = _messages()
    bodies = [GobCodec().encode(message).hex() for message in messages]
    decoded = go.peer_run("decode", lines=bodies)
    assert decoded == [_decoded(message) for message in messages]


# Live, on beanstalkd -----------------------------------------------------------------

SOME = [
    Message("regenerate-apprc", ["myapp"]),
    Message("x"),
    Message("café", ["", "日本語", "a" * 300]),
    Message("many", [str(number) for number in range(500)]),
]


def test_python_gets_what_go_puts(go: GoPrograms, beanstalkd_url: str, tube: str) -> None:
    ids = go.peer_run("put", _address(beanstalkd_url), tube, lines=[_as_json(m) for m in SOME])
    assert len(ids) == len(SOME)
    with factory(beanstalkd_url, codec="gob") as queues:
        queue = queues.get(tube)
        for expected, job_id in zip(SOME, ids, strict=True):
            got = queue.get(timeout=5)
            assert got == expected
            assert got.id == job_id
            stats = queues.backend.stats_job(ref(got))
            assert (stats.priority, stats.ttr) == (1, 180)  # as tsuru's queue put them
            queue.delete(got)


@pytest.mark.parametrize("codec", ["gob", "auto:gob"])
def test_go_gets_what_python_puts(
    go: GoPrograms, beanstalkd_url: str, tube: str, codec: str
) -> None:
    with factory(f"{beanstalkd_url}?codec={codec}") as queues:
        for message in SOME:
            queues.get(tube).put(message)
    got = go.peer_run("get", _address(beanstalkd_url), tube, str(len(SOME)))
    assert got == [_decoded(message) for message in SOME]


def test_go_cannot_read_json(go: GoPrograms, beanstalkd_url: str, tube: str) -> None:
    """Why ``auto:gob`` (reads both, writes gob) comes first while Go programs still consume."""
    with factory(beanstalkd_url, codec="auto") as queues:
        job = put_job(queues.get(tube), Message("x"))
        (got,) = go.peer_run("get", _address(beanstalkd_url), tube, "1")
        assert got["error"]  # Go's decoder reads the "{" as a length, and runs out
        assert queues.backend.stats_job(job).state == "buried"  # the peer buries it


def test_auto_reads_go_and_python_bodies_in_one_queue(
    go: GoPrograms, beanstalkd_url: str, tube: str
) -> None:
    from_go = [Message("from-go", [str(n)]) for n in range(3)]
    from_python = [Message("from-python", [str(n)]) for n in range(3)]
    with factory(beanstalkd_url, codec="auto") as queues:
        queue = queues.get(tube)
        go.peer_run("put", _address(beanstalkd_url), tube, lines=[_as_json(m) for m in from_go])
        for message in from_python:
            queue.put(message, priority=1)  # JSON, as "auto" writes; after Go's, in order
        got = []
        for _ in range(6):
            message = queue.get(timeout=5)
            got.append(message)
            queue.delete(message)
    assert got == from_go + from_python


@pytest.fixture
def handlers() -> Iterator[list[Handler]]:
    """Handlers to stop and wait for after the test, whatever its outcome."""
    started: list[Handler] = []
    yield started
    for handler in started:
        if handler.running:
            handler.stop()
        assert handler.wait(10)


def test_a_handler_drains_a_queue_a_go_producer_fills(
    go: GoPrograms, beanstalkd_url: str, tube: str, handlers: list[Handler]
) -> None:
    messages = [Message("work", [str(number), "é" * number]) for number in range(100)]
    handled: list[Received] = []
    lock = threading.Lock()

    def handle(message: Received) -> None:
        with lock:
            handled.append(message)

    with factory(beanstalkd_url, codec="gob") as queues:
        handler = queues.handler(handle, tube, concurrency=4)
        handlers.append(handler)
        handler.start()
        lines = [_as_json(message) for message in messages]
        go.peer_run("put", _address(beanstalkd_url), tube, lines=lines)
        eventually(lambda: len(handled) == len(messages))
        handler.stop()
        assert handler.wait(10)
        assert sorted(handled, key=lambda m: int(m.args[0])) == messages
        assert queues.backend.peek(tube, "ready") is None
        assert queues.backend.peek(tube, "buried") is None

"""The operating commands (stats, peek, kick, delete, put, pause, empty), run as an operator does.

Each runs ``python -m queue_beanstalk`` as a subprocess against the real
beanstalkd of the session (three of them for the several-servers cases).
"""

from __future__ import annotations

import base64
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_beanstalk import (
    DecodeError,
    JobRef,
    Message,
    NotFound,
    Queue,
    QueueFactory,
    Timeout,
    cli,
    factory,
)
from queue_beanstalk.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, url: str | None, environment: str | None = None, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``queue-beanstalk ARGS [--url URL]``; $QUEUE_BEANSTALK_URL is ``environment``."""
    env = {key: value for key, value in os.environ.items() if key != "QUEUE_BEANSTALK_URL"}
    env["PYTHONPATH"] = str(ROOT)
    if environment is not None:
        env["QUEUE_BEANSTALK_URL"] = environment
    command, *rest = args
    url_option = [] if url is None else ["--url", url]  # before a put's "--" and ARGS
    return subprocess.run(
        [sys.executable, "-m", "queue_beanstalk", command, *url_option, *rest],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
    )


def ok(*args: str, url: str) -> str:
    """Run the command, which must succeed quietly; return its stdout."""
    result = run(*args, url=url)
    assert (result.returncode, result.stderr) == (cli.EXIT_OK, ""), result
    return result.stdout


def fails(code: int, *args: str, url: str | None) -> str:
    """Run the command, which must exit ``code`` with one line (after any usage); return it."""
    result = run(*args, url=url)
    assert result.returncode == code, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    if code != cli.EXIT_USAGE:
        assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.splitlines()[-1]


def table(output: str) -> dict[str, dict[str, str]]:
    """Return the stats table's rows by queue, each by column."""
    header, *rows = (line.split() for line in output.splitlines())
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}


def fields(output: str) -> dict[str, str]:
    """Return peek's ``name: value`` lines."""
    found = {}
    for line in output.splitlines():
        name, value = line.split(":", 1)
        found[name] = value.strip()
    return found


@pytest.fixture
def queues(beanstalkd_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_url) as made:
        yield made


def bury(queue: Queue, *messages: Message) -> None:
    """Put each message and bury it, as a handler does with one that keeps failing."""
    for message in messages:
        queue.put(message)
        queue.bury(queue.get(timeout=5))


def address_of(url: str) -> str:
    return url.removeprefix("beanstalk://")


# stats


def test_stats_shows_every_queue_in_aligned_columns(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    queue.put(Message("ready"), priority=10)
    queue.put(Message("ready"))
    queue.put(Message("later"), delay=60)
    bury(queue, Message("failed"))
    held = queue.get(timeout=5)
    try:
        output = ok("stats", url=beanstalkd_url)
    finally:
        queue.release(held)
    lines = output.splitlines()
    assert lines[0].split() == [
        "queue", "ready", "delayed", "reserved", "buried", "urgent", "waiting", "paused"
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1, output  # every column right-aligned
    rows = table(output)
    assert "default" in rows  # no QUEUE: every queue the server has
    assert rows[tube] == {
        "ready": "1", "delayed": "1", "reserved": "1", "buried": "1", "urgent": "0",
        "waiting": "0", "paused": "-",
    }  # fmt: skip


def test_stats_of_named_queues_shows_only_those(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queues.get(tube).put(Message("a"))
    other = f"{tube}-other"
    rows = table(ok("stats", tube, other, url=beanstalkd_url))
    assert list(rows) == [tube, other]
    assert (rows[tube]["ready"], rows[other]["ready"]) == ("1", "0")


def test_stats_json_gives_each_queue_its_counts(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    queue.put(Message("a"))
    queue.put(Message("b"), delay=60)
    queue.pause(30)
    found = json.loads(ok("stats", "--json", url=beanstalkd_url))
    figures = found["queues"][tube]
    assert figures == {
        "ready": 1, "delayed": 1, "reserved": 0, "buried": 0, "urgent": 0, "waiting": 0,
        "watching": 0, "total": 2, "paused": True, "pause_left": figures["pause_left"],
    }  # fmt: skip
    assert 0 < figures["pause_left"] <= 30
    assert "default" in found["queues"]
    assert found["servers"] == [address_of(beanstalkd_url)]
    assert found["unreachable"] == []
    assert found["time"].endswith("Z")


def test_stats_watch_shows_the_figures_again_until_ctrl_c(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    process = subprocess.Popen(
        [sys.executable, "-m", "queue_beanstalk", "stats", tube, "--json", "--watch", "0.2",
         "--url", beanstalkd_url],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # A shell's background job starts with SIGINT ignored, and children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        queue.put(Message("a"))
        readies = [first["queues"][tube]["ready"]]
        while readies[-1] == 0:  # redrawn, with the put seen
            readies.append(json.loads(process.stdout.readline())["queues"][tube]["ready"])
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert readies[0] == 0
    assert readies[-1] == 1
    assert process.returncode == cli.EXIT_OK, stderr
    assert "Traceback" not in stderr


# peek


def test_peek_shows_the_next_message_and_its_counters(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    job = queue.put(Message("deploy", ["my app", "v2"]), priority=7)
    queue.put(Message("after"))
    queue.release(queue.get(timeout=5), priority=7)
    shown = fields(ok("peek", tube, url=beanstalkd_url))
    assert shown["queue"] == tube
    assert shown["id"] == str(job)
    assert shown["server"] == address_of(beanstalkd_url)
    assert (shown["state"], shown["action"], shown["args"]) == (
        "ready",
        "deploy",
        '["my app", "v2"]',
    )
    assert (shown["priority"], shown["reserves"], shown["releases"]) == ("7", "1", "1")
    assert shown["age"].endswith(" s")
    assert "body" not in shown


def test_peek_shows_the_raw_body_of_a_buried_undecodable_message(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    body = b"\xff not json"
    ref = queues.backend.put(tube, body, priority=0, delay=0, ttr=60)
    with pytest.raises(DecodeError):
        queues.get(tube).get(timeout=5)  # buries it
    shown = fields(ok("peek", tube, "--buried", url=beanstalkd_url))
    assert (shown["id"], shown["state"]) == (str(ref.id), "buried")
    assert shown["body"] == repr(body)
    assert "UTF-8" in shown["undecodable"]
    assert "action" not in shown
    assert (shown["reserves"], shown["buries"]) == ("1", "1")

    found = json.loads(ok("peek", tube, "--buried", "--json", url=beanstalkd_url))
    assert base64.b64decode(found["body_base64"]) == body
    assert (found["id"], found["state"], found["action"], found["args"]) == (
        ref.id, "buried", None, None
    )  # fmt: skip
    assert "UTF-8" in found["error"]


def test_peek_delayed_json(queues: QueueFactory, beanstalkd_url: str, tube: str) -> None:
    job = queues.get(tube).put(Message("later", ["x"]), delay=60)
    found = json.loads(ok("peek", tube, "--delayed", "--json", url=beanstalkd_url))
    assert (found["id"], found["state"], found["action"], found["args"]) == (
        job, "delayed", "later", ["x"]
    )  # fmt: skip
    assert 0 < found["time_left"] <= 60
    assert "body_base64" not in found


def test_peek_with_nothing_to_show_says_so_and_exits_0(beanstalkd_url: str, tube: str) -> None:
    assert (
        ok("peek", tube, "--buried", url=beanstalkd_url) == f"no buried message on queue {tube}\n"
    )
    assert json.loads(ok("peek", tube, "--json", url=beanstalkd_url)) is None


# kick


def test_kick_n_makes_buried_messages_ready(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    bury(queue, Message("a"), Message("b"), Message("c"))
    assert ok("kick", tube, "2", url=beanstalkd_url) == f"kicked 2 messages of queue {tube}\n"
    assert (queue.stats().ready, queue.stats().buried) == (2, 1)
    assert ok("kick", tube, url=beanstalkd_url) == f"kicked 1 message of queue {tube}\n"
    assert (queue.stats().ready, queue.stats().buried) == (3, 0)


def test_kick_one_message_by_id(queues: QueueFactory, beanstalkd_url: str, tube: str) -> None:
    queue = queues.get(tube)
    first, wanted = Message("first"), Message("wanted")
    bury(queue, first, wanted)  # a plain kick would take the first
    assert wanted.id is not None
    output = ok("kick", tube, "--id", str(wanted.id), url=beanstalkd_url)
    assert output == f"kicked message {wanted.id} of queue {tube}\n"
    assert queues.backend.stats_job(JobRef(wanted.id, address_of(beanstalkd_url))).state == "ready"
    assert queue.stats().buried == 1
    line = fails(cli.EXIT_ERROR, "kick", tube, "--id", str(wanted.id), url=beanstalkd_url)
    assert line.endswith(
        f"message {wanted.id} of queue {tube} is ready, not buried or delayed: nothing to kick"
    )


def test_kick_takes_a_count_or_an_id_not_both(beanstalkd_url: str, tube: str) -> None:
    line = fails(cli.EXIT_USAGE, "kick", tube, "1", "--id", "5", url=beanstalkd_url)
    assert "not allowed with" in line


# delete


def test_delete_deletes_a_message_nobody_holds(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    message = Message("poison")
    bury(queues.get(tube), message)
    assert message.id is not None
    output = ok("delete", tube, str(message.id), url=beanstalkd_url)
    assert output == f"deleted message {message.id} of queue {tube}\n"
    with pytest.raises(NotFound):
        queues.backend.stats_job(JobRef(message.id, address_of(beanstalkd_url)))


def test_delete_refuses_a_reserved_message(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    queue.put(Message("busy"))
    held = queue.get(timeout=5)
    assert held.id is not None
    line = fails(cli.EXIT_ERROR, "delete", tube, str(held.id), url=beanstalkd_url)
    assert "reserved" in line
    queue.delete(held)  # still ours to settle


def test_delete_refuses_a_message_of_another_queue_or_none(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    job = queues.get(f"{tube}-other").put(Message("not yours"))
    line = fails(cli.EXIT_ERROR, "delete", tube, str(job), url=beanstalkd_url)
    assert line.endswith(f"job {job} is on queue {tube}-other, not {tube}")
    assert queues.backend.stats_job(JobRef(job, address_of(beanstalkd_url))).state == "ready"
    line = fails(cli.EXIT_ERROR, "delete", tube, "999999999", url=beanstalkd_url)
    assert line.endswith(f"no job 999999999 on queue {tube}")


# put


def test_put_prints_the_id_of_the_message_it_stores(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    output = ok(
        "put", "--delay", "30", "--priority", "5", "--ttr", "9", tube, "deploy", "--",
        "my app", "--force", url=beanstalkd_url,
    )  # fmt: skip
    job = JobRef(int(output), address_of(beanstalkd_url))
    stats = queues.backend.stats_job(job)
    assert (stats.tube, stats.state, stats.priority, stats.ttr) == (tube, "delayed", 5, 9)
    peeked = queues.get(tube).peek_delayed()
    assert peeked is not None
    assert peeked.message == Message("deploy", ["my app", "--force"])


def test_put_takes_options_after_its_args(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    output = ok("put", tube, "deploy", "a", "b", "--priority", "3", url=beanstalkd_url)
    peeked = queues.get(tube).peek_ready()
    assert peeked is not None
    assert (peeked.id, peeked.message, peeked.stats.priority) == (
        int(output), Message("deploy", ["a", "b"]), 3
    )  # fmt: skip


# pause


def test_pause_stops_gets_until_resumed(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    queue.put(Message("a"))
    assert ok("pause", tube, "60", url=beanstalkd_url) == f"paused queue {tube} for 60 s\n"
    with pytest.raises(Timeout):
        queue.get(timeout=1)
    assert ok("pause", tube, "0", url=beanstalkd_url) == f"resumed queue {tube}\n"
    queue.delete(queue.get(timeout=5))


# empty


def test_empty_with_yes_deletes_every_message_in_that_state(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    bury(queue, Message("a"), Message("b"))
    queue.put(Message("c"))
    output = ok("empty", tube, "--buried", "--yes", url=beanstalkd_url)
    assert output == f"deleted 2 buried messages of queue {tube}\n"
    assert (queue.stats().buried, queue.stats().ready) == (0, 1)


def test_empty_without_yes_off_a_terminal_refuses(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queue = queues.get(tube)
    bury(queue, Message("a"))
    line = fails(cli.EXIT_USAGE, "empty", tube, "--buried", url=beanstalkd_url)
    assert "pass --yes" in line
    assert queue.stats().buried == 1


@pytest.mark.parametrize(("answer", "code", "left"), [("y", 0, 0), ("n", 1, 2), ("", 1, 2)])
def test_empty_on_a_terminal_asks_first(
    queues: QueueFactory, beanstalkd_url: str, tube: str, answer: str, code: int, left: int
) -> None:
    queue = queues.get(tube)
    bury(queue, Message("a"), Message("b"))
    controller, terminal = pty.openpty()
    try:
        os.write(controller, f"{answer}\n".encode())
        result = run("empty", tube, "--buried", url=beanstalkd_url, stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == code, result
    assert result.stderr.startswith(f"delete 2 buried messages of {tube}? [y/N] ")
    assert queue.stats().buried == left


# errors


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["peek", "q"],
        ["kick", "q"],
        ["delete", "q", "1"],
        ["put", "q", "action"],
        ["pause", "q", "5"],
        ["empty", "q", "--ready", "--yes"],
    ],
)
def test_an_unreachable_server_exits_3_with_one_line(args: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    line = fails(cli.EXIT_CONNECTION, *args, url=f"beanstalk://{address}")
    assert line.startswith("queue-beanstalk: error: cannot reach the queue server: ")
    assert f"(server {address})" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["stats", "bad name"], "queue name 'bad name' is refused"),
        (["peek", "x" * 201], "beanstalkd accepts at most 200"),
        (["peek", "q", "--ready", "--buried"], "not allowed with"),
        (["kick", "q", "0"], "must be at least 1"),
        (["delete", "q", "x"], "expected a job id"),
        (["delete", "q", "1@"], "ID@host:port"),
        (["put", "bad!", "a"], "queue name 'bad!' is refused"),
        (["put", "q", ""], "the action must not be empty"),
        (["put", "q", "a", "--ttr", "0"], "expected seconds to run"),
        (["put", "q", "a", "--priority", "4294967296"], "expected a priority"),
        (["pause", "q", "-1"], "must be a finite number of seconds >= 0"),
        (["empty", "q"], "one of the arguments --ready --delayed --buried is required"),
        (["stats", "--watch", "0"], "more than 0"),
    ],
)
def test_a_bad_command_line_exits_2(args: list[str], words: str) -> None:
    line = fails(cli.EXIT_USAGE, *args, url=f"beanstalk://127.0.0.1:{free_port()}")
    assert line.startswith(f"queue-beanstalk {args[0]}: error: ")
    assert words in line


def test_the_url_comes_from_the_environment_as_for_the_worker(
    queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    queues.get(tube).put(Message("a"))
    result = run("stats", tube, url=None, environment=beanstalkd_url)
    assert result.returncode == cli.EXIT_OK, result
    assert table(result.stdout)[tube]["ready"] == "1"
    result = run("stats", url=None, environment="redis://127.0.0.1")
    assert result.returncode == cli.EXIT_USAGE
    assert result.stderr.startswith("queue-beanstalk: error: $QUEUE_BEANSTALK_URL: unknown queue")


# several servers


@pytest.fixture
def servers_queues(beanstalkd_servers_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_servers_url) as made:
        yield made


def same_id_on(tube: str, addresses: list[str]) -> int:
    """Put a message on ``tube`` on each server, all with the same id; return it."""

    def put_on(address: str, gap: int = 0) -> JobRef:
        with factory(f"beanstalk://{address}") as one:
            if gap > 0:  # ids are counted per server: use up the ones in between
                filler = one.get(f"{tube}-filler")
                filler.put_many([Message("filler") for _ in range(gap)])
                filler.empty("ready")
            return one.backend.put(tube, b'["same", []]', priority=0, delay=0, ttr=60)

    refs = {address: put_on(address) for address in addresses}
    while len({ref.id for ref in refs.values()}) > 1:
        high = max(ref.id for ref in refs.values())
        for address, ref in refs.items():
            if ref.id < high:
                with factory(f"beanstalk://{address}") as one:
                    one.backend.delete_job(ref)
                refs[address] = put_on(address, high - ref.id - 1)
    return next(iter(refs.values())).id


def test_stats_json_gives_each_servers_figures(
    servers_queues: QueueFactory, beanstalkd_servers_url: str, tube: str
) -> None:
    addresses = address_of(beanstalkd_servers_url).split(",")
    same_id_on(tube, addresses[:2])
    found = json.loads(ok("stats", tube, "--json", url=beanstalkd_servers_url))
    assert found["servers"] == addresses
    assert found["unreachable"] == []
    figures = found["queues"][tube]
    assert figures["ready"] == 2
    assert {address: one["ready"] for address, one in figures["servers"].items()} == {
        addresses[0]: 1, addresses[1]: 1, addresses[2]: 0
    }  # fmt: skip
    assert "servers" not in figures["servers"][addresses[0]]


def test_an_id_on_several_servers_must_name_its_server(
    servers_queues: QueueFactory, beanstalkd_servers_url: str, tube: str
) -> None:
    addresses = address_of(beanstalkd_servers_url).split(",")
    job = same_id_on(tube, addresses[:2])
    line = fails(cli.EXIT_ERROR, "delete", tube, str(job), url=beanstalkd_servers_url)
    assert f"job {job} of queue {tube} is on several servers" in line
    assert all(address in line for address in addresses[:2])
    assert f"{job}@{addresses[0]}" in line

    output = ok("delete", tube, f"{job}@{addresses[1]}", url=beanstalkd_servers_url)
    assert output == f"deleted message {job}@{addresses[1]} of queue {tube}\n"
    with pytest.raises(NotFound):
        servers_queues.backend.stats_job(JobRef(job, addresses[1]))
    # Now only one server has it: the plain id is enough.
    assert servers_queues.backend.stats_job(JobRef(job, addresses[0])).state == "ready"
    ok("delete", tube, str(job), url=beanstalkd_servers_url)
    with pytest.raises(NotFound):
        servers_queues.backend.stats_job(JobRef(job, addresses[0]))


def test_with_several_servers_ids_are_printed_and_taken_with_their_server(
    servers_queues: QueueFactory, beanstalkd_servers_url: str, tube: str
) -> None:
    addresses = address_of(beanstalkd_servers_url).split(",")
    output = ok("put", tube, "a", "--delay", "60", url=beanstalkd_servers_url).strip()
    number, _, server = output.partition("@")
    assert server in addresses
    assert servers_queues.backend.stats_job(JobRef(int(number), server)).tube == tube
    assert fields(ok("peek", tube, "--delayed", url=beanstalkd_servers_url))["id"] == output
    other = next(address for address in addresses if address != server)
    line = fails(
        cli.EXIT_ERROR, "kick", tube, "--id", f"{number}@{other}", url=beanstalkd_servers_url
    )
    assert other in line
    ok("kick", tube, "--id", output, url=beanstalkd_servers_url)
    assert servers_queues.backend.stats_job(JobRef(int(number), server)).state == "ready"
    line = fails(
        cli.EXIT_ERROR, "delete", tube, f"{number}@elsewhere:1", url=beanstalkd_servers_url
    )
    assert line.endswith(f"no server elsewhere:1 among {', '.join(addresses)}")

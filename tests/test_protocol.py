"""The protocol core without I/O: commands, statuses, stats, the watch list. No socket here."""

from __future__ import annotations

import ast
import inspect

import pytest

from queue_beanstalk import NotFound, QueueConnectionError, ServerError, Timeout
from queue_beanstalk.backends import protocol
from queue_beanstalk.backends.protocol import ProtocolError, Refused


def test_the_core_does_no_io() -> None:
    tree = ast.parse(inspect.getsource(protocol))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"socket", "select", "selectors", "time", "asyncio"}


@pytest.mark.parametrize(
    ("command", "data", "reply"),
    [
        (protocol.put(b"a\r\nb", 1, 2, 3), b"put 1 2 3 4\r\na\r\nb\r\n", b"INSERTED"),
        (protocol.reserve(5), b"reserve-with-timeout 5\r\n", b"RESERVED"),
        (protocol.delete(7), b"delete 7\r\n", b"DELETED"),
        (
            protocol.delete_then_reserve(7, 5),
            b"delete 7\r\nreserve-with-timeout 5\r\n",
            b"DELETED",
        ),
        (protocol.release(7, 10, 2), b"release 7 10 2\r\n", b"RELEASED"),
        (protocol.bury(7, 10), b"bury 7 10\r\n", b"BURIED"),
        (protocol.touch(7), b"touch 7\r\n", b"TOUCHED"),
        (protocol.kick_job(7), b"kick-job 7\r\n", b"KICKED"),
        (protocol.stats_job(7), b"stats-job 7\r\n", b"OK"),
        (protocol.STATS, b"stats\r\n", b"OK"),
        (protocol.use("jobs"), b"use jobs\r\n", b"USING"),
        (protocol.watch("jobs"), b"watch jobs\r\n", b"WATCHING"),
        (protocol.ignore("jobs"), b"ignore jobs\r\n", b"WATCHING"),
    ],
    ids=lambda value: value[0].split(b" ")[0].decode() if isinstance(value, tuple) else "",
)
def test_each_command_and_its_reply(command: protocol.Command, data: bytes, reply: bytes) -> None:
    assert command == (data, reply)


@pytest.mark.parametrize(
    ("watched", "tubes", "plan"),
    [
        ({"default"}, ("a", "b"), (["a", "b"], ["default"])),
        ({"default", "a"}, ("a",), ([], ["default"])),
        ({"a"}, ("b", "a", "b"), (["b"], [])),
        ({"c", "b"}, ("a",), (["a"], ["b", "c"])),
    ],
)
def test_the_watch_plan_watches_first_in_order_then_ignores(
    watched: set[str], tubes: tuple[str, ...], plan: tuple[list[str], list[str]]
) -> None:
    assert protocol.watch_plan(watched, tubes) == plan


def test_stats_are_parsed_without_a_socket() -> None:
    fields = protocol.parse_stats(b'---\nid: 5\ntube: "jobs"\nstate: ready\n')
    assert fields == {"id": "5", "tube": "jobs", "state": "ready"}
    with pytest.raises(ProtocolError, match="---"):
        protocol.parse_stats(b"id: 5\n")
    with pytest.raises(ProtocolError, match="without a value"):
        protocol.parse_stats(b"---\nhello\n")
    with pytest.raises(ProtocolError, match="max-job-size"):
        protocol.max_job_size({})
    assert protocol.max_job_size({"max-job-size": "65535"}) == 65535


def test_a_stats_job_reply_becomes_job_stats() -> None:
    body = (
        b"---\nid: 5\ntube: jobs\nstate: buried\npri: 7\nage: 3\nttr: 60\nreserves: 2\n"
        b"timeouts: 0\nreleases: 1\nburies: 1\nkicks: 0\n"
    )
    stats = protocol.job_stats(protocol.parse_stats(body))
    assert (stats.id, stats.tube, stats.state, stats.priority, stats.reserves) == (
        5,
        "jobs",
        "buried",
        7,
        2,
    )
    with pytest.raises(ProtocolError, match="number"):
        protocol.job_stats(protocol.parse_stats(body.replace(b"pri: 7", b"pri: x")))


@pytest.mark.parametrize(
    ("status", "values", "error"),
    [
        ("TIMED_OUT", [], Timeout),
        ("NOT_FOUND", [], NotFound),
        ("DRAINING", [], ServerError),
        ("OUT_OF_MEMORY", [], ServerError),
        ("INTERNAL_ERROR", [], ServerError),
        ("BAD_FORMAT", [], QueueConnectionError),
        ("DEADLINE_SOON", [], QueueConnectionError),
        ("JOB_TOO_BIG", [], QueueConnectionError),
    ],
)
def test_a_refusal_maps_to_its_error(status: str, values: list[bytes], error: type) -> None:
    assert isinstance(protocol.refusal_error(Refused(status, values), "h:1"), error)


def test_what_a_refusal_means_for_the_library() -> None:
    assert Refused("BURIED", [b"12"]).stored_id == 12
    assert Refused("BURIED", []).stored_id is None  # a bury's own BURIED: no id
    assert Refused("JOB_TOO_BIG", []).too_big
    assert Refused("NOT_FOUND", []).not_found
    assert Refused("TIMED_OUT", []).no_job_yet
    assert Refused("DEADLINE_SOON", []).no_job_yet
    assert Refused("DEADLINE_SOON", []).deadline_soon
    assert not Refused("NOT_FOUND", []).no_job_yet
    with pytest.raises(ProtocolError):
        _ = Refused("BURIED", [b"1" * 21]).stored_id


@pytest.mark.parametrize("value", [b"", b"-1", b"1.5", b"\xb2", b"9" * 21])
def test_a_number_is_ascii_digits_at_most_twenty(value: bytes) -> None:
    with pytest.raises(ProtocolError):
        protocol.number(value)

"""The protocol core without I/O: commands, statuses, stats, the watch list. No socket here."""

from __future__ import annotations

import ast
import inspect
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_beanstalk import NotFound, QueueConnectionError, ServerError, Timeout
from queue_beanstalk.backends import protocol
from queue_beanstalk.backends.beanstalk import translate
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
    stats = protocol.job_stats(protocol.parse_stats(body), "server")
    assert (stats.id, stats.tube, stats.state, stats.priority, stats.reserves) == (
        5,
        "jobs",
        "buried",
        7,
        2,
    )
    with pytest.raises(ProtocolError, match="number"):
        protocol.job_stats(protocol.parse_stats(body.replace(b"pri: 7", b"pri: x")), "server")


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


# Reading replies, fed byte by byte: no socket, no thread (h11's tests/test_io.py).


def test_a_line_comes_whole_only_with_its_crlf() -> None:
    reader = protocol.ReplyReader()
    for byte in b"INSERTED 5\r":
        reader.feed(bytes([byte]))
        assert reader.line() is None
    reader.feed(b"\n")
    assert reader.line() == b"INSERTED 5"
    assert reader.unread == 0


def test_a_reserve_reply_fed_byte_by_byte() -> None:
    reply = b'RESERVED 7 24\r\n{"action":"a","args":[]}\r\n'
    reader = protocol.ReplyReader()
    line = None
    for index, byte in enumerate(reply):
        reader.feed(bytes([byte]))
        line = reader.line()
        if line is not None:
            rest = reply[index + 1 :]
            break
    assert line is not None
    job_id, size = protocol.reserved(line)
    assert (job_id, size) == (7, 24)
    for byte in rest[:-1]:
        reader.feed(bytes([byte]))
        assert reader.block(size) is None
    reader.feed(rest[-1:])
    assert reader.block(size) == b'{"action":"a","args":[]}'
    assert reader.unread == 0


def test_pipelined_replies_in_one_feed_are_read_in_order() -> None:
    reader = protocol.ReplyReader()
    reader.feed(b"INSERTED 1\r\nINSERTED 2\r\nDELETED\r\nOK 5\r\n---\na\r\nTIMED_OUT\r\n")
    assert protocol.reply_number(reader.line() or b"", b"INSERTED") == 1
    assert protocol.reply_number(reader.line() or b"", b"INSERTED") == 2
    assert protocol.reply_values(reader.line() or b"", b"DELETED", 0) == []
    size = protocol.number(protocol.reply_values(reader.line() or b"", b"OK", 1)[0])
    assert reader.block(size) == b"---\na"
    with pytest.raises(Refused) as refused:
        protocol.reserved(reader.line() or b"")
    assert refused.value.no_job_yet
    assert reader.line() is None


def test_the_end_of_the_stream_mid_reply_is_a_protocol_error() -> None:
    reader = protocol.ReplyReader()
    reader.feed(b"INSERTED")
    assert reader.line() is None
    reader.feed(b"")
    with pytest.raises(ProtocolError, match="ended"):
        reader.line()
    reader = protocol.ReplyReader()
    reader.feed(b"abc")
    reader.feed(b"")
    with pytest.raises(ProtocolError, match="ended"):
        reader.block(10)


def test_an_end_between_replies_is_told_from_one_in_the_middle() -> None:
    reader = protocol.ReplyReader()
    reader.feed(b"DELETED\r\n")
    assert reader.line() == b"DELETED"
    reader.feed(b"")
    with pytest.raises(protocol.StreamEnded):
        reader.line()
    error = translate(protocol.StreamEnded("closed"), "h:1")
    assert isinstance(error, QueueConnectionError)
    assert "connection failed" in str(error)


def test_a_line_longer_than_beanstalkd_sends_is_refused_early() -> None:
    reader = protocol.ReplyReader()
    reader.feed(b"X" * (protocol.MAX_LINE + 1))
    with pytest.raises(ProtocolError, match="longer"):
        reader.line()


def test_a_block_without_its_crlf_is_refused() -> None:
    reader = protocol.ReplyReader()
    reader.feed(b"abcXY")
    with pytest.raises(ProtocolError, match="CRLF"):
        reader.block(3)


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=10))
@settings(max_examples=300, deadline=None)
def test_any_bytes_in_any_pieces_raise_only_protocol_errors(data: bytes, cuts: list[int]) -> None:
    reader = protocol.ReplyReader()
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut <= len(data))})
    for start, end in itertools.pairwise(bounds):
        reader.feed(data[start:end])
    reader.feed(b"")
    try:
        while (line := reader.line()) is not None:
            try:
                _, size = protocol.reserved(line)
            except Refused:
                continue
            reader.block(size)
    except ProtocolError:
        pass

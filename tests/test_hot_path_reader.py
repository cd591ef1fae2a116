"""The hot path's shortcuts: replies read in one call, a batch's commands in one format.

A RESERVED reply is read in one call, and so is a run of DELETED replies.

Each reads or writes exactly what the general path does.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_beanstalk.backends import protocol
from queue_beanstalk.backends.connections import set_timeouts
from queue_beanstalk.backends.protocol import ProtocolError, Refused, ReplyReader
from queue_beanstalk.backends.wire import BodyLimit, Wire, found_each


def _reserved(job_id: int, body: bytes) -> bytes:
    return b"RESERVED %d %d\r\n%b\r\n" % (job_id, len(body), body)


def _slow(reader: ReplyReader) -> tuple[int, bytes] | None:
    """Read a reserve's reply the general way: its line, then its block."""
    line = reader.line()
    if line is None:
        return None
    job_id, size = protocol.reserved(line)
    block = reader.block(size)
    assert block is not None
    return job_id, block


def _job(reader: ReplyReader, limit: int) -> tuple[int, bytes] | None:
    """Read one reserve's reply through the shortcut, as a single reserve does."""
    jobs = reader.jobs(limit, 1)
    return jobs[0] if jobs else None


def test_a_whole_reserved_reply_is_read_in_one_call() -> None:
    reader = ReplyReader()
    reader.feed(_reserved(7, b"abc") + _reserved(8, b"") + b"DELETED\r\n")
    assert _job(reader, 100) == (7, b"abc")
    assert _job(reader, 100) == (8, b"")
    assert _job(reader, 100) is None  # not a RESERVED reply: left for line()
    assert reader.line() == b"DELETED"
    assert reader.unread == 0


def test_the_last_reply_read_leaves_no_body_behind() -> None:
    reader = ReplyReader()
    reader.feed(_reserved(7, b"x" * 1000))
    assert _job(reader, 2000) == (7, b"x" * 1000)
    assert reader._data == b""  # an idle connection keeps no body
    assert reader.unread == 0


@pytest.mark.parametrize(
    "data",
    [
        b"RESERVED 7 3\r\nab",  # the block is not all here
        b"RESERVED 7 3",  # nor the line
        b"RESERVED 7 3\r\nabcXY",  # a block without its CRLF
        b"RESERVED 7 300\r\n" + b"x" * 300 + b"\r\n",  # over the limit
        b"RESERVED 7 -3\r\nabc\r\n",
        b"RESERVED  7 3\r\nabc\r\n",
        b"RESERVED 7 3 4\r\nabc\r\n",
        b"RESERVED %b 3\r\nabc\r\n" % (b"9" * 21),
        b"TIMED_OUT\r\n",
        b"DEADLINE_SOON\r\n",
        b"FOUND 7 3\r\nabc\r\n",
        b"",
    ],
)
def test_anything_else_is_left_unread_for_the_general_path(data: bytes) -> None:
    reader = ReplyReader()
    reader.feed(data)
    assert _job(reader, 100) is None
    assert reader.unread == len(data)


def test_a_reply_in_pieces_is_left_to_the_general_path() -> None:
    reader = ReplyReader()
    reply = _reserved(7, b"abc")
    reader.feed(reply[:5])
    reader.feed(reply[5:])
    assert _job(reader, 100) is None
    assert _slow(reader) == (7, b"abc")


replies = st.lists(
    st.one_of(
        st.builds(_reserved, st.integers(0, 2**64 - 1), st.binary(max_size=40)),
        st.sampled_from([b"TIMED_OUT\r\n", b"DELETED\r\n", b"RESERVED 1 2\r\nabXY"]),
    ),
    max_size=6,
)


@given(
    parts=replies,
    cuts=st.lists(st.integers(0, 400), max_size=8),
    limit=st.integers(0, 50),
    most=st.integers(1, 6),
)
@settings(max_examples=300, deadline=None)
def test_the_shortcut_reads_what_the_general_path_reads(
    parts: list[bytes], cuts: list[int], limit: int, most: int
) -> None:
    data = b"".join(parts)
    bounds = sorted({0, len(data), *(cut for cut in cuts if cut <= len(data))})

    def read(shortcut: bool) -> list[object]:
        reader = ReplyReader()
        for start, end in itertools.pairwise(bounds):
            reader.feed(data[start:end])
        got: list[object] = []
        try:
            while reader.unread:
                run = reader.jobs(limit, most) if shortcut else []
                assert len(run) <= most
                if not run:
                    line = reader.line()
                    if line is None:
                        break
                    job_id, size = protocol.reserved(line)
                    if size > limit:
                        raise ProtocolError("over the limit")  # as Wire.body refuses it
                    got.append((job_id, reader.block(size)))
                got += run
        except (Refused, ProtocolError) as exc:
            got.append(type(exc))
        got.append(reader.unread)
        return got

    assert read(shortcut=True) == read(shortcut=False)


def test_a_run_of_whole_reserved_replies_is_read_in_one_call() -> None:
    reader = ReplyReader()
    tail = b"TIMED_OUT\r\n" + _reserved(9, b"late")
    reader.feed(_reserved(7, b"a") + _reserved(8, b"bc") + tail)
    assert reader.jobs(100, 1) == [(7, b"a")]  # no more than asked for
    assert reader.jobs(100, 5) == [(8, b"bc")]  # up to the first reply that is no job
    assert reader.jobs(100, 5) == []
    assert reader.unread == len(tail)
    assert reader.line() == b"TIMED_OUT"
    assert reader.jobs(3, 5) == []  # over the limit: for the general path to refuse


def test_a_wire_reads_what_pipelined_reserves_got_in_one_call() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeouts(ours, 1.0)
        wire = Wire(ours, 1.0, BodyLimit(100))
        theirs.sendall(_reserved(1, b"a") + _reserved(2, b"b") + b"TIMED_OUT\r\n")
        assert wire.reserved_run(3, 0.0) == [(1, b"a"), (2, b"b")]
        with pytest.raises(Refused):
            wire.reserved_run(1, 0.0)
        theirs.sendall(b"RESERVED 3 1\r\n")  # a reply in pieces: read the general way
        rest = threading.Timer(0.05, theirs.sendall, [b"c\r\n"])
        rest.start()
        assert wire.reserved_run(2, time.monotonic() + 1) == [(3, b"c")]
        rest.join()


def test_replies_all_the_same_are_read_in_one_call() -> None:
    reader = ReplyReader()
    reader.feed(b"DELETED\r\n" * 3 + _reserved(5, b"x"))
    assert reader.repeated(b"DELETED\r\n", 3) == 3
    assert _job(reader, 100) == (5, b"x")
    assert reader.unread == 0


@pytest.mark.parametrize(
    ("data", "run"),
    [
        (b"DELETED\r\nDELETED\r\n", 2),  # the third has not come
        (b"DELETED\r\nNOT_FOUND\r\nDELETED\r\n", 1),  # the second is another reply
        (b"DELETED\r\nDELETED\r\nDELE", 2),  # the third is in pieces
        (b"NOT_FOUND\r\nDELETED\r\nDELETED\r\n", 0),
        (b"DELETED\r\n" * 4, 3),  # no more than asked for
    ],
)
def test_a_run_of_the_same_reply_is_read_up_to_the_first_other(data: bytes, run: int) -> None:
    reader = ReplyReader()
    reader.feed(data)
    assert reader.repeated(b"DELETED\r\n", 3) == run
    assert reader.unread == len(data) - run * len(b"DELETED\r\n")


@given(
    replies=st.lists(st.sampled_from([b"DELETED\r\n", b"NOT_FOUND\r\n", b"DELE"]), max_size=12),
    most=st.integers(1, 12),
)
def test_a_run_is_the_replies_read_one_at_a_time_up_to_the_first_other(
    replies: list[bytes], most: int
) -> None:
    data = b"".join(replies)
    expected = 0
    while expected < most and data.startswith(b"DELETED\r\n", expected * 9):
        expected += 1
    reader = ReplyReader()
    reader.feed(data)
    assert reader.repeated(b"DELETED\r\n", most) == expected
    assert reader.unread == len(data) - expected * 9


def test_found_each_reads_a_refusal_among_pipelined_deletes() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeouts(ours, 1.0)
        wire = Wire(ours, 1.0, BodyLimit(100))
        theirs.sendall(b"DELETED\r\nNOT_FOUND\r\nDELETED\r\nDELETED\r\nDEL")
        rest = threading.Timer(0.05, theirs.sendall, [b"ETED\r\n"])
        rest.start()
        assert found_each(wire, b"DELETED", 5, "delete") == [True, False, True, True, True]
        rest.join()
        theirs.sendall(b"DELETED\r\n" * 2)
        assert found_each(wire, b"DELETED", 2, "delete") == [True, True]
        assert found_each(wire, b"DELETED", 0, "delete") == []  # nothing due: no receive


def test_a_wire_reads_a_pipelined_reserved_reply_without_waiting() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        set_timeouts(ours, 1.0)
        wire = Wire(ours, 1.0, BodyLimit(100))
        theirs.sendall(b"DELETED\r\n" + _reserved(3, b"hi") + _reserved(4, b"yo"))
        wire.reply(b"DELETED", 0)
        assert wire.reserved(0.0) == (3, b"hi")  # here already: the deadline is not needed
        assert wire.reserved(0.0) == (4, b"yo")


@pytest.mark.parametrize(
    ("job_ids", "seconds", "count", "expected"),
    [
        ([], 5, 1, b"reserve-with-timeout 5\r\n"),
        ([7], 5, 1, b"delete 7\r\nreserve-with-timeout 5\r\n"),
        (
            [7, 12345678901234567890],
            0,
            3,
            b"delete 7\r\ndelete 12345678901234567890\r\nreserve-with-timeout 0\r\n"
            b"reserve-with-timeout 0\r\nreserve-with-timeout 0\r\n",
        ),
    ],
)
def test_a_batch_is_its_deletes_then_its_reserves(
    job_ids: list[int], seconds: int, count: int, expected: bytes
) -> None:
    assert protocol.delete_then_reserve_batch(job_ids, seconds, count) == expected


def test_a_run_of_inserted_replies_is_read_in_one_call() -> None:
    reader = ReplyReader()
    reader.feed(b"INSERTED 1\r\nINSERTED 22\r\nINSERTED 333\r\nBURIED 4\r\nINSERTED 5\r\nINS")
    assert reader.inserted(2) == [1, 22]
    assert reader.inserted(5) == [333]  # up to the first other reply
    assert reader.inserted(5) == []
    assert reader.line() == b"BURIED 4"
    assert reader.inserted(5) == [5]  # and not the one still coming
    assert reader.unread == 3
    reader.feed(b"ERTED 6\r\n")  # in pieces: read one at a time
    assert reader.inserted(5) == []
    assert reader.line() == b"INSERTED 6"


def test_puts_are_what_put_makes_joined() -> None:
    bodies = [b"a", b"", b"with\r\ncrlf", b"x" * 300]
    assert protocol.puts(bodies, 7, 3, 60) == b"".join(
        protocol.put(body, 7, 3, 60)[0] for body in bodies
    )

"""The exception tree, the one translation boundary, and the exported names.

The last part talks to a fake beanstalkd that misbehaves on purpose: whatever
it sends, a put must end in QueueConnectionError, quickly, and never leak a
parsing error (``AssertionError``, ``ValueError``, ``KeyError``).
"""

from __future__ import annotations

import inspect
import pkgutil
import time
from collections.abc import Mapping
from importlib import import_module

import pytest

import queue_beanstalk
from queue_beanstalk import (
    CommandRefused,
    DecodeError,
    HandlerNotRunning,
    InvalidName,
    Message,
    MessageTooBig,
    NotFound,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
    errors,
    factory,
)
from queue_beanstalk.backend import JobRef
from queue_beanstalk.backends import beanstalk, protocol
from queue_beanstalk.backends.beanstalk import translate

from .conftest import StartFake
from .support import Reply, stats_reply

ADDRESS = "h:1"

# (a) Every lower-level exception is translated.

EXPECTED: Mapping[str, type[QueueError]] = {
    "TIMED_OUT": Timeout,
    "NOT_FOUND": NotFound,
    "OUT_OF_MEMORY": ServerError,
    "DRAINING": ServerError,
    "INTERNAL_ERROR": ServerError,
    "BURIED": ServerError,
}


@pytest.mark.parametrize("status", sorted(s.decode() for s in protocol.ERROR_STATUSES))
def test_every_refusal_the_protocol_defines_is_translated(status: str) -> None:
    exc = protocol.Refused(status, [b"1"])
    assert isinstance(exc, beanstalk.LOWER_ERRORS), "the backend would not catch it"
    error = translate(exc, ADDRESS)
    # The rest say the client and the server disagree about the protocol.
    expected = EXPECTED.get(status, CommandRefused)
    assert type(error) is expected
    if isinstance(error, QueueConnectionError):
        assert ADDRESS in str(error)
        assert error.address == ADDRESS
    if isinstance(error, CommandRefused):
        assert error.reply == status
    if isinstance(error, ServerError):
        assert error.reply == status
        assert status in str(error)


def test_the_protocol_statuses_are_those_of_protocol_txt() -> None:
    assert {s.decode() for s in protocol.ERROR_STATUSES} >= set(EXPECTED) | {
        "BAD_FORMAT", "UNKNOWN_COMMAND", "EXPECTED_CRLF", "JOB_TOO_BIG", "NOT_IGNORED",
        "DEADLINE_SOON",
    }  # fmt: skip


@pytest.mark.parametrize(
    "exc",
    [
        protocol.ProtocolError("unexpected reply b'GARBAGE'"),
        ConnectionError("x"),
        ConnectionResetError("x"),
        BrokenPipeError("x"),
        OSError("x"),
        TimeoutError(),  # what socket.timeout is since Python 3.10
    ],
    ids=repr,
)
def test_socket_and_parsing_errors_are_connection_errors(exc: Exception) -> None:
    assert isinstance(exc, beanstalk.LOWER_ERRORS), "the backend would not catch it"
    error = translate(exc, ADDRESS)
    assert isinstance(error, QueueConnectionError)
    assert isinstance(error, ConnectionError)
    assert not isinstance(error, Timeout)
    assert ADDRESS in str(error)


@pytest.mark.parametrize(
    "exc",
    [ValueError(), UnicodeDecodeError("ascii", b"\xff", 0, 1, "x"), KeyError("x"), TypeError()],
    ids=repr,
)
def test_a_programming_error_is_never_taken_for_a_connection_error(exc: Exception) -> None:
    # The protocol raises only its own errors; a builtin one is a bug, left as it is.
    assert not isinstance(exc, beanstalk.LOWER_ERRORS)


def test_a_malformed_reply_is_named() -> None:
    error = translate(protocol.ProtocolError("unexpected reply b'GARBAGE'"), ADDRESS)
    assert "GARBAGE" in str(error)


# (b) The tree.


@pytest.mark.parametrize("name", errors.__all__)
def test_every_exception_derives_from_queue_error(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, QueueError)
    assert getattr(queue_beanstalk, name) is cls


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (QueueError, Exception),
        (Timeout, TimeoutError),
        (QueueConnectionError, ConnectionError),
        (InvalidName, ValueError),
        (MessageTooBig, ValueError),
        (NotFound, LookupError),
        (DecodeError, ValueError),
        (HandlerNotRunning, RuntimeError),
    ],
    ids=lambda cls: cls.__name__,
)
def test_builtin_meanings(cls: type[QueueError], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)


def test_server_error_is_no_builtin_error() -> None:
    assert ServerError.__mro__ == (ServerError, QueueError, Exception, BaseException, object)


def test_exception_attributes() -> None:
    connection = QueueConnectionError("connection failed", "q:11300")
    assert connection.address == "q:11300"
    assert "q:11300" in str(connection)
    too_big = MessageTooBig(70_000, 65_535)
    assert (too_big.size, too_big.limit) == (70_000, 65_535)
    decode = DecodeError("body is not JSON", 7, b"{", "jobs")
    assert (decode.job_id, decode.body, decode.queue) == (7, b"{", "jobs")
    assert "buried" in str(decode)
    refused = ServerError("the server is draining", "DRAINING")
    assert refused.reply == "DRAINING"


# (c) The public surface.


def test_all_names_what_the_package_defines() -> None:
    public = {
        name
        for name, value in vars(queue_beanstalk).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    lazy = set(queue_beanstalk._LAZY)  # the backends, imported when first named
    assert queue_beanstalk.__all__ == sorted(public | lazy)


def test_every_exported_name_resolves() -> None:
    for module_info in pkgutil.walk_packages(queue_beanstalk.__path__, "queue_beanstalk."):
        module = import_module(module_info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    for name in queue_beanstalk.__all__:
        assert getattr(queue_beanstalk, name) is not None


# (d) A server that misbehaves.


BAD_REPLIES = {
    "garbage": Reply(b"GARBAGE\r\n"),
    "inserted-without-id": Reply(b"INSERTED\r\n"),
    "half-a-line-then-close": Reply(b"INSERTED 1", close=True),
    "close-without-reply": Reply(close=True),
    "silence": Reply(),
    "crlf-only": Reply(b"\r\n"),
    "wrong-known-status": Reply(b"NOT_IGNORED\r\n"),
    "deadline-soon": Reply(b"DEADLINE_SOON\r\n"),
}

# The socket timeout the fake's silence must trip; small so each test is quick.
REPLY_TIMEOUT = 0.5


@pytest.mark.timeout(10)
@pytest.mark.parametrize("stage", [b"stats", b"use", b"put"], ids=bytes.decode)
@pytest.mark.parametrize("reply", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_a_bad_reply_is_a_connection_error(
    fake_beanstalkd: StartFake, stage: bytes, reply: Reply
) -> None:
    server = fake_beanstalkd({stage: [reply]})
    started = time.monotonic()
    with (
        factory(server.url, timeout=REPLY_TIMEOUT) as queues,
        pytest.raises(QueueConnectionError) as excinfo,
    ):
        queues.get("jobs").put(Message("a"))
    assert time.monotonic() - started < 3.0
    assert server.commands[-1] == stage, "the bad reply answered another command"
    error = excinfo.value
    assert f"127.0.0.1:{server.port}" in str(error)
    assert error.__cause__ is not None


RESERVE_BAD_REPLIES = {
    **BAD_REPLIES,
    "reserved-without-size": Reply(b"RESERVED 1\r\n"),
    "reserved-id-not-a-number": Reply(b"RESERVED x 3\r\nabc\r\n"),
}

# What a reserve's stages are answered with when they are not the one under test.
GOOD_WATCH = {b"watch": [Reply(b"WATCHING 2\r\n")], b"ignore": [Reply(b"WATCHING 1\r\n")]}


# Every bad reply at each stage of a reserve; but DEADLINE_SOON is a reserve's
# own reply, waited out (tests/test_backend_hardening.py).
RESERVE_STAGE_REPLIES = [
    pytest.param(stage, reply, id=f"{name}-{stage.decode()}")
    for stage in (b"watch", b"reserve-with-timeout")
    for name, reply in RESERVE_BAD_REPLIES.items()
    if not (stage == b"reserve-with-timeout" and name == "deadline-soon")
]


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("stage", "reply"), RESERVE_STAGE_REPLIES)
def test_a_bad_reply_to_a_reserve_is_a_connection_error(
    fake_beanstalkd: StartFake, stage: bytes, reply: Reply
) -> None:
    # The fake answers watch and ignore with silence unless scripted.
    server = fake_beanstalkd({**GOOD_WATCH, stage: [reply]})
    started = time.monotonic()
    with (
        factory(server.url, timeout=REPLY_TIMEOUT) as queues,
        pytest.raises(QueueConnectionError) as excinfo,
    ):
        queues.get("jobs").get(timeout=0)
    assert time.monotonic() - started < 3.0
    assert server.commands[-1] == stage, "the bad reply answered another command"
    error = excinfo.value
    assert f"127.0.0.1:{server.port}" in str(error)
    assert error.__cause__ is not None


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "reply",
    [
        Reply(b"OK 100\r\n---\nmax-job-size: 65535\n", close=True),
        Reply(b"OK 100\r\n---\nmax-job-size: 65535\n"),
        Reply(b"OK 3\r\nabc\r\n"),
        Reply(b"OK 9\r\n---\nhello\r\n"),
        Reply(b"OK x\r\n"),
        Reply(b"OK 5\r\n---\nabcde\r\n"),
        Reply(b"OK 4\r\n\xff\xfe\xfd\xfc\r\n"),
    ],
    ids=[
        "body-cut-then-close",
        "body-cut-then-silence",
        "not-yaml",
        "yaml-line-without-colon",
        "size-not-a-number",
        "body-longer-than-size",
        "body-not-ascii",
    ],
)
def test_a_bad_stats_body_is_a_connection_error(fake_beanstalkd: StartFake, reply: Reply) -> None:
    server = fake_beanstalkd({b"stats": [reply]})
    with (
        factory(server.url, timeout=REPLY_TIMEOUT) as queues,
        pytest.raises(QueueConnectionError, match=f"127.0.0.1:{server.port}"),
    ):
        queues.get("jobs").put(Message("a"))


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "reply",
    [
        stats_reply(b"---\ncurrent-jobs-ready: 0\n"),
        stats_reply(b"---\nmax-job-size: lots\n"),
    ],
    ids=["max-job-size-missing", "max-job-size-not-a-number"],
)
def test_stats_without_a_usable_max_job_size_is_a_connection_error(
    fake_beanstalkd: StartFake, reply: Reply
) -> None:
    server = fake_beanstalkd({b"stats": [reply]})
    with (
        factory(server.url, timeout=REPLY_TIMEOUT) as queues,
        pytest.raises(QueueConnectionError, match=f"127.0.0.1:{server.port}"),
    ):
        queues.get("jobs").put(Message("a"))


@pytest.mark.timeout(10)
def test_stats_job_without_its_fields_is_a_connection_error(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd({b"stats-job": [stats_reply(b"---\nid: 1\n")]})
    with (
        factory(server.url, timeout=REPLY_TIMEOUT) as queues,
        pytest.raises(QueueConnectionError, match=f"127.0.0.1:{server.port}"),
    ):
        queues.backend.stats_job(JobRef(1, f"127.0.0.1:{server.port}"))


@pytest.mark.timeout(10)
def test_the_next_put_after_a_bad_reply_opens_a_new_connection(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd({b"put": [Reply(b"GARBAGE\r\n"), Reply(b"INSERTED 7\r\n")]})
    with factory(server.url, timeout=REPLY_TIMEOUT) as queues:
        queue = queues.get("jobs")
        with pytest.raises(QueueConnectionError):
            queue.put(Message("a"))
        assert queue.put(Message("a")) == 7
    assert server.connections == 2
    # A lost connection may mean a restarted server: its max-job-size is asked again.
    assert server.commands == [b"stats", b"use", b"put", b"stats", b"use", b"put"]


@pytest.mark.timeout(10)
def test_a_server_refusal_on_put_is_a_server_error(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd({b"put": [Reply(b"DRAINING\r\n"), Reply(b"INSERTED 8\r\n")]})
    with factory(server.url, timeout=REPLY_TIMEOUT) as queues:
        queue = queues.get("jobs")
        with pytest.raises(ServerError, match="DRAINING") as excinfo:
            queue.put(Message("a"))
        assert excinfo.value.__cause__ is not None
        assert queue.put(Message("a")) == 8
    # A refusal leaves the conversation in step: the connection is kept.
    assert server.connections == 1

"""The exception tree, the one translation boundary, and the exported names.

The last part talks to a fake beanstalkd that misbehaves on purpose: whatever
it sends, a put must end in QueueConnectionError, quickly, and never leak
greenstalk's parsing errors (``AssertionError``, ``ValueError``).
"""

from __future__ import annotations

import contextlib
import inspect
import pkgutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module

import greenstalk
import pytest

import queue_beanstalk
from queue_beanstalk import (
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
from queue_beanstalk.backends import beanstalk
from queue_beanstalk.backends.beanstalk import translate

ADDRESS = "h:1"

# (a) Every lower-level exception is translated.


def greenstalk_exceptions() -> list[type[greenstalk.Error]]:
    """Every exception class greenstalk defines, found by walking its tree."""
    found: list[type[greenstalk.Error]] = [greenstalk.Error]
    for cls in found:
        found.extend(sub for sub in cls.__subclasses__() if sub not in found)
    return sorted(found, key=lambda cls: cls.__name__)


def make(cls: type[greenstalk.Error]) -> greenstalk.Error:
    """An instance of ``cls``, built the way greenstalk builds it."""
    if issubclass(cls, greenstalk.UnknownResponseError):
        return cls(b"WHAT", [b"1", b"2"])
    return cls([b"1"])


def test_the_walk_finds_every_server_reply() -> None:
    found = set(greenstalk_exceptions())
    assert set(greenstalk.ERROR_RESPONSES.values()) <= found
    assert greenstalk.UnknownResponseError in found


EXPECTED: Mapping[type[greenstalk.Error], type[QueueError]] = {
    greenstalk.TimedOutError: Timeout,
    greenstalk.NotFoundError: NotFound,
    greenstalk.OutOfMemoryError: ServerError,
    greenstalk.DrainingError: ServerError,
    greenstalk.InternalError: ServerError,
    greenstalk.BuriedError: ServerError,
}


@pytest.mark.parametrize("cls", greenstalk_exceptions(), ids=lambda cls: cls.__name__)
def test_every_greenstalk_exception_is_translated(cls: type[greenstalk.Error]) -> None:
    exc = make(cls)
    assert isinstance(exc, beanstalk.LOWER_ERRORS), "the backend would not catch it"
    error = translate(exc, ADDRESS)
    assert isinstance(error, QueueError)
    expected = EXPECTED.get(cls, QueueConnectionError)
    assert type(error) is expected
    if isinstance(error, QueueConnectionError):
        assert ADDRESS in str(error)
        assert error.address == ADDRESS


@pytest.mark.parametrize(
    ("cls", "reply"),
    [
        (greenstalk.OutOfMemoryError, "OUT_OF_MEMORY"),
        (greenstalk.DrainingError, "DRAINING"),
        (greenstalk.InternalError, "INTERNAL_ERROR"),
        (greenstalk.BuriedError, "BURIED"),
    ],
)
def test_a_server_refusal_keeps_the_reply(cls: type[greenstalk.Error], reply: str) -> None:
    error = translate(make(cls), ADDRESS)
    assert isinstance(error, ServerError)
    assert error.reply == reply
    assert reply in str(error)


def test_an_unknown_reply_is_named() -> None:
    error = translate(greenstalk.UnknownResponseError(b"GARBAGE", []), ADDRESS)
    assert isinstance(error, QueueConnectionError)
    assert "GARBAGE" in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionError("x"),
        ConnectionResetError("x"),
        BrokenPipeError("x"),
        OSError("x"),
        TimeoutError(),  # what socket.timeout is since Python 3.10
        AssertionError(),
        ValueError(),
        ValueError("not enough values to unpack"),
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
    assert queue_beanstalk.__all__ == sorted(public)


def test_every_exported_name_resolves() -> None:
    for module_info in pkgutil.walk_packages(queue_beanstalk.__path__, "queue_beanstalk."):
        module = import_module(module_info.name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"
    for name in queue_beanstalk.__all__:
        assert getattr(queue_beanstalk, name) is not None


# (d) A server that misbehaves.


@dataclass(frozen=True)
class Reply:
    """What the fake sends for one command: ``data``, then maybe closes.

    No data and no close means silence: the connection stays open, unanswered.
    """

    data: bytes = b""
    close: bool = False


def stats_reply(body: bytes) -> Reply:
    return Reply(b"OK %d\r\n%b\r\n" % (len(body), body))


STATS_OK = stats_reply(b"---\nmax-job-size: 65535\ncurrent-jobs-ready: 0\n")


class FakeBeanstalkd:
    """A loopback server that answers commands from a script, for fault tests.

    ``replies`` maps a command word to the replies for its successive uses (on
    any connection); a command with none left gets the default: ``stats`` and
    ``use`` are answered as beanstalkd would, anything else gets silence.
    """

    def __init__(self, replies: Mapping[bytes, Sequence[Reply]]) -> None:
        self._replies = {word: list(script) for word, script in replies.items()}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.commands: list[bytes] = []
        self.connections = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._handlers: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        # Once the accepter is gone no connection can arrive, so the lists are final.
        self._accepter.join(timeout=5)
        with self._lock:
            sockets, handlers = list(self._sockets), list(self._handlers)
        for sock in sockets:
            # Wakes a handler blocked in recv(); close() alone may not. The
            # client may have closed it first.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            with self._lock:
                self.connections += 1
                self._sockets.append(sock)
                self._handlers.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        # The client may reset the connection at any point; that ends the
        # conversation and is no failure of the fake.
        with sock, contextlib.suppress(OSError):
            sock.settimeout(None)
            buffer = b""
            while True:
                while b"\r\n" not in buffer:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return
                    buffer += chunk
                line, buffer = buffer.split(b"\r\n", 1)
                word, *fields = line.split() or [b""]
                if word == b"put":
                    # The body follows the command line, with its own CRLF.
                    size = int(fields[-1]) + 2
                    while len(buffer) < size:
                        chunk = sock.recv(4096)
                        if not chunk:
                            return
                        buffer += chunk
                    buffer = buffer[size:]
                reply = self._next(word, fields)
                with self._lock:
                    self.commands.append(word)
                if reply.data:
                    sock.sendall(reply.data)
                if reply.close:
                    return
                if not reply.data:
                    self._stop.wait()
                    return

    def _next(self, word: bytes, fields: list[bytes]) -> Reply:
        with self._lock:
            script = self._replies.get(word)
            if script:
                return script.pop(0)
        if word == b"stats":
            return STATS_OK
        if word == b"use":
            return Reply(b"USING %b\r\n" % fields[0])
        return Reply()


StartFake = Callable[[Mapping[bytes, Sequence[Reply]]], FakeBeanstalkd]


@pytest.fixture
def fake_beanstalkd() -> Iterator[StartFake]:
    """Start fake servers with ``fake_beanstalkd(replies)``; all stop after the test."""
    started: list[FakeBeanstalkd] = []

    def start(replies: Mapping[bytes, Sequence[Reply]]) -> FakeBeanstalkd:
        server = FakeBeanstalkd(replies)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


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
        queues.backend.stats_job(1)


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
    assert server.commands == [b"stats", b"use", b"put", b"use", b"put"]


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

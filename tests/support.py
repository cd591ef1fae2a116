"""Small helpers shared by the tests."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from queue_beanstalk import Message, NotFound, Queue, QueueFactory
from queue_beanstalk.backend import JobRef


def ref(message: Message) -> JobRef:
    """Return where a message put or got is: its id on its server."""
    assert message.id is not None, "never put nor got"
    assert message.server is not None
    return JobRef(message.id, message.server)


def put_job(queue: Queue, message: Message, **options: object) -> JobRef:
    """Put ``message`` on ``queue`` and return where it is."""
    queue.put(message, **options)  # type: ignore[arg-type]
    return ref(message)


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


class CallsAtOnce:
    """A handler function that sleeps ``seconds``, counting the calls that run at once."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._lock = threading.Lock()
        self._active = 0
        #: The most calls that ran at once, and the calls that returned.
        self.peak = self.done = 0

    def __call__(self, message: Message) -> None:
        with self._lock:
            self._active += 1
            self.peak = max(self.peak, self._active)
        time.sleep(self._seconds)
        with self._lock:
            self._active -= 1
            self.done += 1


def gone(queues: QueueFactory, job: JobRef) -> bool:
    """Return whether the server no longer holds the job (it was deleted)."""
    try:
        queues.backend.stats_job(job)
    except NotFound:
        return True
    return False


@dataclass(frozen=True)
class Reply:
    """What the fake sends for one command: ``data``, then maybe closes.

    No data and no close means silence: the connection stays open, unanswered.
    With ``trickle``, the data goes out one byte at a time, that many seconds
    apart (the first byte too): a server too slow to finish a reply.
    """

    data: bytes = b""
    close: bool = False
    trickle: float = 0.0


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
                if reply.data and not self._send(sock, reply):
                    return
                if reply.close:
                    return
                if not reply.data:
                    self._stop.wait()
                    return

    def _send(self, sock: socket.socket, reply: Reply) -> bool:
        """Send the reply's data; return False when the fake stopped before it was all sent."""
        if reply.trickle <= 0:
            sock.sendall(reply.data)
            return True
        for index in range(len(reply.data)):
            if self._stop.wait(reply.trickle):
                return False
            sock.sendall(reply.data[index : index + 1])
        return True

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


class CuttingProxy:
    """A loopback TCP proxy to a real server whose connections the test can cut.

    ``cut()`` shuts every connection open through it, both ways, as a network
    fault would: the server sees its client go, the client sees its end of the
    stream. New connections are proxied as before.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(self._target)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                thread = threading.Thread(target=self._pump, args=(source, sink), daemon=True)
                self._threads.append(thread)
                thread.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

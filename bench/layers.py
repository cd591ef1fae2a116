"""``python -m bench.layers``: the CPU cost per message of each layer, the socket faked.

Issue 15. Every path is run through its layers, from the bottom up, over a
:class:`FakeSocket` that answers each beanstalkd command at once with a canned
reply: no server, no round trip, so each figure is the library's own Python
(and the fake's). The layers of each path:

put
    0 the fake alone (``sendall`` + ``recv``); 1 the Wire (``send`` of a put
    built beforehand, ``reply_int``); 2 ``BeanstalkBackend.put`` (builds the
    command, borrows a pooled connection, the error boundary); 3
    ``Queue.put`` (checks, JSON encoding, setting the message's id).
get + delete
    0 the fake; 1 the Wire (a reserve, ``reserved()``, a delete); 2
    ``backend.reserve`` + ``backend.delete`` (checkout, lease, settle); 3
    ``Queue.get(0)`` + ``Queue.delete`` (JSON decoding, the claim).
handler, prefetch 1 and 32
    0 the fake (one write of the deletes and reserves, one receive); 1
    ``consumer.reserve_batch`` fed back the previous batch's leases, claimed;
    2 a real :class:`~queue_beanstalk.Handler` whose consumer's connection is a
    fake, calling a function that only counts (the keeper, decoding, the tally).

Each figure is CPU time (``time.process_time``, every thread of the process)
per message: the median, and the least, of ``--rounds`` rounds of ``--ops``
messages, the layers run in a rotating order within each round so that a
noisy machine slows them alike. "adds" is what the layer costs over the one
below it: the first layer's is its cost net of the fake.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import logging
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import cast

from queue_beanstalk import Message, QueueFactory, Received
from queue_beanstalk.backend import Lease
from queue_beanstalk.backends import protocol
from queue_beanstalk.backends.beanstalk import BeanstalkBackend
from queue_beanstalk.backends.wire import RECEIVE_SIZE, Wire
from queue_beanstalk.codec import JsonCodec
from queue_beanstalk.errors import QueueConnectionError
from queue_beanstalk.queue_factory import DEFAULT_PRIORITY, DEFAULT_TTR

TUBE = "bench-layers"
MESSAGE = Message("regenerate-apprc", ["myapp"])
BODY = JsonCodec().encode(MESSAGE)
# Seconds a handler run may take before the bench gives up on it.
HANDLER_DEADLINE = 120.0

#: A layer: its path, its name, and a run of ``n`` messages returning CPU seconds per message.
Layer = tuple[str, str, Callable[[int], float]]


class FakeSocket:
    """A connected beanstalkd socket that answers every command at once, from canned replies.

    ``sendall`` reads the commands written (skipping a put's body) and queues
    each one's reply; ``recv`` returns what is queued, up to the size asked.
    ``fileno`` is one end of a ``socketpair`` nothing is ever written to, so
    the Wire's poll finds the connection idle and in step. Every reserve gets
    a job (ids counting up) whose body is ``body``.
    """

    def __init__(self, body: bytes) -> None:
        self._ends = socket.socketpair()
        self._pending = bytearray()
        self._ids = itertools.count(1)
        self._job = b" %d\r\n%b\r\n" % (len(body), body)
        self._shut = False

    def sendall(self, data: bytes) -> None:
        if self._shut:
            raise BrokenPipeError("the fake socket was shut")
        pending, start = self._pending, 0
        while start < len(data):
            end = data.index(b"\r\n", start)
            word, _, rest = data[start:end].partition(b" ")
            start = end + 2
            if word == b"reserve-with-timeout":
                pending += b"RESERVED %d%b" % (next(self._ids), self._job)
            elif word == b"delete":
                pending += b"DELETED\r\n"
            elif word == b"put":
                start += int(rest.rpartition(b" ")[2]) + 2  # past the body and its CRLF
                pending += b"INSERTED %d\r\n" % next(self._ids)
            else:
                pending += _other_reply(word, rest)

    def recv(self, size: int) -> bytes:
        if self._shut:
            return b""
        if not self._pending:  # a real socket would block: the library is out of step
            raise RuntimeError("recv with no reply queued")
        data = bytes(self._pending[:size])
        del self._pending[:size]
        return data

    def fileno(self) -> int:
        return self._ends[0].fileno()

    def setsockopt(self, *args: object) -> None:
        pass

    def setblocking(self, flag: bool) -> None:
        pass

    def shutdown(self, how: int) -> None:
        self._shut = True

    def close(self) -> None:
        self._shut = True
        for end in self._ends:
            end.close()


def _other_reply(word: bytes, rest: bytes) -> bytes:
    """Return the reply to a command off the hot paths (once per connection)."""
    if word == b"use":
        return b"USING %b\r\n" % rest
    if word in (b"watch", b"ignore"):
        return b"WATCHING 1\r\n"
    if word == b"stats":
        stats = b"---\nmax-job-size: 65535\n"
        return b"OK %d\r\n%b\r\n" % (len(stats), stats)
    return b"UNKNOWN_COMMAND\r\n"


def fake_backend() -> BeanstalkBackend:
    """Return a backend whose every connection, pooled or a consumer's, is a FakeSocket."""
    backend = BeanstalkBackend("fake.invalid")

    def connect(watch_socket: Callable[[socket.socket], bool] | None) -> socket.socket:
        sock = cast(socket.socket, FakeSocket(BODY))
        if watch_socket is not None and not watch_socket(sock):
            raise QueueConnectionError("connect interrupted", backend.address)
        return sock

    setattr(backend._pool, "_connect_socket", connect)  # noqa: B010 - patching a method
    return backend


def timed(step: Callable[[], object], every: int = 1) -> Callable[[int], float]:
    """Return a run of ``n`` messages, ``step()`` once per ``every``: CPU seconds per message.

    The call of ``step`` is in every layer's figure alike, the fake's too, so
    it cancels out of what a layer adds.
    """

    def run(n: int) -> float:
        gc.collect()
        start = time.process_time()
        for _ in range(n // every):
            step()
        return (time.process_time() - start) / (n // every * every)

    return run


def put_layers(backend: BeanstalkBackend, factory: QueueFactory) -> list[Layer]:
    command = protocol.put(BODY, DEFAULT_PRIORITY, 0, DEFAULT_TTR)[0]
    sock = FakeSocket(BODY)
    wire = Wire(cast(socket.socket, FakeSocket(BODY)), 10.0)
    queue = factory.get(TUBE)

    def fake() -> None:
        sock.sendall(command)
        sock.recv(RECEIVE_SIZE)

    def on_wire() -> None:
        wire.send(command)
        wire.reply_int(b"INSERTED")

    def on_backend() -> None:
        backend.put(TUBE, BODY, priority=DEFAULT_PRIORITY, delay=0, ttr=DEFAULT_TTR)

    return [
        ("put", "fake socket", timed(fake)),
        ("put", "Wire", timed(on_wire)),
        ("put", "backend.put", timed(on_backend)),
        ("put", "Queue.put", timed(lambda: queue.put(MESSAGE))),
    ]


def get_layers(backend: BeanstalkBackend, factory: QueueFactory) -> list[Layer]:
    reserve = protocol.reserve(0)[0]
    sock = FakeSocket(BODY)
    wire = Wire(cast(socket.socket, FakeSocket(BODY)), 10.0)
    tubes = (TUBE,)
    queue = factory.get(TUBE)

    def fake() -> None:
        sock.sendall(reserve)
        sock.recv(RECEIVE_SIZE)
        sock.sendall(b"delete 1\r\n")
        sock.recv(RECEIVE_SIZE)

    def on_wire() -> None:
        wire.send(reserve)
        job_id, _ = wire.reserved(time.monotonic() + 10.0)
        wire.simple(b"delete %d\r\n" % job_id, b"DELETED")

    def on_backend() -> None:
        backend.delete(backend.reserve(tubes, 0).lease)

    path = "get + delete"
    return [
        (path, "fake socket", timed(fake)),
        (path, "Wire", timed(on_wire)),
        (path, "backend.reserve + delete", timed(on_backend)),
        (path, "Queue.get + delete", timed(lambda: queue.delete(queue.get(0)))),
    ]


def handler_layers(backend: BeanstalkBackend, factory: QueueFactory, count: int) -> list[Layer]:
    sock = FakeSocket(BODY)
    batch = protocol.delete_then_reserve_batch(range(1, count + 1), 0, count)
    consumer = backend.consumer([TUBE])
    deletes: list[Lease] = []  # the last batch's leases, claimed as a handler claims them

    def fake() -> None:
        sock.sendall(batch)
        sock.recv(RECEIVE_SIZE)

    def on_consumer() -> None:
        _, reserved = consumer.reserve_batch(deletes, count, 0)
        deletes[:] = [job.lease for job in reserved if job.lease.claim()]

    path = f"handler, prefetch {count}"
    return [
        (path, "fake socket", timed(fake, count)),
        (path, "consumer.reserve_batch", timed(on_consumer, count)),
        (path, "Handler", lambda n: handler_run(factory, count, n)),
    ]


def handler_run(factory: QueueFactory, prefetch: int, n: int) -> float:
    """Run a Handler until its function was called ``n + 1`` times; return CPU seconds a call.

    Timed from the first call to the last, so starting the threads and
    connecting are left out.
    """
    calls = itertools.count()
    marks: list[float] = []
    done = threading.Event()

    def count(message: Received) -> None:
        index = next(calls)
        if index == 0 or index == n:
            marks.append(time.process_time())
            if index == n:
                done.set()

    handler = factory.handler(count, TUBE, prefetch=prefetch)
    gc.collect()
    handler.start()
    try:
        if not done.wait(HANDLER_DEADLINE):
            raise RuntimeError(f"the handler made {next(calls)} calls of {n + 1} in time")
    finally:
        handler.stop()
        handler.wait(10.0)
    return (marks[1] - marks[0]) / n


def measure(layers: list[Layer], rounds: int, ops: int) -> list[list[float]]:
    """Return each layer's µs per message in each round, the order rotating from round to round."""
    for _, _, run in layers:  # warm up: connections opened, tubes used and watched
        run(min(ops, 1024))
    results: list[list[float]] = [[] for _ in layers]
    for number in range(rounds):
        shift = number % len(layers)
        for index in [*range(shift, len(layers)), *range(shift)]:
            results[index].append(layers[index][2](ops) * 1e6)
    return results


def table(layers: list[Layer], results: list[list[float]]) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| path | layer | µs/msg (median) | µs/msg (least) | adds (µs) |",
        "|---|---|---:|---:|---:|",
    ]
    below: tuple[str, float] | None = None
    for (path, name, _), figures in zip(layers, results, strict=True):
        median = statistics.median(figures)
        adds = f"{median - below[1]:+.2f}" if below is not None and below[0] == path else ""
        lines.append(f"| {path} | {name} | {median:.2f} | {min(figures):.2f} | {adds} |")
        below = (path, median)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.layers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds (default 7)")
    parser.add_argument("--ops", type=int, default=20_000, help="messages per layer and round")
    args = parser.parse_args(argv)
    # A handler's stop leaves its last deletes unsent, which it logs as warnings.
    logging.getLogger("queue_beanstalk").setLevel(logging.ERROR)
    backend = fake_backend()
    factory = QueueFactory(backend)
    try:
        layers = [
            *put_layers(backend, factory),
            *get_layers(backend, factory),
            *handler_layers(backend, factory, 1),
            *handler_layers(backend, factory, 32),
        ]
        results = measure(layers, args.rounds, args.ops)
    finally:
        factory.close()
    print(table(layers, results))
    print(f"\n{args.rounds} rounds of {args.ops} messages a layer; CPU time, socket faked.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

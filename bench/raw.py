"""The baselines, without the library: greenstalk loops and a pipelined socket.

greenstalk is used the plainest way (``encoding=None``, one command, one reply);
:class:`Pipeline` writes many commands at once and reads the replies after, the
ceiling for any client that waits for each reply in turn. The ``json_*`` loops
are what a greenstalk user writes to send the same messages as the library:
the client's default UTF-8 text, a ``json.dumps`` per put and a ``json.loads``
per get.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Sequence

import greenstalk

__all__ = [
    "STOP",
    "Address",
    "Pipeline",
    "client",
    "drain",
    "json_client",
    "json_get_delete_loop",
    "json_put_loop",
    "put_loop",
    "put_to_reserve_latency",
    "reserve_delete_loop",
]

Address = tuple[str, int]

#: A body that tells a latency consumer to end.
STOP = b"stop"
#: beanstalkd takes whole seconds; the library's default time-to-run.
TTR = 120
PRIORITY = 1024


def client(address: Address, tube: str) -> greenstalk.Client[bytes]:
    """Return a greenstalk client that uses and watches ``tube`` only."""
    return greenstalk.Client(address, encoding=None, use=tube, watch=tube)


def put_loop(conn: greenstalk.Client[bytes], bodies: Sequence[bytes]) -> tuple[float, list[int]]:
    """Put every body, one round trip each; return the seconds taken and the job ids."""
    put = conn.put
    start = time.perf_counter()
    ids = [put(body, PRIORITY, 0, TTR) for body in bodies]
    return time.perf_counter() - start, ids


def reserve_delete_loop(conn: greenstalk.Client[bytes], count: int) -> float:
    """Reserve (without waiting) and delete ``count`` jobs; return the seconds taken."""
    reserve, delete = conn.reserve, conn.delete
    start = time.perf_counter()
    for _ in range(count):
        delete(reserve(0))
    return time.perf_counter() - start


def json_client(address: Address, tube: str) -> greenstalk.Client[str]:
    """Return a greenstalk client as a user makes one: UTF-8 text bodies, ``tube`` only."""
    return greenstalk.Client(address, use=tube, watch=tube)


def json_put_loop(conn: greenstalk.Client[str], calls: Sequence[tuple[str, list[str]]]) -> float:
    """Encode each ``(action, args)`` with ``json.dumps`` and put it; return the seconds taken.

    The server's defaults for priority and time-to-run, as a user who names
    neither gets them.
    """
    put, dumps = conn.put, json.dumps
    start = time.perf_counter()
    for action, args in calls:
        put(dumps({"action": action, "args": args}))
    return time.perf_counter() - start


def json_get_delete_loop(conn: greenstalk.Client[str], count: int) -> float:
    """Reserve (without waiting), ``json.loads`` and delete ``count`` jobs; return the seconds."""
    reserve, delete, loads = conn.reserve, conn.delete, json.loads
    start = time.perf_counter()
    for _ in range(count):
        job = reserve(0)
        loads(job.body)
        delete(job)
    return time.perf_counter() - start


def drain(address: Address, tube: str, concurrency: int) -> tuple[float, int]:
    """Empty ``tube`` with ``concurrency`` threads, each a reserve/delete loop on its own client.

    :returns: seconds from the start to the last delete, and how many jobs were deleted.
    """
    clients = [client(address, tube) for _ in range(concurrency)]
    go = threading.Event()
    done: list[tuple[float, int]] = []
    lock = threading.Lock()

    def work(conn: greenstalk.Client[bytes]) -> None:
        reserve, delete = conn.reserve, conn.delete
        last, count = 0.0, 0
        go.wait()
        while True:
            try:
                job = reserve(0)
            except greenstalk.TimedOutError:
                break
            delete(job)
            last = time.perf_counter()
            count += 1
        with lock:
            done.append((last, count))

    threads = [threading.Thread(target=work, args=(conn,)) for conn in clients]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    for conn in clients:
        conn.close()
    return max(last for last, _ in done) - start, sum(count for _, count in done)


def put_to_reserve_latency(
    address: Address, tube: str, bodies: Sequence[bytes], *, warmup: int, pause: float
) -> list[float]:
    """Return seconds from each put to its reserve returning in a consumer thread.

    The consumer is a thread blocked in ``reserve`` on a client of its own; the
    next put waits for the previous job to arrive, then ``pause`` seconds more
    so that the consumer is idle in ``reserve`` again. The first ``warmup``
    bodies are not counted.
    """
    arrived = threading.Event()
    times: list[float] = []

    def consume(conn: greenstalk.Client[bytes]) -> None:
        while True:
            job = conn.reserve()
            times.append(time.perf_counter())
            if job.body == STOP:
                conn.delete(job)
                return
            arrived.set()
            conn.delete(job)

    consumer = client(address, tube)
    producer = client(address, tube)
    thread = threading.Thread(target=consume, args=(consumer,), daemon=True)
    thread.start()
    delays: list[float] = []
    try:
        for number, body in enumerate(bodies):
            arrived.clear()
            sent = time.perf_counter()
            producer.put(body, PRIORITY, 0, TTR)
            if not arrived.wait(10):
                raise RuntimeError("a put did not reach the consumer within 10 s")
            if number >= warmup:
                delays.append(times[-1] - sent)
            time.sleep(pause)
        producer.put(STOP, PRIORITY, 0, TTR)
        thread.join(10)
    finally:
        producer.close()
        consumer.close()
    return delays


class Pipeline:
    """A bare socket that sends many commands in one write, then reads every reply.

    :param address: the server.
    :param tube: the tube to put into (and, for :meth:`drain`, to take from).
    """

    def __init__(self, address: Address, tube: str) -> None:
        self._sock = socket.create_connection(address, timeout=30)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = self._sock.makefile("rb")
        self._tube = tube.encode("ascii")
        self._sock.sendall(b"use %b\r\n" % self._tube)
        self._expect(1, b"USING ")

    def put_many(self, bodies: Sequence[bytes]) -> list[int]:
        """Put every body with one write; return the job ids.

        The replies are read only once everything is sent: keep ``bodies`` to a
        few thousand, or the unread replies fill the socket buffers and both
        ends wait for each other.
        """
        head = b"put %d 0 %d " % (PRIORITY, TTR)
        self._sock.sendall(b"".join(b"%b%d\r\n%b\r\n" % (head, len(body), body) for body in bodies))
        return [int(line[9:]) for line in self._expect(len(bodies), b"INSERTED ")]

    def delete_many(self, ids: Sequence[int]) -> None:
        """Delete jobs that are ready (or reserved through this socket), a thousand per write."""
        for first in range(0, len(ids), 1000):
            chunk = ids[first : first + 1000]
            self._sock.sendall(b"".join(b"delete %d\r\n" % job_id for job_id in chunk))
            self._expect(len(chunk), b"DELETED")

    def drain(self, batch: int) -> tuple[float, int]:
        """Empty the tube, ``batch`` jobs a round trip; return the seconds and the jobs taken.

        One write sends ``batch`` ``reserve-with-timeout 0``, the replies are
        read, and the next write carries the deletes of the jobs just reserved
        followed by the next ``batch`` reserves: one round trip per ``batch``
        jobs, the ceiling for a worker that prefetches that many. The clock
        stops when the last job has been read, as a handler's stops at the
        start of its last call; it ends once a whole batch times out.
        """
        self._sock.sendall(b"watch %b\r\nignore default\r\n" % self._tube)
        self._expect(2, b"WATCHING ")
        readline, read = self._reader.readline, self._reader.read
        reserves = b"reserve-with-timeout 0\r\n" * batch
        ids: list[int] = []
        taken = 0
        start = last = time.perf_counter()
        while True:
            self._sock.sendall(b"".join(b"delete %d\r\n" % job_id for job_id in ids) + reserves)
            self._expect(len(ids), b"DELETED")
            ids = []
            for _ in range(batch):
                line = readline()
                if line.startswith(b"RESERVED "):
                    _, job_id, size = line.split()
                    read(int(size) + 2)
                    ids.append(int(job_id))
                elif line != b"TIMED_OUT\r\n":
                    raise RuntimeError(f"expected RESERVED or TIMED_OUT, got {line!r}")
            if not ids:
                return last - start, taken
            taken += len(ids)
            last = time.perf_counter()

    def close(self) -> None:
        """Close the socket."""
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _expect(self, count: int, prefix: bytes) -> list[bytes]:
        readline = self._reader.readline
        lines = [readline() for _ in range(count)]
        for line in lines:
            if not line.startswith(prefix):
                raise RuntimeError(f"expected {prefix!r}, got {line!r}")
        return lines

"""The floor: the least Python that does the library's work over one plain socket.

Issue 15 sets targets as ratios against greenstalk loops and a pipelined
socket. Each loop here does what the library does for the same figure, and
nothing else: the library's JSON bodies (a ``json`` encode per put, a
``json.loads`` and a :class:`~queue_beanstalk.Message` per job, a no-op call
per job where a Handler calls a function), the same commands and round trips,
one blocking socket with TCP_NODELAY, no pool, no checks beyond the replies
that say the work was done. What such a client reaches against a baseline is
about as far as CPython goes on this machine: a target above it is read as such.

Replies are read with ``recv`` into a bytes buffer rather than through
``sock.makefile("rb")``: measured side by side, the buffer costs 7-15% less
client CPU a message in the loops of one job a round trip (``makefile`` runs
its Python ``SocketIO.readinto`` at every read), and about as much in the
prefetching one.

Each loop opens its connection before the clock starts and closes it after, as
:mod:`bench.raw` does, and raises when it did not do all of its work.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Sequence

from queue_beanstalk import Message

from .raw import PRIORITY, TTR, Address

__all__ = ["get_delete_loop", "handler_loop", "prefetch_loop", "put_loop"]

#: Bytes asked of each ``recv``: more than a round's replies.
BUFFER = 65536
DELETED = b"DELETED\r\n"
TIMED_OUT = b"TIMED_OUT\r\n"
# json.dumps's own encoder, set to write the codec's bytes: compact, UTF-8 left as is.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def put_loop(address: Address, tube: str, calls: Sequence[tuple[str, list[str]]]) -> float:
    """Encode each ``(action, args)`` as the JSON codec does and put it; return the seconds.

    The library's default priority and time-to-run, one round trip a message.
    """
    sock = _connect(address, b"use %b\r\n" % tube.encode())
    send, recv, encode = sock.sendall, sock.recv, _encode
    head = b"put %d 0 %d " % (PRIORITY, TTR)
    start = time.perf_counter()
    for action, args in calls:
        body = encode({"action": action, "args": args}).encode()
        send(b"%b%d\r\n%b\r\n" % (head, len(body), body))
        reply = recv(BUFFER)
        while not reply.endswith(b"\r\n"):
            reply += recv(BUFFER)
        if not reply.startswith(b"INSERTED "):
            raise RuntimeError(f"expected INSERTED, got {reply!r}")
    seconds = time.perf_counter() - start
    sock.close()
    return seconds


def get_delete_loop(address: Address, tube: str, count: int) -> float:
    """Reserve (without waiting), decode and delete ``count`` jobs; return the seconds.

    Two round trips a message, as ``Queue.get(0)`` then ``Queue.delete``.
    """
    sock = _connect(address, b"watch %b\r\nignore default\r\n" % tube.encode())
    send, recv, loads = sock.sendall, sock.recv, json.loads
    start = time.perf_counter()
    for _ in range(count):
        send(b"reserve-with-timeout 0\r\n")
        reply = recv(BUFFER)
        while (end := reply.find(b"\r\n")) < 0:
            reply += recv(BUFFER)
        if not reply.startswith(b"RESERVED "):
            raise RuntimeError(f"expected RESERVED, got {reply!r}")
        _, job_id, size = reply[:end].split()
        total = end + int(size) + 4
        while len(reply) < total:
            reply += recv(BUFFER)
        document = loads(reply[end + 2 : total - 2].decode())
        Message(document["action"], document["args"])
        send(b"delete %b\r\n" % job_id)
        reply = recv(BUFFER)
        while len(reply) < len(DELETED):
            reply += recv(BUFFER)
        if reply != DELETED:
            raise RuntimeError(f"expected DELETED, got {reply!r}")
    seconds = time.perf_counter() - start
    sock.close()
    return seconds


def handler_loop(address: Address, tube: str, count: int) -> float:
    """Take ``count`` waiting jobs one a round trip, as a Handler at prefetch=1; return the seconds.

    Each write is the previous job's delete and the next ``reserve-with-timeout
    1``; each job is decoded and passed to a function that does nothing. The
    clock stops after the last call: its delete is not counted, as a Handler's
    is not.
    """
    sock = _connect(address, b"watch %b\r\nignore default\r\n" % tube.encode())
    send, recv, loads, handle = sock.sendall, sock.recv, json.loads, _handle
    delete = b""
    start = time.perf_counter()
    for _ in range(count):
        send(delete + b"reserve-with-timeout 1\r\n")
        # The DELETED of the previous job, if any, comes first.
        skip = len(DELETED) if delete else 0
        reply = recv(BUFFER)
        while (end := reply.find(b"\r\n", skip)) < 0:
            reply += recv(BUFFER)
        if reply[:skip] != DELETED[:skip] or not reply.startswith(b"RESERVED ", skip):
            raise RuntimeError(f"expected [DELETED] RESERVED, got {reply!r}")
        _, job_id, size = reply[skip:end].split()
        total = end + int(size) + 4
        while len(reply) < total:
            reply += recv(BUFFER)
        document = loads(reply[end + 2 : total - 2].decode())
        handle(Message(document["action"], document["args"]))
        delete = b"delete %b\r\n" % job_id
    seconds = time.perf_counter() - start
    _settle(sock, delete, 1 if delete else 0)
    return seconds


def prefetch_loop(address: Address, tube: str, count: int, batch: int) -> float:
    """Take ``count`` waiting jobs ``batch`` a round trip, as a prefetching Handler; return seconds.

    Each write is the previous batch's deletes, one ``reserve-with-timeout 1``
    and ``batch - 1`` ``reserve-with-timeout 0``; each job is decoded and passed
    to a function that does nothing. The clock stops after the last call, as in
    :func:`handler_loop`.
    """
    sock = _connect(address, b"watch %b\r\nignore default\r\n" % tube.encode())
    send, recv, loads, handle = sock.sendall, sock.recv, json.loads, _handle
    reserves = b"reserve-with-timeout 1\r\n" + b"reserve-with-timeout 0\r\n" * (batch - 1)
    deletes: list[bytes] = []
    taken = 0
    start = time.perf_counter()
    while taken < count:
        send(b"".join(deletes) + reserves)
        # The previous batch's DELETEDs come first, then a reply to each reserve.
        at = len(DELETED) * len(deletes)
        reply = recv(BUFFER)
        while len(reply) < at:
            reply += recv(BUFFER)
        if reply[:at] != DELETED * len(deletes):
            raise RuntimeError(f"expected {len(deletes)} DELETED, got {reply[:at]!r}")
        deletes = []
        for _ in range(batch):
            while (end := reply.find(b"\r\n", at)) < 0:
                reply += recv(BUFFER)
            if reply.startswith(b"RESERVED ", at):
                _, job_id, size = reply[at:end].split()
                at = end + int(size) + 4
                while len(reply) < at:
                    reply += recv(BUFFER)
                document = loads(reply[end + 2 : at - 2].decode())
                handle(Message(document["action"], document["args"]))
                deletes.append(b"delete %b\r\n" % job_id)
            elif reply.startswith(TIMED_OUT, at):
                at = end + 2
            else:
                raise RuntimeError(f"expected RESERVED or TIMED_OUT, got {reply[at:]!r}")
        if not deletes:
            break
        taken += len(deletes)
    seconds = time.perf_counter() - start
    _settle(sock, b"".join(deletes), len(deletes))
    if taken != count:
        raise RuntimeError(f"the minimal prefetch loop took {taken} jobs, not {count}")
    return seconds


def _handle(message: Message) -> None:
    """Do nothing: the function a Handler calls in the no-op figures."""


def _connect(address: Address, commands: bytes) -> socket.socket:
    """Return a blocking socket with TCP_NODELAY once the server has taken ``commands``."""
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(commands)
    reply = b""
    while reply.count(b"\r\n") < commands.count(b"\r\n"):
        reply += sock.recv(BUFFER)
    for line in reply.splitlines():
        if not line.startswith((b"USING ", b"WATCHING ")):
            raise RuntimeError(f"expected USING or WATCHING, got {line!r}")
    return sock


def _settle(sock: socket.socket, deletes: bytes, count: int) -> None:
    """Send the last ``count`` deletes, check every one was done, and close the socket."""
    sock.sendall(deletes)
    reply = b""
    while len(reply) < len(DELETED) * count:
        reply += sock.recv(BUFFER)
    sock.close()
    if reply != DELETED * count:
        raise RuntimeError(f"expected {count} DELETED, got {reply!r}")

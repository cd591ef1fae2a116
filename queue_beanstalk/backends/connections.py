"""Connections to one beanstalkd server, and the pool the backend borrows them from.

A connection runs one command at a time, so each command borrows one for its
duration. A reserve that may block borrows only a connection that holds no
reservation, because a reservation can be settled only on the connection that
made it: settling then never waits behind a blocked reserve, and beanstalkd's
DEADLINE_SOON (sent to a reserve on a connection holding a job about to time
out) cannot arise. Each connection remembers the tube it uses and the tubes it
watches, so ``use``/``watch`` cost a round trip only when they change.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
import weakref

from ..backend import Lease
from ..errors import QueueConnectionError, QueueError
from .wire import Wire

__all__ = ["DEFAULT_TUBE", "Connection", "Pool"]

DEFAULT_TUBE = "default"

# A connection checked in less than this long ago (seconds) is not polled for
# staleness: a server cannot have restarted since, and a busy producer then
# pays no system call for the check.
FRESH = 0.001


class Connection:
    """One socket to beanstalkd and what the server knows of it.

    ``lock`` is held while a command runs; everything else is read and changed
    only with it held, except ``broken``, which only ever becomes True.
    """

    __slots__ = ("_held", "broken", "idle_since", "lock", "sock", "used", "watched", "wire")

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.wire = Wire(sock)
        self.lock = threading.Lock()
        set_timeouts(sock, timeout)
        self.idle_since = 0.0
        self.used = DEFAULT_TUBE
        self.watched = frozenset((DEFAULT_TUBE,))
        # The leases of jobs reserved through this connection and not yet
        # settled, by id(). Weak: a message its user dropped unsettled does not
        # pin the connection. A dict of refs, not a WeakSet, whose methods are
        # Python code on every reserve and settle.
        self._held: dict[int, weakref.ReferenceType[Lease]] = {}
        self.broken = False

    def hold(self, lease: Lease) -> None:
        """Record a job reserved through this connection."""
        self._held[id(lease)] = weakref.ref(lease)

    def let_go(self, lease: Lease) -> None:
        """Forget a job settled (or lost) through this connection."""
        self._held.pop(id(lease), None)

    def holding(self) -> int:
        """Return how many reserved jobs this connection holds, forgetting dropped leases.

        Safe to call while another thread holds or lets go: it reads a snapshot.
        """
        held = self._held
        for key, ref in list(held.items()):
            if ref() is None:
                held.pop(key, None)
        return len(held)

    def stale(self, now: float) -> bool:
        """Return whether an idle connection has something to read.

        Between commands beanstalkd sends nothing, so input on an idle
        connection is the end of the stream (the server restarted or went
        away), a reset, or stray bytes: using it would fail or desynchronise.
        """
        if self.wire.pending():
            return True
        return now - self.idle_since > FRESH and self.wire.readable(0)

    def shut(self) -> None:
        """Close the socket, waking any thread blocked reading it."""
        self.broken = True
        # shutdown() wakes a thread blocked in recv; close() alone may not. It
        # fails when the peer already reset the connection: nothing to wake then.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Pool:
    """The connections of one backend: idle ones to lend, and every open one to close.

    Thread-safe. Connections open on first use.
    """

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        connect_timeout: float,
        timeout: float,
        max_idle: int,
    ) -> None:
        self._host = host
        self._port = port
        self._address = address
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self.open: set[Connection] = set()
        self._closed = False

    def checkout(
        self,
        *,
        tube: str | None = None,
        watch: frozenset[str] | None = None,
        reserving: bool = False,
    ) -> Connection:
        """Return an idle connection (or a new one) with its lock held.

        Prefers one already using ``tube`` or watching ``watch``; with
        ``reserving``, only one that holds no reservation. A stale connection
        is closed on the way (its reservations are lost with it). The one
        returned waits at most the pool's timeout for each reply.
        """
        while True:
            with self._lock:
                if self._closed:
                    raise QueueError("the queue factory is closed")
                chosen = self._choose(tube, watch, reserving)
            if chosen is None:
                chosen = self.connect()
                chosen.lock.acquire()
                return chosen
            chosen.lock.acquire()
            # Checked with its lock held: no settle is under way on it, so
            # anything waiting to be read is not a reply anyone expects.
            if not chosen.broken and not chosen.stale(time.monotonic()):
                return chosen
            chosen.lock.release()
            self.forget(chosen)

    def _choose(
        self, tube: str | None, watch: frozenset[str] | None, reserving: bool
    ) -> Connection | None:
        """Take the best idle connection out of the idle list; call with ``_lock`` held."""
        chosen: Connection | None = None
        for conn in reversed(self._idle):
            if reserving and conn.holding():
                continue
            if conn.used == tube or conn.watched == watch:
                chosen = conn
                break
            if chosen is None:
                chosen = conn
        if chosen is not None:
            self._idle.remove(chosen)
        return chosen

    def checkin(self, conn: Connection) -> None:
        """Take back a connection from :meth:`checkout`, its lock already released."""
        with self._lock:
            if conn.broken or self._closed:
                return
            if len(self._idle) < self._max_idle or conn.holding():
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
                return
            self.open.discard(conn)
        conn.shut()

    def connect(self) -> Connection:
        """Open a connection that is not lent out (a consumer's own), tracked for close()."""
        try:
            sock = socket.create_connection((self._host, self._port), timeout=self._connect_timeout)
        except OSError as exc:
            raise QueueConnectionError(f"cannot connect: {exc}", self._address) from exc
        try:
            # Commands are small writes each awaiting a reply: Nagle would delay them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self._timeout)
        except OSError as exc:
            sock.close()
            raise QueueConnectionError(f"cannot connect: {exc}", self._address) from exc
        with self._lock:
            if self._closed:
                conn.shut()
                raise QueueError("the queue factory is closed")
            self.open.add(conn)
        return conn

    def forget(self, conn: Connection) -> None:
        """Close ``conn`` and stop tracking it."""
        with self._lock:
            self.open.discard(conn)
        conn.shut()

    def close(self) -> None:
        """Close every connection, lent out or not; later checkouts raise QueueError."""
        with self._lock:
            self._closed = True
            connections = list(self.open)
            self.open.clear()
            self._idle.clear()
        for conn in connections:
            conn.shut()


def set_timeouts(sock: socket.socket, seconds: float) -> None:
    """Bound each receive and send on ``sock`` to ``seconds``.

    The kernel keeps the bound (SO_RCVTIMEO, SO_SNDTIMEO) and the socket stays
    blocking, so each receive is one system call; a Python-level timeout
    would poll before every receive and every send. A receive that times out
    raises ``BlockingIOError``. Where the options are missing, Python's timeout
    is used instead.
    """
    whole = int(seconds)
    interval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    try:
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
    except (OSError, AttributeError, struct.error):
        sock.settimeout(seconds)

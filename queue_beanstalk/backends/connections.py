"""Connections to one beanstalkd server, and the pool the backend borrows them from.

A connection runs one command at a time, so each command borrows one for its
duration. A reserve that may block borrows only a connection that holds no
reservation, because a reservation can be settled only on the connection that
made it: settling then never waits behind a blocked reserve, and beanstalkd's
DEADLINE_SOON (sent to a reserve on a connection holding a job about to time
out) cannot arise. Each connection remembers the tube it uses and the tubes it
watches, so ``use``/``watch`` cost a round trip only when they change.

Affinity: each thread goes back first to the connection it last returned,
using it where it lies in the idle list, with only that connection's lock
taken. A loop of puts or of gets in one thread so skips the pool's lock and
its search, which cost more than the command's own Python. An idle connection
whose lock is held is in use by such a thread; the pool passes it over.
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

# A connection checked out less than this long ago (seconds) is not polled for
# staleness: a server cannot have restarted since, and a busy producer then
# pays no system call for the check.
FRESH = 0.001


class Connection:
    """One socket to beanstalkd and what the server knows of it.

    ``lock`` is held while a command runs; everything else is read and changed
    only with it held, except ``broken``, which only ever becomes True, and
    ``used`` and ``watched``, which the pool reads without it only to prefer
    one idle connection to another. ``lent`` says whether the pool took it out
    of its idle list to lend it. ``watched_for`` is the very tuple of tube
    names ``watched`` was last made from: a reserve that passes the same one
    again (a Queue always does) skips building and comparing sets: about 4%
    of a get+delete in the benchmark's split placement (see BENCHMARKS.md).
    """

    __slots__ = (
        "_held", "broken", "checked_out_at", "lent", "lock", "sock", "used", "watched",
        "watched_for", "wire",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.wire = Wire(sock)
        self.lock = threading.Lock()
        set_timeouts(sock, timeout)
        self.checked_out_at = time.monotonic()
        self.lent = False
        self.used = DEFAULT_TUBE
        self.watched = frozenset((DEFAULT_TUBE,))
        self.watched_for: tuple[str, ...] = (DEFAULT_TUBE,)
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

        Call with the connection's lock held, as for hold() and let_go().
        """
        held = self._held
        if not held:
            return 0
        for key, ref in list(held.items()):
            if ref() is None:
                held.pop(key, None)
        return len(held)

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
        # Each thread's last connection (see the module docstring).
        self._affinity = threading.local()

    def checkout(
        self,
        tube: str | None = None,
        watch: tuple[str, ...] | None = None,
        reserving: bool = False,
    ) -> Connection:
        """Return a connection with its lock held; give it back with :meth:`checkin`.

        The calling thread's last connection if it is free and suits (see the
        module docstring); otherwise an idle one, preferring one already using
        ``tube`` or watching the tubes ``watch``; otherwise a new one. With
        ``reserving``, only one that holds no reservation. A stale connection
        is closed on the way (its reservations are lost with it). The one
        returned waits at most the pool's timeout for each reply.
        """
        last: Connection | None = getattr(self._affinity, "conn", None)
        if last is not None and last.broken:
            last = self._affinity.conn = None
        if last is not None and last.lock.acquire(blocking=False):
            # Suits if it runs the command without a use or watch first, and
            # for a reserve, holds no job.
            if last.broken or not (
                (
                    (last.watched_for is watch or last.watched == frozenset(watch or ()))
                    and not (last._held and last.holding())
                )
                if reserving
                else (tube is None or last.used == tube)
            ):
                last.lock.release()
            elif self._fresh(last):
                return last
        while True:
            with self._lock:
                if self._closed:
                    raise QueueError("the queue factory is closed")
                chosen = self._choose(tube, watch, reserving)
            if chosen is None:
                chosen = self.connect()
                chosen.lock.acquire()
                chosen.lent = True
                return chosen
            if self._fresh(chosen):
                return chosen

    def checkin(self, conn: Connection) -> None:
        """Take back a connection from :meth:`checkout` and release its lock.

        The pool keeps it for reuse, and closes the oldest free idle connections
        beyond ``max_idle`` (those in use, or holding a reservation, are not
        counted): it may be one of them.
        """
        if not conn.lent:  # used where it lies in the idle list
            conn.lock.release()
            return
        conn.lent = False
        surplus: list[Connection] = []
        with self._lock:
            if not conn.broken and not self._closed:
                self._idle.append(conn)
                surplus = self._surplus(conn)
                self.open.difference_update(surplus)
        # Shut while still locked: a thread that tries one of them next finds it broken.
        for extra in surplus:
            extra.shut()
            if extra is not conn:
                extra.lock.release()
        conn.lock.release()
        if not conn.broken:
            self._affinity.conn = conn

    def _choose(
        self, tube: str | None, watch: tuple[str, ...] | None, reserving: bool
    ) -> Connection | None:
        """Take the best free idle connection out of the idle list, its lock acquired.

        Call with ``_lock`` held. Locks are only tried, never waited for: a
        held one belongs to a thread using its last connection in place.
        """
        watching = None if watch is None else frozenset(watch)
        candidates = sorted(
            reversed(self._idle),  # the most recently used first
            key=lambda conn: conn.used != tube and conn.watched != watching,  # preferred first
        )
        for conn in candidates:
            if not conn.lock.acquire(blocking=False):
                continue
            if conn.broken or (reserving and conn.holding()):
                conn.lock.release()
                continue
            self._idle.remove(conn)
            conn.lent = True
            return conn
        return None

    def _surplus(self, incoming: Connection) -> list[Connection]:
        """Take the free idle connections beyond ``max_idle`` out of the idle list.

        Free: not in use (its lock can be taken) and holding no reservation;
        the newest are kept, ``incoming`` (being checked in, its lock held)
        first. The connections returned are locked. Call with ``_lock`` held.
        """
        surplus: list[Connection] = []
        free = 0
        for conn in reversed(self._idle):
            if conn is not incoming and not conn.lock.acquire(blocking=False):
                continue  # in use where it lies
            if not conn.holding():
                if free == self._max_idle:
                    surplus.append(conn)
                    continue
                free += 1
            if conn is not incoming:
                conn.lock.release()
        for conn in surplus:
            self._idle.remove(conn)
        return surplus

    def _fresh(self, conn: Connection) -> bool:
        """Return whether ``conn``, held, is usable; if not, close it and release it."""
        # Checked with its lock held: no settle is under way on it, so anything
        # waiting to be read is not a reply anyone expects.
        now = time.monotonic()
        if not conn.broken and not conn.wire.stray(now - conn.checked_out_at > FRESH):
            conn.checked_out_at = now
            return True
        self.forget(conn)
        conn.lock.release()
        return False

    def connect(self) -> Connection:
        """Open a connection, tracked for close(); checkout() lends it, a consumer keeps it."""
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
            if conn in self._idle:  # it was being used in place
                self._idle.remove(conn)
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

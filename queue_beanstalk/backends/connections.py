"""Connections to one beanstalkd server, and the pool the backend borrows them from.

A connection runs one command at a time, so each command borrows one for its
duration. A command borrows a connection that holds no reservation while the
pool is below ``max_connections``, because a reservation can be settled only
on the connection that made it: settling then never waits behind a blocked
reserve, and a command that fails never takes other messages' reservations
down with its connection. At the bound, a connection holding reservations is
shared (one thread that gets hundreds of messages before settling them so
opens at most ``max_connections``); a reserve there may meet beanstalkd's
DEADLINE_SOON, which the backend handles. Each connection remembers the tube
it uses and the tubes it watches, so ``use``/``watch`` cost a round trip only when they change.

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
from collections.abc import Callable, Iterable

from ..backend import Lease
from ..errors import QueueConnectionError, QueueError
from .wire import BodyLimit, Wire

__all__ = ["DEFAULT_TUBE", "Connection", "Pool"]

DEFAULT_TUBE = "default"

# A connection looked at (or, in the pool, lent) less than this long ago
# (seconds) is not polled for stray input again: a busy producer, or a worker
# going through a prefetched batch, pays no system call for the check, and a
# connection that ended in that moment shows at the next look, or fails its
# next command.
FRESH = 0.001
# Seconds between looks for a free connection when all max_connections are in use.
BUSY_WAIT = 0.01


class Connection:
    """One socket to beanstalkd and what the server knows of it.

    ``lock`` is held while a command runs; everything else is read and changed
    only with it held, except ``pooled`` (the pool's, under its own lock),
    ``broken``, which only ever becomes True, and ``used`` and ``watched``,
    which the pool reads without it only to prefer one idle connection to
    another. ``lent`` says whether the pool took it out of its idle list to
    lend it. ``watched_for`` is the very tuple of tube names ``watched`` was
    last made from: a reserve that passes the same one again (a Queue always
    does) skips building and comparing sets (what that saves: bench/ANALYSIS.md).
    """

    __slots__ = (
        "_held", "broken", "checked_at", "lent", "lock", "pooled", "sock", "used",
        "watched", "watched_for", "wire",
    )  # fmt: skip

    def __init__(self, sock: socket.socket, timeout: float, limit: BodyLimit) -> None:
        self.sock = sock
        self.wire = Wire(sock, timeout, limit)
        self.lock = threading.Lock()
        set_timeouts(sock, timeout)
        #: When (``time.monotonic()``) the connection was last looked at (:meth:`stray_input`).
        self.checked_at = time.monotonic()
        self.lent = False
        self.pooled = False
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

    def hold_each(self, leases: Iterable[Lease]) -> None:
        """Record jobs reserved through this connection, as :meth:`hold` each."""
        held, ref = self._held, weakref.ref
        for lease in leases:
            held[id(lease)] = ref(lease)

    def let_go(self, lease: Lease) -> None:
        """Forget a job settled (or lost) through this connection."""
        self._held.pop(id(lease), None)

    def let_go_each(self, leases: Iterable[Lease]) -> None:
        """Forget jobs settled (or lost) through this connection, as :meth:`let_go` each."""
        pop = self._held.pop
        for lease in leases:
            pop(id(lease), None)

    def holds(self, lease: Lease) -> bool:
        """Return whether the job of ``lease`` is reserved through this connection, not settled.

        May be called without the lock (one dict lookup): the answer may then
        be a moment old.
        """
        return id(lease) in self._held

    def fresh(self) -> bool:
        """Return whether the connection was looked at (:meth:`stray_input`) within FRESH seconds.

        Safe without the lock: one clock read, one attribute.
        """
        return time.monotonic() - self.checked_at <= FRESH

    def stray_input(self) -> bool:
        """Return whether input waits on the connection though no reply is due; call it held.

        Between commands beanstalkd sends nothing, so such input is the end of
        the stream (the server went away), a reset or garbage: using the
        connection would fail or read it as a reply. The socket is polled only
        when the connection was last looked at over FRESH seconds ago; either
        way the look counts as one, so a connection used without pause (a
        producer's, from the pool) is polled only after a pause.
        """
        now = time.monotonic()
        wire = self.wire
        if wire.replies.unread or (now - self.checked_at > FRESH and wire.readable(0)):
            return True
        self.checked_at = now
        return False

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

    Thread-safe. Connections open on first use. At most ``max_connections``
    are lent by :meth:`checkout` (a consumer's own connection, from
    :meth:`connect`, is not counted: a handler has one per worker); at the
    bound, a checkout shares a connection that holds reservations, or waits
    for one to come free.
    """

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        connect_timeout: float,
        timeout: float,
        max_idle: int,
        max_connections: int,
        limit: BodyLimit,
        lost: Callable[[], None],
    ) -> None:
        self._host = host
        self._port = port
        self._address = address
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._max_idle = max_idle
        self._max_connections = max_connections
        #: The largest data block a reply may announce, shared by every connection.
        self.limit = limit
        # Called when a connection turns out closed by the server (it may have restarted).
        self._lost = lost
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self.open: set[Connection] = set()
        # Connections lent by checkout (or being opened for it), bounded by max_connections.
        self._pooled = 0
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
        ``tube`` or watching the tubes ``watch``; otherwise a new one. Below
        the bound, only one that holds no reservation: a reserve then never
        blocks a settle, and a failing command never takes other messages'
        reservations down with its connection. At the bound, a free one that
        holds reservations, or the first to come free within the timeout.
        A stale connection is closed on the way (its reservations are lost
        with it). The one returned waits at most the pool's timeout for each reply.

        :raises QueueConnectionError: when no connection can be opened, or
            every one of ``max_connections`` stayed busy for the pool's timeout.
        """
        last: Connection | None = getattr(self._affinity, "conn", None)
        if last is not None and last.broken:
            last = self._affinity.conn = None
        if last is not None and last.lock.acquire(False):  # without blocking (a keyword: slower)
            # Suits if it holds no job and runs the command without a use or
            # watch first.
            if (
                last.broken
                or (last._held and last.holding())
                or not (
                    (last.watched_for is watch or last.watched == frozenset(watch or ()))
                    if reserving
                    else (tube is None or last.used == tube)
                )
            ):
                last.lock.release()
            elif self._fresh(last):
                return last
        give_up: float | None = None
        while True:
            with self._lock:
                if self._closed:
                    raise QueueError("the queue factory is closed")
                chosen = self._choose(tube, watch, reserving, shared=False)
                opening = chosen is None and self._pooled < self._max_connections
                if opening:
                    self._pooled += 1  # taken now, so that other threads see the bound
                elif chosen is None:
                    chosen = self._choose(tube, watch, reserving, shared=True)
            if opening:
                return self._open_pooled()
            if chosen is None:
                now = time.monotonic()
                if give_up is None:
                    give_up = now + self._timeout
                elif now >= give_up:
                    raise QueueConnectionError(
                        f"all {self._max_connections} connections (max_connections) stayed "
                        f"in use for {self._timeout:g}s",
                        self._address,
                    )
                time.sleep(BUSY_WAIT)
                continue
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
        try:
            with self._lock:
                if not conn.broken and not self._closed:
                    self._idle.append(conn)
                    surplus = self._surplus(conn)
            # Shut while still locked: a thread that tries one of them next finds it broken.
            for extra in surplus:
                extra.shut()
                if extra is not conn:
                    extra.lock.release()
        finally:
            conn.lock.release()  # even when interrupted: a connection never stays locked
        if not conn.broken:
            self._affinity.conn = conn

    def trim(self) -> None:
        """Close the free idle connections beyond ``max_idle``, e.g. after settles freed them."""
        if len(self._idle) <= self._max_idle:  # read without the lock: a hint, checked below
            return
        with self._lock:
            surplus = self._surplus(None)
        for extra in surplus:
            extra.shut()
            extra.lock.release()

    def _choose(
        self, tube: str | None, watch: tuple[str, ...] | None, reserving: bool, shared: bool
    ) -> Connection | None:
        """Take the best free idle connection out of the idle list, its lock acquired.

        Only one holding no reservation, unless ``shared``. Call with ``_lock``
        held. Locks are only tried, never waited for: a held one belongs to a
        thread using its last connection in place.
        """
        watching = None if watch is None else frozenset(watch)
        candidates = sorted(
            reversed(self._idle),  # the most recently used first
            key=lambda conn: conn.used != tube and conn.watched != watching,  # preferred first
        )
        for conn in candidates:
            if not conn.lock.acquire(blocking=False):
                continue
            if conn.broken or (not shared and conn.holding()):
                conn.lock.release()
                continue
            self._idle.remove(conn)
            conn.lent = True
            return conn
        return None

    def _surplus(self, incoming: Connection | None) -> list[Connection]:
        """Take the free idle connections beyond ``max_idle`` out of the pool.

        Free: not in use (its lock can be taken) and holding no reservation;
        the newest are kept, ``incoming`` (being checked in, its lock held)
        first. The connections returned are locked, no longer tracked, and
        to be shut. Call with ``_lock`` held.
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
            self._untrack(conn)
        return surplus

    def _fresh(self, conn: Connection) -> bool:
        """Return whether ``conn``, held, is usable; if not, close it and release it."""
        # Checked with its lock held: no settle is under way on it, so anything
        # waiting to be read is not a reply anyone expects.
        try:
            usable = not conn.broken and not conn.stray_input()
        except BaseException:
            # Interrupted in the poll (Ctrl-C): the connection goes back, unlocked.
            self.checkin(conn)
            raise
        if usable:
            return True
        self.forget(conn)
        conn.lock.release()
        self._lost()
        return False

    def _open_pooled(self) -> Connection:
        """Open a connection for checkout, its slot under the bound already taken."""
        try:
            conn = self.connect(pooled=True)
        except BaseException:
            with self._lock:
                self._pooled -= 1
            raise
        conn.lock.acquire()
        conn.lent = True
        return conn

    def connect(
        self,
        watch_socket: Callable[[socket.socket], bool] | None = None,
        *,
        pooled: bool = False,
    ) -> Connection:
        """Open a connection, tracked for close(); checkout() lends it, a consumer keeps it.

        :param watch_socket: told each socket before it connects, so that
            another thread may shut it to cut the connect short; when it
            returns False, nothing is connected.
        :raises QueueConnectionError: when no connection could be opened.
        """
        sock = self._connect_socket(watch_socket)
        try:
            # Commands are small writes each awaiting a reply: Nagle would delay them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, self._timeout, self.limit)
        except OSError as exc:
            sock.close()
            raise QueueConnectionError(f"cannot connect: {exc}", self._address) from exc
        conn.pooled = pooled
        with self._lock:
            if self._closed:
                conn.shut()
                raise QueueError("the queue factory is closed")
            self.open.add(conn)
        return conn

    def _connect_socket(
        self, watch_socket: Callable[[socket.socket], bool] | None
    ) -> socket.socket:
        """Return a socket connected to the server: socket.create_connection, watchable."""
        error: OSError | None = None
        try:
            addresses = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise QueueConnectionError(f"cannot connect: {exc}", self._address) from exc
        for family, kind, proto, _, address in addresses:
            sock = socket.socket(family, kind, proto)
            if watch_socket is not None and not watch_socket(sock):
                sock.close()
                raise QueueConnectionError("connect interrupted", self._address)
            try:
                sock.settimeout(self._connect_timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise QueueConnectionError(f"cannot connect: {error}", self._address) from error

    def forget(self, conn: Connection) -> None:
        """Close ``conn`` and stop tracking it."""
        with self._lock:
            self._untrack(conn)
            if conn in self._idle:  # it was being used in place
                self._idle.remove(conn)
        conn.shut()

    def _untrack(self, conn: Connection) -> None:
        """Stop counting ``conn`` as open; call with ``_lock`` held."""
        if conn in self.open:
            self.open.discard(conn)
            if conn.pooled:
                self._pooled -= 1

    def close(self) -> None:
        """Close every connection, lent out or not; later checkouts raise QueueError."""
        with self._lock:
            self._closed = True
            connections = list(self.open)
            self.open.clear()
            self._idle.clear()
            self._pooled = 0
        for conn in connections:
            conn.shut()


def set_timeouts(sock: socket.socket, seconds: float) -> None:
    """Bound each receive and send on ``sock`` to ``seconds``.

    The kernel keeps the bound (SO_RCVTIMEO, SO_SNDTIMEO) and the socket stays
    blocking, so each receive is one system call; a Python-level timeout
    would poll before every receive and every send. A receive that times out
    raises ``BlockingIOError``. Where the options are missing, Python's timeout
    is used instead. A bound below a microsecond is rounded up to one: the
    kernel reads zero as "no bound at all".
    """
    whole = int(seconds)
    micro = max(int((seconds - whole) * 1_000_000), 0 if whole else 1)
    interval = struct.pack("ll", whole, micro)
    try:
        sock.setblocking(True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
    except (OSError, AttributeError, struct.error):
        sock.settimeout(seconds)

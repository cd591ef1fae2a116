"""Handler: call a function for every message that arrives on several queues.

Each of ``concurrency`` worker threads has a consumer (on beanstalkd, a
connection) of its own and reserves one message at a time, so the handler never
holds more messages than it can start; with ``prefetch=N``, up to N at a time,
taken in one round trip and run in order. Either way a handled message's delete
goes out with the worker's next reserve, in one write. What becomes of each
message once its function returns or raises is :mod:`queue_beanstalk.retries`'s;
a body that cannot be decoded is buried and logged
(:mod:`queue_beanstalk.decoding`), and the handler goes on. A message held past
its time-to-run (its function runs long, or, prefetched, it waits for the calls
before it, or, handled, for its delete to go out) keeps its reservation: the
:mod:`~queue_beanstalk.reservation_keeper` touches it, so the message is not
handed to another worker.

Life cycle
    ``STOPPED`` --start()--> ``RUNNING`` --stop()--> ``STOPPING`` --wait() (or
    the next start()) sees the workers ended--> ``STOPPED``; a worker that ends
    on an error it cannot survive turns ``RUNNING`` into ``FAILED``, which stops
    the others the same way, and which the next start() leaves. The shutdown
    order, and why:

    1. ``stop()`` sets the workers' event and interrupts their consumers: no
       reserve is pending or starts after this, so no new message is taken.
    2. A worker whose reserve returned messages as the stop came releases them
       unstarted (on beanstalkd its connection is already closed, which gave
       them back); a worker in a callback finishes it, settles its message, and
       releases the prefetched messages it has not started, at their
       priority, with no delay: other workers get them at once.
    3. Each worker then closes its consumer: anything it still held goes back.
    4. The keeper is closed last, by ``wait()`` once every worker has ended, so
       callbacks running past their time-to-run stay reserved to the end.

Burst
    A handler made with ``burst=True`` stops by itself, as if ``stop()`` were
    called, once no message is ready on its queues and none is in flight:
    each worker polls (a reserve that does not wait), and when a worker finds
    nothing while every other one also found nothing and holds nothing, the
    handler stops. A message released by a worker is polled for again before
    that worker counts as idle, so a failed message retried at once is
    handled; a delayed message is not ready, and is not waited for.

Errors
    A worker survives whatever the codec, the wire or the backend raise: it
    logs the error, backs off and goes on (one boundary, in ``Handler._work``).
    Should a worker still end (an error that is not an ``Exception``), the
    handler fails as a whole: the other workers stop, :attr:`Handler.running`
    turns False and :attr:`Handler.failure` says why, so the worker command
    exits non-zero and a supervisor can restart it. No worker ends silently.
"""

from __future__ import annotations

import enum
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

from .backend import Backend, Consumer, Lease, Reserved
from .codec import Codec
from .decoding import decode, decode_reserved, priority_of
from .errors import DecodeError, HandlerNotRunning, NotFound, QueueError
from .logs import FailureLog, describe
from .message import Message, Received
from .metrics import HandlerStats, Tally
from .reservation_keeper import Holding, ReservationKeeper
from .retries import Bury, Outcome, Retry, RetryDelay, RetryPolicy

__all__ = ["Handler"]

logger = logging.getLogger("queue_beanstalk")

# How long one reserve waits. stop() interrupts it, so this only bounds how long
# a worker goes without noticing anything else.
RESERVE_TIMEOUT = 5.0
# Burst: seconds a worker that found nothing waits before it polls again, while
# another worker is still busy (and may release a message, or a producer put one).
BURST_POLL = 0.1


class _State(enum.Enum):
    """Where a handler is in its life; changed only under the handler's lock."""

    STOPPED = "stopped"
    RUNNING = "running"
    #: stop() was called; workers finish their callbacks and end.
    STOPPING = "stopping"
    #: A worker ended on an error it could not survive; the others are stopping.
    FAILED = "failed"


class Handler:
    """Calls ``func(message)`` for every message on the named queues, in worker threads.

    Made by :meth:`QueueFactory.handler`. ``start``, ``stop``, ``wait`` and
    ``running`` may be called from any thread. Worker threads are daemon threads:
    call ``stop()`` and ``wait()`` before the process exits, or the messages in
    flight are handed out again after their time-to-run.
    """

    def __init__(
        self,
        func: Callable[[Received], object],
        names: Sequence[str],
        backend: Backend,
        codec: Codec,
        *,
        priority: int,
        concurrency: int,
        max_attempts: int,
        retry_delay: RetryDelay,
        burst: bool,
        time_limit: float | None = None,
        prefetch: int = 1,
    ) -> None:
        self._func = func
        self._prefetch = prefetch
        self._time_limit = time_limit
        self._names = tuple(names)
        self._backend = backend
        self._codec = codec
        # Each prefetched body is decoded as its job is reserved, while the server
        # still answers the batch's later reserves (the batch's prepare);
        # decode_reserved then takes what decode() made of it.
        self._decode = functools.partial(decode, codec)
        self._priority = priority
        self._concurrency = concurrency
        self._policy = RetryPolicy(max_attempts, retry_delay)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._state = _State.STOPPED
        self._failure: BaseException | None = None
        self._workers: list[threading.Thread] = []
        self._consumers: list[Consumer] = []
        self._keeper: ReservationKeeper | None = None
        self._health = _Health()
        self._failures = FailureLog()
        self._tally = Tally(self._names)
        self._burst = burst
        # Burst: which workers found nothing on their last poll and hold nothing.
        self._idle: list[bool] = []

    @property
    def running(self) -> bool:
        """Whether the handler was started, and neither stopped nor failed since."""
        return self._state is _State.RUNNING

    @property
    def failure(self) -> BaseException | None:
        """What ended a worker and so stopped the handler; None unless it failed.

        Cleared by the next :meth:`start`.
        """
        return self._failure

    @property
    def queues(self) -> tuple[str, ...]:
        """The names of the queues the handler watches."""
        return self._names

    def stats(self) -> HandlerStats:
        """Return what the handler has done so far, per queue: its messages' outcomes, call times.

        A snapshot, copied under a lock; no round trip. Counted since the
        handler was made, across stops and starts; :mod:`queue_beanstalk.metrics`
        says what each outcome counts, and exposes them to Prometheus.
        """
        return self._tally.snapshot()

    def start(self) -> None:
        """Start the worker threads; does nothing when already running.

        Safe to call many times, from many threads at once: one set of workers
        runs. After ``stop()`` or a failure, it first waits for the previous
        workers to end (without holding the handler's lock, so that their
        callbacks may call ``wait()`` or ``stop()`` meanwhile).

        :raises RuntimeError: when the worker threads cannot be started; the
            handler has then failed (see :attr:`failure`).
        """
        while True:
            with self._lock:
                if self._state is _State.RUNNING:
                    return
                current = threading.current_thread()
                previous = [w for w in self._workers if w is not current and w.is_alive()]
                if not previous:
                    self._ended()
                    self._start_workers()
                    break
            self._join(previous, None)
        logger.info(
            "handler started: %d worker(s) on %s", self._concurrency, ", ".join(self._names)
        )

    def _start_workers(self) -> None:
        """Start a new set of workers and the keeper; call with ``_lock`` held."""
        self._failure = None
        # A new event for each set of workers: one of the last set still
        # finishing its callback must go on seeing its own, set.
        self._stopping = stopping = threading.Event()
        self._keeper = ReservationKeeper(
            self._backend,
            self._concurrency,
            stopping,
            time_limit=self._time_limit,
            priority=self._priority,
        )
        self._consumers = [self._backend.consumer(self._names) for _ in range(self._concurrency)]
        self._workers = [
            threading.Thread(
                target=self._work,
                args=(consumer, self._keeper, number, stopping),
                name=f"queue-beanstalk-worker-{number + 1}",
                daemon=True,
            )
            for number, consumer in enumerate(self._consumers)
        ]
        self._idle = [False] * self._concurrency
        self._state = _State.RUNNING
        try:
            for worker in self._workers:
                worker.start()
        except BaseException as exc:  # no thread to be had: the handler fails, visibly
            self._failure = exc
            self._state = _State.FAILED
            self._interrupt()
            raise

    def stop(self) -> None:
        """Ask the workers to stop, and return at once; ``wait()`` blocks until they have.

        No message is taken after this; a pending reserve ends at once; callbacks
        in flight finish and their messages are settled.

        :raises HandlerNotRunning: when the handler is not running (never
            started, stopped, or failed: see :attr:`failure`).
        """
        with self._lock:
            if self._state is not _State.RUNNING:
                raise HandlerNotRunning(f"the handler is not running (it is {self._state.value})")
            self._state = _State.STOPPING
            self._interrupt()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every worker has ended and every callback in flight has finished.

        May be called from any thread, a callback included: from a worker
        thread it waits for the other workers (the caller's own ends once its
        callback returns).

        :param timeout: seconds to wait at most; None waits as long as it takes.
        :returns: True when the workers have ended, False when the timeout passed first.
        """
        if not self._join(self._workers, timeout):
            return False
        with self._lock:
            self._ended()
        return True

    def __repr__(self) -> str:
        return (
            f"queue_beanstalk.Handler(queues={self._names!r}, "
            f"concurrency={self._concurrency}, state={self._state.value!r})"
        )

    def _interrupt(self) -> None:
        """Make every worker end after its callback; call with ``_lock`` held."""
        self._stopping.set()
        for consumer in self._consumers:
            consumer.interrupt()

    @staticmethod
    def _join(workers: list[threading.Thread], timeout: float | None) -> bool:
        """Join ``workers`` but the calling one within one deadline; return whether all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for worker in workers:
            if worker is current:
                continue  # a callback calling wait(): this worker ends when it returns
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(remaining)
            if worker.is_alive():
                return False
        return True

    def _ended(self) -> None:
        """Record that the stopped (or failed) workers have ended; call with ``_lock`` held."""
        if self._state is _State.RUNNING or any(w.is_alive() for w in self._workers):
            return
        if self._keeper is not None:
            self._keeper.close()
        if self._state is _State.STOPPING:
            self._state = _State.STOPPED
            logger.info("handler stopped")

    def _crashed(self, error: BaseException) -> None:
        """Fail the handler: a worker ended on ``error``; the others are told to stop."""
        logger.critical(
            "handler worker %s ended on an error it cannot survive; stopping the handler",
            threading.current_thread().name,
            exc_info=error,
        )
        with self._lock:
            if self._failure is None:
                self._failure = error
            if self._state is _State.RUNNING:
                self._state = _State.FAILED
                self._interrupt()

    # Worker threads

    def _work(
        self, consumer: Consumer, keeper: ReservationKeeper, slot: int, stopping: threading.Event
    ) -> None:
        """Run one worker thread: the one error boundary around the handling of messages.

        Whatever the backend or the codec raise is logged, backed off from and
        survived; what still ends the loop fails the handler (:meth:`_crashed`).
        """
        # Handled messages' deletes wait to go out with the next reserves, in
        # one write: one round trip per batch of messages instead of two per
        # message. The keeper keeps them reserved until then.
        done: list[Lease] = []
        holding = keeper.slots[slot]
        try:
            failures = 0
            while not stopping.is_set():
                if self._burst:
                    # Busy from before the reserve: a worker checking whether all
                    # are idle must not count one whose reserve may yet take a message.
                    self._idle[slot] = False
                try:
                    batch = self._next(consumer, done)
                except Exception as exc:  # noqa: BLE001 - a worker outlives anything a backend raises
                    failures += 1
                    self._health.failed(exc)
                    stopping.wait(_backoff(failures))
                    continue
                finally:
                    done = []
                    holding.batch = ()  # the deletes went out: nothing is held
                if failures:
                    failures = 0
                    self._health.recovered()
                if not batch:
                    if self._burst and not stopping.is_set():
                        self._found_nothing(slot, stopping)
                    continue
                holding.hold(batch, done)
                for index, reserved in enumerate(batch):
                    if stopping.is_set():
                        # Reserved, not started, as stop() came: hand them back at
                        # once, for other workers. (On beanstalkd a stop during
                        # the reserve closed the connection, which already did.)
                        self._give_back(consumer, batch[index:])
                        break
                    if index and reserved.lease.lost:
                        # The batch's connection ended while the calls before ran:
                        # the server hands the rest out again; running them here
                        # too would run each twice. (An end within the last
                        # millisecond may not show yet: a race no check closes.)
                        self._let_go(batch[index:])
                        break
                    try:
                        if self._handle(reserved, holding):
                            done.append(reserved.lease)
                    except Exception:
                        logger.exception(
                            "handler worker failed on job %d; releasing it", reserved.job_id
                        )
                        self._settle(reserved.lease, Outcome.RELEASE)
            for lease in done:
                self._settle(lease, Outcome.DELETE, claimed=True)
        except BaseException as exc:  # noqa: BLE001 - recorded and logged: the handler fails
            self._crashed(exc)
        finally:
            holding.batch = ()
            consumer.close()

    def _next(self, consumer: Consumer, done: list[Lease]) -> list[Reserved]:
        """Reserve the next messages (up to ``prefetch``), deleting ``done`` in the same write.

        In burst mode the reserve polls: it does not wait for a message.
        """
        timeout = 0.0 if self._burst else RESERVE_TIMEOUT
        lost, batch = consumer.reserve_batch(done, self._prefetch, timeout, self._decode)
        for lease in lost:
            _log_lost(lease, Outcome.DELETE)
        return batch

    def _give_back(self, consumer: Consumer, unstarted: Sequence[Reserved]) -> None:
        """Release reserved messages whose callbacks never started, at their priority, now.

        They were not handled, so they count as no outcome. A release that
        fails is quiet: the server gets them back when the consumer's
        connection closes, as it does when the worker ends.
        """
        consumer.give_back([reserved.lease for reserved in unstarted if reserved.lease.claim()])
        if self._prefetch > 1 and unstarted:
            logger.info(
                "handler worker stopping: released %d prefetched message(s) not started",
                len(unstarted),
            )

    @staticmethod
    def _let_go(unstarted: Sequence[Reserved]) -> None:
        """Drop reserved messages not started whose reservations are gone; log it once."""
        for reserved in unstarted:
            reserved.lease.claim()  # nothing is left to settle
        logger.warning(
            "handler worker: the connection holding %d prefetched message(s) not started "
            "ended; the server hands them out again",
            len(unstarted),
        )

    def _found_nothing(self, slot: int, stopping: threading.Event) -> None:
        """Burst: stop the handler if no other worker is busy, else wait, to poll again."""
        with self._lock:
            self._idle[slot] = True
            drained = (
                all(self._idle) and self._state is _State.RUNNING and stopping is self._stopping
            )
            if drained:
                self._state = _State.STOPPING
                self._interrupt()
        if drained:
            logger.info(
                "handler: no message ready on %s and none in flight; stopping (burst)",
                ", ".join(self._names),
            )
        else:
            stopping.wait(BURST_POLL)

    def _handle(self, reserved: Reserved, holding: Holding) -> bool:
        """Call the function; return whether its message is to be deleted (it is claimed)."""
        try:
            message = decode_reserved(self._backend, self._codec, reserved, self._priority)
        except DecodeError:
            self._tally.settled(reserved.tube, Outcome.BURY)
            return False  # buried and logged; nothing is lost
        lease = reserved.lease
        started = holding.start(lease)
        failure: BaseException | None = None
        try:
            self._func(message)
        except BaseException as error:  # noqa: BLE001 - logged; the message retried or buried
            failure = error
        finally:
            holding.running = None
        if holding.given_back is lease:  # past the time limit: the message went back meanwhile
            self._tally.called(lease.tube, started, failure)
            logger.warning(
                "the call of %s returned %.1fs after it started, past its time limit; its "
                "message had been given back, so what it returned is ignored",
                describe(message),
                time.perf_counter() - started,
            )
            return False
        if failure is None:
            # Claimed now, and deleted with the next reserve; the worker puts it
            # in its holding's deferred, so the keeper keeps it reserved until
            # then. Not when the function settled its message itself: nor
            # counted, then.
            claimed = lease.claim()
            self._tally.called(lease.tube, started, deleted=claimed)
            return claimed
        self._tally.called(lease.tube, started, failure)
        if isinstance(failure, Retry):
            logger.debug(
                "handler function raised Retry on %s; released, tried again in %ds",
                describe(message),
                failure.delay,
            )
            self._settle(lease, Outcome.RELEASE, failure.delay)
        elif isinstance(failure, Bury):
            logger.info("handler function raised Bury on %s; buried", describe(message))
            self._settle(lease, Outcome.BURY)
        else:
            self._fail(lease, message, failure)
        return False

    def _fail(self, lease: Lease, message: Message, error: BaseException) -> None:
        """Release or bury the message of a call that raised ``error``, and log it."""
        attempts: int | None
        try:
            stats = self._backend.stats_job(lease.ref)
            attempts = self._policy.attempt(stats.reserves, stats.kicks)
            priority = stats.priority
        except QueueError:
            # The server will tell next time; a release is the safe side.
            attempts, priority = None, self._priority
        outcome, delay = self._policy.after_failure(attempts or 1)
        self._failures.failed(
            message,
            error,
            attempts,
            self._policy.max_attempts,
            buried=outcome is Outcome.BURY,
            delay=delay,
        )
        self._settle(lease, outcome, delay, priority)

    def _settle(
        self,
        lease: Lease,
        outcome: Outcome,
        delay: int = 0,
        priority: int | None = None,
        *,
        claimed: bool = False,
    ) -> None:
        """Delete, release or bury a lease; a failure is logged, never raised.

        The lease is claimed first, and the outcome counted (:meth:`stats`),
        unless ``claimed`` says the caller did both: a lease already claimed was
        settled by the function itself, and is left.
        A released or buried message keeps its priority: beanstalkd's release and
        bury set one, so it is looked up (``stats-job``) when not given, and
        when that fails the message goes back with the factory's default
        rather than not at all.
        """
        if not claimed:
            if not lease.claim():
                return
            self._tally.settled(lease.tube, outcome)
        try:
            if outcome is Outcome.DELETE:
                self._backend.delete(lease)
            elif outcome is Outcome.RELEASE:
                if priority is None:
                    priority = priority_of(self._backend, lease, self._priority)
                self._backend.release(lease, priority=priority, delay=delay)
            elif outcome is Outcome.BURY:
                if priority is None:
                    priority = priority_of(self._backend, lease, self._priority)
                self._backend.bury(lease, priority=priority)
            else:
                _unreachable(outcome)
        except NotFound:
            _log_lost(lease, outcome)
        except Exception as exc:  # noqa: BLE001 - logged; the server keeps the job
            logger.warning("could not %s job %d: %s", outcome.value, lease.job_id, exc)


def _unreachable(value: NoReturn) -> NoReturn:
    """Fail loudly on a value the type checker proved impossible (an unhandled outcome)."""
    raise AssertionError(f"unhandled {value!r}")


def _log_lost(lease: Lease, outcome: Outcome) -> None:
    logger.warning(
        "job %d was no longer reserved when it was to be %s; the server hands it out again",
        lease.job_id,
        outcome.done,
    )


def _backoff(failures: int) -> float:
    """Return seconds to wait after ``failures`` failures in a row: jittered, at most 5 s."""
    return float(random.uniform(0.5, 1.0) * min(5.0, 0.1 * 2 ** min(failures, 16)))  # noqa: S311


class _Health:
    """Logs one line when the server is lost and one when it is back, not one per attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down = False

    def failed(self, exc: Exception) -> None:
        if not isinstance(exc, QueueError):  # not the server: a bug, logged every time
            logger.error("handler worker error; retrying with backoff", exc_info=exc)
            return
        with self._lock:
            if self._down:
                return
            self._down = True
        logger.warning("handler lost the server (%s); retrying with backoff", exc)

    def recovered(self) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
        logger.warning("handler reached the server again")

"""Queue: put, get, delete and release messages on one named tube (tsuru's Q)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from .backend import PEEK_STATES, Backend, Lease, TubeStats
from .checks import (
    MAX_UINT32,
    Seconds,
    check_count,
    check_priority,
    check_ttr,
    to_seconds,
    whole_seconds,
)
from .codec import Codec
from .decoding import decode_reserved
from .errors import MessageTooBig, NotFound, PutManyError, QueueError
from .message import Message, Received
from .peeked import Peeked, peek

__all__ = ["Queue"]

logger = logging.getLogger("queue_beanstalk")

# Seconds a queue is paused while empty("ready") sweeps it (resumed at the end).
SWEEP_PAUSE = 3600


class Queue:
    """A named queue (a beanstalkd tube); get one from :meth:`QueueFactory.get`.

    Thread-safe: one Queue may be used from many threads at once, and a message
    got in one thread may be deleted or released from another. A ``get`` blocked
    in one thread does not hold up a ``put`` from another.

    Times are seconds (``int``, ``float`` or ``datetime.timedelta``). beanstalkd
    counts whole seconds, so delays are rounded **up**: ``put(m, delay=0.2)``
    makes ``m`` available after one second, never at once.
    """

    __slots__ = ("_backend", "_codec", "_name", "_priority", "_ttr", "_tubes")

    def __init__(self, name: str, backend: Backend, codec: Codec, *, priority: int, ttr: int):
        self._name = name
        # What get() reserves from, always this very tuple: the connection that
        # watched it last knows it again without building a set.
        self._tubes = (name,)
        self._backend = backend
        self._codec = codec
        self._priority = priority
        self._ttr = ttr

    @property
    def name(self) -> str:
        """The queue's name (the beanstalkd tube)."""
        return self._name

    def put(
        self,
        message: Message,
        delay: Seconds = 0,
        *,
        priority: int | None = None,
        ttr: Seconds | None = None,
    ) -> int:
        """Store ``message`` and return its job id, also set as ``message.id``.

        ``message.server`` is set to the server that stored it: ids are per server.

        Blocks for one round trip to the server.

        :param message: the message to store.
        :param delay: seconds before the message can be got; rounded up to whole seconds.
        :param priority: 0 (most urgent) to ``2**32 - 1``; the factory's default if None.
        :param ttr: seconds a getter may hold the message before the server hands
            it out again (time-to-run); rounded up; the factory's default if None.
        :raises TypeError: when ``message`` is not a :class:`Message`.
        :raises ValueError: for a negative delay, or a priority or ttr out of range.
        :raises MessageTooBig: when the encoded message is over the server's limit.
        :raises QueueConnectionError: when the server cannot be reached.
        """
        if not isinstance(message, Message):
            raise TypeError(f"put() takes a Message, not {type(message).__name__}")
        body = self._codec.encode(message)
        if type(delay) is int and not delay and priority is None and ttr is None:
            # The usual put, with the factory's defaults: nothing to convert or check.
            priority, seconds, ttr_seconds = self._priority, 0, self._ttr
        else:
            priority, seconds, ttr_seconds = self._put_options(delay, priority, ttr)
        message._id, message._server = self._backend.put(
            self._name, body, priority=priority, delay=seconds, ttr=ttr_seconds
        )
        message._queue = self._name
        return message._id

    def put_many(
        self,
        messages: Iterable[Message],
        delay: Seconds = 0,
        *,
        priority: int | None = None,
        ttr: Seconds | None = None,
    ) -> list[int]:
        """Store many messages and return their job ids, in order.

        On beanstalkd the puts are pipelined, many to a write, so a batch costs a
        round trip per few hundred messages instead of one per message. Every
        message is checked and encoded before anything is sent. Each stored
        message gets its ``id``, ``server`` and ``queue`` set, as with :meth:`put`.

        :param messages: the messages to store.
        :param delay: seconds before they can be got; rounded up to whole seconds.
        :param priority: as for :meth:`put`.
        :param ttr: as for :meth:`put`.
        :raises TypeError: when an item is not a :class:`Message` (nothing stored).
        :raises PutManyError: when some messages were not stored: its ``ids``
            and ``errors`` say which and why (a message over the size limit
            stops the whole batch before anything is sent).
        :raises QueueConnectionError: when the server cannot be reached at all
            (nothing was stored).
        """
        batch = list(messages)
        for index, message in enumerate(batch):
            if not isinstance(message, Message):
                raise TypeError(
                    f"put_many() takes Messages; item {index} is a {type(message).__name__}"
                )
        priority, seconds, ttr_seconds = self._put_options(delay, priority, ttr)
        bodies = [self._codec.encode(message) for message in batch]
        if not batch:
            return []
        limit = self._backend.max_job_size()
        too_big: dict[int, QueueError] = {
            index: MessageTooBig(len(body), limit)
            for index, body in enumerate(bodies)
            if len(body) > limit
        }
        if too_big:
            raise PutManyError([None] * len(bodies), too_big)
        try:
            jobs = self._backend.put_many(
                self._name, bodies, priority=priority, delay=seconds, ttr=ttr_seconds
            )
        except PutManyError as exc:
            self._mark_put(batch, exc.jobs)
            raise
        self._mark_put(batch, jobs)
        return [job.id for job in jobs]

    def get(self, timeout: Seconds) -> Received:
        """Reserve the next message, waiting up to ``timeout`` seconds; ``0`` polls.

        Blocks the calling thread only. The message is reserved for its
        time-to-run: :meth:`delete` it when done, or :meth:`release` it.

        :param timeout: seconds to wait; never gives up earlier, and at most
            about a second later (beanstalkd waits in whole seconds).
        :raises Timeout: when no message became available in time.
        :raises DecodeError: when the body cannot be decoded; that job is buried.
        :raises ValueError: for a negative timeout, or one over ``2**32 - 1``.
        """
        seconds = to_seconds(timeout, "timeout")
        if seconds > MAX_UINT32:
            raise ValueError(f"timeout must be at most {MAX_UINT32} seconds, not {timeout!r}")
        reserved = self._backend.reserve(self._tubes, seconds)
        return decode_reserved(self._backend, self._codec, reserved, self._priority)

    def delete(self, message: Message) -> None:
        """Delete a message got from this queue: it is done with.

        :raises NotFound: when the message was not got from this queue, was
            already deleted, released or buried, or its reservation was lost.
        """
        self._backend.delete(self._claim(message))

    def release(self, message: Message, delay: Seconds = 0, *, priority: int | None = None) -> None:
        """Put a message got from this queue back, to be got again after ``delay`` seconds.

        :param delay: seconds, rounded up to whole seconds.
        :param priority: the priority it goes back with; the factory's default if None.
        :raises NotFound: as for :meth:`delete`.
        """
        seconds = whole_seconds(delay, "delay")
        prio = self._priority_of(priority)
        self._backend.release(self._claim(message), priority=prio, delay=seconds)

    def bury(self, message: Message, *, priority: int | None = None) -> None:
        """Set a message got from this queue aside, kept but not handed out until kicked.

        :raises NotFound: as for :meth:`delete`.
        """
        self._backend.bury(self._claim(message), priority=self._priority_of(priority))

    def touch(self, message: Message) -> None:
        """Restart the time-to-run of a message got from this queue and still held.

        :raises NotFound: as for :meth:`delete`.
        """
        lease = self._lease(message)
        if lease.settled:
            raise NotFound(f"message {message.id} was already settled")
        self._backend.touch(lease)

    # Operating the queue: what an operator does, not a worker.

    def stats(self) -> TubeStats:
        """Return the queue's counts (ready, delayed, reserved, buried, ...); zeros if unused.

        With several servers, the sums, and each server's own in ``servers``.
        """
        return self._backend.stats_tube(self._name)

    def peek_ready(self) -> Peeked | None:
        """Return the next message to be got (the most urgent), without reserving it; or None."""
        return peek(self._backend, self._codec, self._name, "ready")

    def peek_delayed(self) -> Peeked | None:
        """Return the delayed message to become ready first, without reserving it; or None."""
        return peek(self._backend, self._codec, self._name, "delayed")

    def peek_buried(self) -> Peeked | None:
        """Return the first buried message (the one kicked first), or None."""
        return peek(self._backend, self._codec, self._name, "buried")

    def kick(self, count: int = 1) -> int:
        """Make up to ``count`` buried messages ready again, or delayed ones if none is buried.

        :returns: how many were kicked (with several servers, over all of them).
        :raises ValueError: for a count below 1.
        """
        return self._backend.kick(self._name, check_count(count, "count", 1))

    def kick_message(self, peeked: Peeked) -> None:
        """Make one peeked buried or delayed message ready again.

        :raises NotFound: when it is no longer buried or delayed.
        """
        self._backend.kick_job(self._peeked_here(peeked).ref)

    def delete_peeked(self, peeked: Peeked) -> None:
        """Delete a peeked message for good (a poison message given up on).

        Only a job nobody holds is deleted: the server is asked for its state
        and sent the delete on one connection, which holds no reservation of
        its own, so a message a worker holds is never deleted from under it.

        :raises NotFound: when it is reserved now (by anyone), or gone.
        """
        self._backend.delete_job(self._peeked_here(peeked).ref)

    def pause(self, seconds: Seconds) -> None:
        """Stop handing out the queue's messages for ``seconds`` (rounded up; 0 resumes).

        Puts still go in; workers' reserves skip the queue until the pause ends.
        """
        self._backend.pause_tube(self._name, whole_seconds(seconds, "seconds"))

    def empty(self, state: str) -> int:
        """Delete every message of the queue in ``state``; return how many were deleted.

        beanstalkd has no command for it: each message is peeked and deleted.
        To empty ``"ready"``, the queue is paused meanwhile so that no worker
        races the sweep (reserved messages are not touched), then resumed (or
        left paused for what remained of a pause it was already in).

        :param state: ``"buried"``, ``"delayed"`` or ``"ready"``.
        :raises ValueError: for another state.
        """
        if state not in PEEK_STATES:
            raise ValueError(f"state must be one of {', '.join(PEEK_STATES)}, not {state!r}")
        if state == "ready":
            paused = self._backend.stats_tube(self._name).pause_left  # kept, not cut short
            try:
                self._backend.pause_tube(self._name, SWEEP_PAUSE)
            except NotFound:
                return 0  # the server has no such queue: nothing in it
        deleted = 0
        try:
            while (found := self._backend.peek(self._name, state)) is not None:
                try:
                    self._backend.delete_job(found[0])
                except NotFound:
                    continue  # it left that state meanwhile: not ours to delete
                deleted += 1
        finally:
            if state == "ready":
                self._backend.pause_tube(self._name, paused)
        return deleted

    def __repr__(self) -> str:
        return f"queue_beanstalk.Queue(name={self._name!r}, backend={self._backend!r})"

    def _peeked_here(self, peeked: Peeked) -> Peeked:
        if not isinstance(peeked, Peeked):
            raise TypeError(f"expected a Peeked, not {type(peeked).__name__}")
        if peeked.queue != self._name:
            raise NotFound(f"the message was peeked on queue {peeked.queue!r}, not {self._name!r}")
        return peeked

    def _priority_of(self, priority: int | None) -> int:
        return self._priority if priority is None else check_priority(priority)

    def _put_options(
        self, delay: Seconds, priority: int | None, ttr: Seconds | None
    ) -> tuple[int, int, int]:
        """Return a put's priority, delay and ttr, checked, with the factory's defaults."""
        return (
            self._priority_of(priority),
            whole_seconds(delay, "delay"),
            self._ttr if ttr is None else check_ttr(ttr),
        )

    def _mark_put(self, batch: list[Message], jobs: Sequence[tuple[int, str] | None]) -> None:
        for message, job in zip(batch, jobs, strict=True):
            if job is not None:
                message._id, message._server = job
                message._queue = self._name

    def _lease(self, message: Message) -> Lease:
        if not isinstance(message, Message):
            raise TypeError(f"expected a Message, not {type(message).__name__}")
        lease = message._lease
        if lease is None:
            raise NotFound("the message was not got from a queue")
        if lease.tube != self._name:
            raise NotFound(f"the message was got from queue {lease.tube!r}, not {self._name!r}")
        return lease

    def _claim(self, message: Message) -> Lease:
        """Return the message's lease, marked settled; raise if it cannot be settled here."""
        lease = self._lease(message)
        if not lease.claim():
            raise NotFound(f"message {lease.job_id} was already deleted, released or buried")
        return lease

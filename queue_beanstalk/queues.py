"""Queue: put, get, delete and release messages on one named tube (tsuru's Q)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from .backend import Backend, Lease
from .checks import MAX_UINT32, Seconds, check_priority, check_ttr, to_seconds, whole_seconds
from .codec import Codec
from .decoding import decode_reserved
from .errors import MessageTooBig, NotFound, PutManyError, QueueError
from .message import Message

__all__ = ["Queue"]

logger = logging.getLogger("queue_beanstalk")


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

    def get(self, timeout: Seconds) -> Message:
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

    def __repr__(self) -> str:
        return f"queue_beanstalk.Queue(name={self._name!r}, backend={self._backend!r})"

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

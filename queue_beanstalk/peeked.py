"""Peeked: a message looked at where it waits, without reserving it, for operators."""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend, JobRef, JobStats
from .codec import Codec
from .errors import NotFound
from .message import Message

__all__ = ["Peeked", "peek"]

# Peeks tried when each job found is gone before its stats are read.
_TRIES = 5


@dataclass(frozen=True)
class Peeked:
    """A job seen by :meth:`Queue.peek_ready` (or ``_delayed``, ``_buried``); nothing is reserved.

    It is a snapshot: a worker may take the job a moment later. Act on it with
    :meth:`Queue.kick_message` and :meth:`Queue.delete_peeked`.
    """

    #: The queue (tube) it was peeked on.
    queue: str
    #: Where it is: its id on its server.
    ref: JobRef
    #: ``"ready"``, ``"delayed"`` or ``"buried"``, as it was peeked.
    state: str
    #: The raw body, exactly as stored.
    body: bytes
    #: The message, or None when the codec cannot read the body (see :attr:`error`).
    message: Message | None
    #: Why the body cannot be decoded; None when it can.
    error: str | None
    #: The server's counters for it (age, reserves, releases, ...), read just after.
    stats: JobStats

    @property
    def id(self) -> int:
        """The job's id on its server."""
        return self.ref.id

    @property
    def server(self) -> str:
        """The server holding the job."""
        return self.ref.server


def peek(backend: Backend, codec: Codec, tube: str, state: str) -> Peeked | None:
    """Return the next job of ``tube`` in ``state``, decoded when it can be, or None.

    A body the codec cannot read is shown as it is, not raised: peeking is
    how an operator looks at a message no worker could handle.
    """
    for _ in range(_TRIES):
        found = backend.peek(tube, state)
        if found is None:
            return None
        ref, body = found
        try:
            stats = backend.stats_job(ref)
        except NotFound:
            continue  # taken or deleted meanwhile: look again
        try:
            message: Message | None = codec.decode(body)
            error = None
        except Exception as exc:  # noqa: BLE001 - any codec failure is shown, as get buries it
            message, error = None, f"{type(exc).__name__}: {exc}"
        if message is not None:
            message._id, message._server, message._queue = ref.id, ref.server, tube
        return Peeked(tube, ref, stats.state, body, message, error, stats)
    return None

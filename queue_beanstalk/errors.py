"""Exceptions raised by queue_beanstalk.

Every exception the library raises on purpose derives from :class:`QueueError`.
Where a builtin meaning fits, the class derives from that builtin too, so a
caller may catch either::

    QueueError
    ├── Timeout                 (also TimeoutError)  get() found no message in time
    ├── QueueConnectionError    (also ConnectionError) the server could not be
    │   │                       reached, the connection broke or desynchronised,
    │   │                       or every allowed connection stayed busy
    │   ├── PutOutcomeUnknown                        a put was sent and its reply never
    │   │                       came: the server may have stored it
    │   └── CommandRefused                           the server called a command malformed
    │                           (BAD_FORMAT, EXPECTED_CRLF, ...): a bug, never retried
    ├── InvalidName             (also ValueError)    a queue name the server would refuse
    ├── MessageTooBig           (also ValueError)    an encoded body over the server's limit
    ├── NotFound                (also LookupError)   delete/release of a message that is
    │                           not (or no longer) reserved by us
    ├── DecodeError             (also ValueError)    a body the codec cannot read; the job
    │                           was buried, not deleted
    ├── ServerError                                  the server refused a well-formed
    │                           command (out of memory, draining, internal error)
    ├── PutManyError                                 put_many stored some messages but
    │                           not all; says which, and why
    └── HandlerNotRunning       (also RuntimeError)  Handler.stop() when it is not running
                                (never started, stopped, or failed)

Lower-level exceptions (the wire protocol's refusals and parse errors, and
``OSError``) are translated where they arise, in the beanstalkd backend, and
chained with ``raise ... from exc``; they never escape the public API.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CommandRefused",
    "DecodeError",
    "HandlerNotRunning",
    "InvalidName",
    "MessageTooBig",
    "NotFound",
    "PutManyError",
    "PutOutcomeUnknown",
    "QueueConnectionError",
    "QueueError",
    "ServerError",
    "Timeout",
]


class QueueError(Exception):
    """Root of every exception raised by queue_beanstalk."""


class Timeout(QueueError, TimeoutError):
    """No message became available on the queue within the requested timeout."""


class QueueConnectionError(QueueError, ConnectionError):
    """The server at ``address`` could not be reached, or the connection broke.

    A connection that raised this is closed; the next operation opens a new one.
    Messages reserved on it went back to the server and will be delivered again.
    """

    def __init__(self, message: str, address: str) -> None:
        super().__init__(f"{message} (server {address})")
        #: What went wrong, without the address.
        self.reason = message
        #: The server address, as ``host:port``.
        self.address = address


class PutOutcomeUnknown(QueueConnectionError):
    """A put went out and the connection failed before its reply: it may have been stored.

    Putting the message again may store it twice; not putting it may lose it.
    """


class CommandRefused(QueueConnectionError):
    """The server called a command malformed; the connection was dropped.

    A disagreement about the protocol (``BAD_FORMAT``, ``EXPECTED_CRLF``,
    ``UNKNOWN_COMMAND``, ...) is a bug on one side: sending the same command
    again, or elsewhere, would fail the same way.
    """

    def __init__(self, message: str, address: str, reply: str) -> None:
        super().__init__(message, address)
        #: The server's status word.
        self.reply = reply


class InvalidName(QueueError, ValueError):
    """A queue name beanstalkd would refuse; raised before anything is sent."""


class MessageTooBig(QueueError, ValueError):
    """The encoded message is larger than the server accepts."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"encoded message is {size} bytes; the server accepts at most {limit} "
            "(beanstalkd's max-job-size, raised with its -z option)"
        )
        #: The size of the encoded body, in bytes.
        self.size = size
        #: The server's limit (``max-job-size``), in bytes.
        self.limit = limit


class NotFound(QueueError, LookupError):
    """The message is not reserved by us: never got, already settled, or lost.

    A reservation is lost when its time-to-run runs out or its connection
    breaks; the server then hands the message out again (at-least-once).
    """


class DecodeError(QueueError, ValueError):
    """The codec could not read a job's body; the job was buried for inspection."""

    def __init__(
        self, reason: str, job_id: int, body: bytes, queue: str, server: str | None = None
    ) -> None:
        where = "" if server is None else f" on server {server}"
        super().__init__(
            f"job {job_id} on queue {queue!r}{where} could not be decoded and was buried: {reason}"
        )
        #: The id of the buried job (``kick-job`` brings it back).
        self.job_id = job_id
        #: The server holding it (ids are per server), when known.
        self.server = server
        #: The raw body, exactly as stored on the server.
        self.body = body
        #: The queue the job came from.
        self.queue = queue


class ServerError(QueueError):
    """The server refused a command for a reason of its own (its reply is kept)."""

    def __init__(self, message: str, reply: str) -> None:
        super().__init__(f"{message}: server replied {reply}")
        #: The server's status word, e.g. ``OUT_OF_MEMORY`` or ``DRAINING``.
        self.reply = reply


class PutManyError(QueueError):
    """``put_many`` could not store every message; ``ids`` and ``errors`` say which.

    A message whose fate is unknown (the connection broke before its reply) is
    listed in ``errors`` with a :class:`QueueConnectionError`: it may have been
    stored, so putting it again may store it twice.
    """

    def __init__(
        self, jobs: Sequence[tuple[int, str] | None], errors: dict[int, QueueError]
    ) -> None:
        failed = sorted(errors)
        shown = ", ".join(f"{index}: {errors[index]}" for index in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        stored = sum(job is not None for job in jobs)
        super().__init__(
            f"{len(failed)} of {len(jobs)} messages not stored ({shown}{more}); {stored} stored"
        )
        #: Where each message was stored, in the order given, as ``(id, server)``
        #: (a :class:`~queue_beanstalk.backend.JobRef`); None where not stored.
        self.jobs = list(jobs)
        #: The job id of each message, in the order given; None where not stored.
        #: Ids are per server: :attr:`jobs` says which server holds each.
        self.ids = [None if job is None else job[0] for job in jobs]
        #: For each message not (or not surely) stored, by position: why.
        self.errors = errors


class HandlerNotRunning(QueueError, RuntimeError):
    """Handler.stop() was called on a handler that is not running (or that failed)."""

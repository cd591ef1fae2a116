"""A reserved job's message, or the job buried when its body cannot be decoded.

The codec turns bytes into a :class:`Message`; here that is done for a job
just reserved, and a job the codec cannot read is buried (kept for inspection,
at its own priority), never deleted: nothing is lost to bad input.
"""

from __future__ import annotations

import logging

from .backend import Backend, Lease, Reserved
from .codec import Codec
from .errors import DecodeError, QueueError
from .message import Message, Received

__all__ = ["decode", "decode_reserved", "priority_of"]

logger = logging.getLogger("queue_beanstalk")


def decode(codec: Codec, body: bytes) -> Message | Exception:
    """Return the message in ``body``, or the ``Exception`` the codec raised, not raised.

    What a handler's prefetching consumer does with each body as its job is
    reserved (its ``prepare``, see :meth:`Consumer.reserve_batch`), so that
    :func:`decode_reserved` need not decode the body again.
    """
    try:
        return codec.decode(body)
    except Exception as exc:  # noqa: BLE001 - returned: decode_reserved buries its job with it
        return exc


def decode_reserved(backend: Backend, codec: Codec, reserved: Reserved, priority: int) -> Received:
    """Return the message in a reserved job, or bury the job and raise DecodeError.

    An undecodable job is buried at its own priority. Any ``Exception`` from the
    codec counts as undecodable, so a bug in a codec never stops a worker. A job
    whose ``prepared`` is what :func:`decode` made of its body is not decoded again.

    :param priority: the priority to bury with when the job's own cannot be read.
    """
    decoded = reserved.prepared
    if decoded is None:  # not decoded as it was reserved (a get, or a batch without prepare)
        decoded = decode(codec, reserved.body)
    lease = reserved.lease
    if isinstance(decoded, Exception):
        lease.claim()
        # A ValueError is the codec's refusal; anything else is a bug in the codec,
        # named in the error and logged with its traceback.
        bug = not isinstance(decoded, ValueError)
        reason = f"{type(decoded).__name__}: {decoded}" if bug else str(decoded)
        error = DecodeError(reason, reserved.job_id, reserved.body, reserved.tube, lease.server)
        try:
            backend.bury(lease, priority=priority_of(backend, lease, priority))
        except Exception:
            # The job is not lost: the server hands it out again after its time-to-run.
            logger.exception("could not bury undecodable job %d", reserved.job_id)
            raise error from decoded
        logger.warning("%s (body %r)", error, reserved.body[:200], exc_info=bug)
        raise error from decoded
    # A Message, the codec's. (Not cast(): that is a call, on get()'s path.)
    message: Message = decoded  # type: ignore[assignment]
    message._id = reserved.job_id
    message._server = lease.server
    message._queue = reserved.tube
    message._lease = lease
    if type(message) is Message:  # a codec's own subclass is kept as it is
        # The same object, typed as what it now is: its id, server and queue are set.
        message.__class__ = Received
    return message  # type: ignore[return-value]


def priority_of(backend: Backend, lease: Lease, default: int) -> int:
    """Return the priority a reserved job was put with, for a release or bury to keep it.

    beanstalkd's release and bury set a priority, and its reserve does not say
    the job's: it is looked up (``stats-job``). When that fails, ``default``,
    logged: the job goes back at another priority rather than not at all.
    """
    try:
        return backend.stats_job(lease.ref).priority
    except QueueError as exc:
        logger.warning(
            "could not read job %d's priority; settling it at %d: %s", lease.job_id, default, exc
        )
        return default

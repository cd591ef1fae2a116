"""What the library logs, and the two formats the command line writes it in.

Every record goes to the ``queue_beanstalk`` logger (:data:`LOGGER_NAME`):

``DEBUG``
    a function raised :class:`~queue_beanstalk.Retry` (its message is released);
    quiet losses during a stop.
``INFO``
    the worker and handler starting and stopping; a function raised
    :class:`~queue_beanstalk.Bury`; a server draining.
``WARNING``
    a failure of a function that is not the first of its exception type on
    its queue (one line, no traceback); a body that cannot be decoded; the
    server lost and back; a message whose reservation was lost.
``ERROR``
    the first failure of each exception type on each queue, with its
    traceback; every message given up on (buried after its last attempt);
    an error in the library's own code.
``CRITICAL``
    a worker thread ended on an error it could not survive.

A log line names a message by its job id, queue, action (at most
:data:`ACTION_CAP` characters) and number of arguments, never by the
arguments' values, which may hold personal data; an exception's text is cut at
:data:`REASON_CAP` characters in a one-line report. Logging is configured by
:func:`configure`, which the command line's ``main()`` calls; importing the
library configures nothing.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import TextIO

from .message import Message

__all__ = [
    "ACTION_CAP",
    "FORMATS",
    "LEVELS",
    "LOGGER_NAME",
    "REASON_CAP",
    "FailureLog",
    "JsonFormatter",
    "TextFormatter",
    "configure",
    "describe",
    "reason",
]

#: The name of the logger everything in the library logs to.
LOGGER_NAME = "queue_beanstalk"
#: The levels ``--log-level`` accepts.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The formats ``--log-format`` accepts.
FORMATS = ("text", "json")
#: Characters of a message's action a log line shows at most.
ACTION_CAP = 100
#: Characters of an exception's text a one-line report shows at most.
REASON_CAP = 500

logger = logging.getLogger(LOGGER_NAME)


def describe(message: Message) -> str:
    """Return how a log line names ``message``: job, queue, action and number of arguments.

    The arguments' values are left out: they may hold personal data.
    """
    action = message.action
    shown = repr(action)
    if len(action) > ACTION_CAP:
        shown = f"{action[:ACTION_CAP]!r}... ({len(action)} characters)"
    count = len(message.args)
    return (
        f"job {message.id} (queue {message.queue!r}, action {shown}, "
        f"{count} arg{'' if count == 1 else 's'})"
    )


def reason(error: BaseException) -> str:
    """Return ``error`` as ``Type: text`` on one line, its text cut at :data:`REASON_CAP`."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the report
        text = "(its text cannot be had)"
    if len(text) > REASON_CAP:
        text = f"{text[:REASON_CAP]}... ({len(text)} characters)"
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class FailureLog:
    """Reports a handler function's failures, one record each; thread-safe.

    The first failure of each exception type on each queue is logged at ERROR
    with its traceback; later ones in one line, at WARNING, or at ERROR when
    the message is given up on. So a flood of one failure costs one
    traceback, and a new kind of failure still shows its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[type[BaseException], str | None]] = set()

    def failed(
        self,
        message: Message,
        error: BaseException,
        attempt: int | None,
        max_attempts: int,
        *,
        buried: bool,
        delay: int,
    ) -> None:
        """Log that the function failed on ``message``, and what becomes of it.

        :param attempt: how many times the message has been tried, this one
            included; None when the server could not say.
        :param buried: whether it is given up on; else it is released with ``delay``.
        """
        key = (type(error), message.queue)
        with self._lock:
            first = key not in self._seen
            self._seen.add(key)
        then = "giving up, buried" if buried else f"retrying in {delay}s"
        logger.log(
            logging.ERROR if first or buried else logging.WARNING,
            "handler function failed on %s, attempt %s of %d: %s; %s",
            describe(message),
            "?" if attempt is None else attempt,
            max_attempts,
            reason(error),
            then,
            exc_info=error if first else None,
        )


class TextFormatter(logging.Formatter):
    """``2026-11-30 07:20:01.123 pid=1234 INFO queue_beanstalk: message``, in local time."""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers.

    Keys: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``pid``, ``thread`` (its name), ``message``, and ``exc_info`` (the
    traceback, as text) and ``stack_info`` when the record has them.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one line of JSON."""
        created = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        fields: dict[str, object] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(fields)


def configure(level: str = "INFO", log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send every logger's records at ``level`` and above to ``stream`` (stderr), formatted.

    As :func:`logging.basicConfig`, which it calls: nothing is done when the
    root logger already has a handler.

    :param level: one of :data:`LEVELS`.
    :param log_format: one of :data:`FORMATS`.
    """
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler])

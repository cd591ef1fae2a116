"""The worker command: run a handler for a function until SIGTERM or SIGINT.

``queue-beanstalk worker package.module:function --queue NAME ...`` imports the
function (the current directory first on the import path, as with ``python
-m``), and runs a handler, waiting for the server if it is not up yet. The first SIGTERM
or SIGINT stops it gracefully: no new message is taken, callbacks in flight
finish and their messages are settled, and the process exits 0. A second
signal exits at once: the connections are closed, so the server hands the
messages still held out again. Should the handler fail (a worker ended on an
error it could not survive), the command stops the other workers the same way
and exits non-zero, so that a supervisor restarts it.

Signal handlers only record the signal; the main thread does the rest.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

from .checks import check_handler_function
from .errors import HandlerNotRunning, QueueConnectionError
from .message import Message
from .queue_factory import QueueFactory

__all__ = ["TargetError", "import_path", "resolve", "run"]

logger = logging.getLogger("queue_beanstalk")

# Seconds between looks at the signal count: how long a signal may wait to be acted on.
POLL = 0.1


class TargetError(Exception):
    """The function to run cannot be had; ``not_callable`` tells which way it failed."""

    def __init__(self, message: str, *, not_callable: bool = False) -> None:
        super().__init__(message)
        self.not_callable = not_callable


def import_path(directories: Sequence[str]) -> None:
    """Put ``directories``, then the current directory, first on the import path.

    As ``python -m`` does for the current directory: a worker run where its
    module lives finds it.
    """
    for directory in reversed([*directories, os.getcwd()]):
        path = os.path.abspath(directory)
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)


def resolve(target: str) -> Callable[[Message], object]:
    """Import ``package.module:function`` (the function may be dotted: ``mod:Class.method``).

    :raises TargetError: when the module cannot be imported, the name is not in
        it, or what it names is not callable or is an ``async def`` function.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep and "." in target.strip("."):
        module_part, _, name = target.rpartition(".")
        raise TargetError(
            f"expected package.module:function, not {target!r}: "
            f"did you mean '{module_part}:{name}'?"
        )
    if not sep or not module_name or not attribute:
        raise TargetError(f"expected package.module:function, not {target!r}")
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:  # any failure to import is reported as such
        raise TargetError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise TargetError(f"{module_name!r} has no attribute {attribute!r}") from None
    if not callable(found):
        kind = type(found).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise TargetError(f"{target!r} is not callable: it is {article} {kind}", not_callable=True)
    try:
        check_handler_function(found)
    except TypeError as exc:
        raise TargetError(f"{target!r}: {exc}", not_callable=True) from None
    return found


class _Signals:
    """Counts SIGTERM and SIGINT.

    The handler only counts: taking a lock there (even an Event's) could
    deadlock with the main thread it interrupted.
    """

    def __init__(self) -> None:
        self.received = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self)
        signal.signal(signal.SIGINT, self)


def run(
    queues: QueueFactory,
    func: Callable[[Message], object],
    names: Sequence[str],
    *,
    concurrency: int,
    max_attempts: int,
    forced_exit: int,
    failed_exit: int,
) -> int:
    """Run a handler until signalled; return 0 after a graceful stop.

    A second signal ends the process at once with ``forced_exit``. When the
    handler fails, its workers are let finish and ``failed_exit`` is returned.

    A server that does not answer at start is waited for (the handler's
    workers try again with backoff), as when it goes away later: a worker
    started before its server, by a supervisor, does not exit.
    """
    handler = queues.handler(func, *names, concurrency=concurrency, max_attempts=max_attempts)
    signals = _Signals()
    signals.install()
    try:
        queues.backend.max_job_size()  # one round trip: say now if the server is not there
    except QueueConnectionError as exc:
        logger.warning("cannot reach the queue server yet (%s); waiting for it", exc)
    handler.start()
    logger.info("worker running (pid %d); SIGTERM or Ctrl-C stops it", os.getpid())
    while signals.received == 0 and handler.running:
        time.sleep(POLL)  # a signal cuts the sleep short only to run the handler
    try:
        handler.stop()
        logger.info("stopping: waiting for callbacks in flight; a second signal exits at once")
    except HandlerNotRunning:  # it failed, and is stopping by itself
        logger.error(
            "the handler failed (%r); stopping so that a supervisor can restart the worker",
            handler.failure,
        )
    while not handler.wait(POLL):
        if signals.received > 1:
            logger.warning("second signal: exiting now; messages in flight go back to the server")
            queues.close()
            logging.shutdown()
            sys.stderr.flush()
            os._exit(forced_exit)
    queues.close()
    if handler.failure is not None:
        logger.error("worker stopped after a failure")
        return failed_exit
    logger.info("worker stopped")
    return 0

"""The worker command: run a handler for a function until SIGTERM or SIGINT.

``queue-beanstalk worker package.module:function --queue NAME ...`` imports the
function (the current directory first on the import path, as with ``python
-m``), and runs a handler, waiting for the server if it is not up yet. The first SIGTERM
or SIGINT stops it gracefully: no new message is taken, callbacks in flight
finish and their messages are settled, and the process exits 0. A second
signal exits at once: the connections are closed, so the server hands the
messages still held out again. Should the handler fail (a worker ended on an
error it could not survive), the command stops the other workers the same way
and exits non-zero, so that a supervisor restarts it. With ``--burst`` the
handler stops by itself once no message is ready and none is in flight, and
the command exits 0.

With ``--metrics-port PORT`` the process serves Prometheus text at
``http://127.0.0.1:PORT/metrics`` (:mod:`queue_beanstalk.metrics`; ``--metrics-host``
for another address) while the handler runs; it is listened on before any
message is taken, so a port in use, or ``prometheus_client`` missing, stops the
command before it starts (:class:`MetricsError`).

With ``--processes N`` the command is that supervisor for N worker processes
(:func:`supervise`): each runs the same command line in a session of its own,
so that a terminal's Ctrl-C reaches only the parent, which passes each signal
on as SIGTERM and exits once they all have. A worker process that ends
otherwise than by exiting 0 is restarted, the sooner the longer it ran
(:func:`restart_delay`); one that cannot import its function stops them all.

Signal handlers only record the signal; the main thread does the rest.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from types import FrameType
from typing import NoReturn

from . import metrics as metrics_module
from .checks import check_handler_function
from .errors import HandlerNotRunning, QueueConnectionError
from .handler import Handler
from .message import Received
from .queue_factory import QueueFactory
from .retries import RetryDelay, exponential_backoff

__all__ = [
    "MetricsError",
    "TargetError",
    "import_path",
    "resolve",
    "restart_delay",
    "run",
    "supervise",
]

logger = logging.getLogger("queue_beanstalk")

# Seconds between looks at the signal count: how long a signal may wait to be acted on.
POLL = 0.1
#: Set by :func:`supervise` for its worker processes: its own pid, which each watches.
SUPERVISOR_VARIABLE = "QUEUE_BEANSTALK_SUPERVISOR_PID"
# Seconds before a dead worker process is restarted: from the first, doubled each
# time one dies young, up to the most; one that lived RESTART_RESET seconds
# starts from the first again.
RESTART_FIRST = 0.5
RESTART_MOST = 30.0
RESTART_RESET = 60.0


class TargetError(Exception):
    """The function to run cannot be had; ``not_callable`` tells which way it failed."""

    def __init__(self, message: str, *, not_callable: bool = False) -> None:
        super().__init__(message)
        self.not_callable = not_callable


class MetricsError(Exception):
    """The metrics cannot be served: no ``prometheus_client``, or an address not to be had."""


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


def resolve(target: str) -> Callable[[Received], object]:
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
    func: Callable[[Received], object],
    names: Sequence[str],
    *,
    concurrency: int,
    prefetch: int = 1,
    max_attempts: int,
    retry_delay: RetryDelay | None,
    burst: bool,
    forced_exit: int,
    failed_exit: int,
    metrics: tuple[str, int] | None = None,
    time_limit: float | None = None,
    stop_timeout: float | None = None,
    stop_timeout_exit: int = 1,
) -> int:
    """Run a handler until signalled; return 0 after a graceful stop.

    A second signal ends the process at once with ``forced_exit``. When the
    handler fails, its workers are let finish and ``failed_exit`` is returned.
    With ``burst``, the handler also stops by itself once no message is ready
    and none is in flight, and 0 is returned.

    :param retry_delay: as :meth:`QueueFactory.handler`'s; None for its default.
    :param time_limit: as :meth:`QueueFactory.handler`'s.
    :param prefetch: as :meth:`QueueFactory.handler`'s.
    :param stop_timeout: seconds a graceful stop waits for the callbacks in
        flight; then the process exits at once with ``stop_timeout_exit``, its
        connections closed so that the server hands their messages out again.
        None waits as long as they run.
    :param metrics: ``(host, port)`` to serve the metrics on while the handler
        runs; None serves none.
    :raises MetricsError: when they cannot be served; nothing was started.

    A server that does not answer at start is waited for (the handler's
    workers try again with backoff), as when it goes away later: a worker
    started before its server, by a supervisor, does not exit.
    """
    handler = queues.handler(
        func,
        *names,
        concurrency=concurrency,
        prefetch=prefetch,
        max_attempts=max_attempts,
        retry_delay=exponential_backoff if retry_delay is None else retry_delay,
        burst=burst,
        time_limit=time_limit,
    )
    endpoint = None if metrics is None else _serve_metrics(queues, handler, *metrics)
    signals = _Signals()
    signals.install()
    try:
        queues.backend.max_job_size()  # one round trip: say now if the server is not there
    except QueueConnectionError as exc:
        logger.warning("cannot reach the queue server yet (%s); waiting for it", exc)
    handler.start()
    logger.info("worker running (pid %d); SIGTERM or Ctrl-C stops it", os.getpid())
    supervisor = _supervisor()
    while signals.received == 0 and handler.running:
        time.sleep(POLL)  # a signal cuts the sleep short only to run the handler
        if supervisor is not None and os.getppid() != supervisor:
            logger.warning(
                "the supervising worker process (pid %d) is gone; stopping as on SIGTERM",
                supervisor,
            )
            break
    try:
        handler.stop()
        logger.info("stopping: waiting for callbacks in flight; a second signal exits at once")
    except HandlerNotRunning:  # it failed, or (burst) found nothing more to do
        if handler.failure is not None:
            logger.error(
                "the handler failed (%r); stopping so that a supervisor can restart the worker",
                handler.failure,
            )
    stopped_at = time.monotonic()
    while not handler.wait(POLL):
        if signals.received > 1:
            logger.warning("second signal: exiting now; messages in flight go back to the server")
            _exit_now(queues, forced_exit)
        if stop_timeout is not None and time.monotonic() - stopped_at >= stop_timeout:
            logger.error(
                "callbacks still running %gs after the stop (--stop-timeout): exiting now; "
                "their messages go back to the server",
                stop_timeout,
            )
            _exit_now(queues, stop_timeout_exit)
    if endpoint is not None:
        endpoint.close()
    queues.close()
    if handler.failure is not None:
        logger.error("worker stopped after a failure")
        return failed_exit
    logger.info("worker stopped")
    return 0


def _supervisor() -> int | None:
    """Return the pid of the :func:`supervise` process that started this one, if one did.

    A worker process watches it: should it die without passing on a signal
    (SIGKILL), its worker processes, in sessions of their own, would run on
    unsupervised; they stop instead, as on SIGTERM.
    """
    value = os.environ.pop(SUPERVISOR_VARIABLE, None)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def _exit_now(queues: QueueFactory, code: int) -> NoReturn:
    """End the process at once, callbacks in flight or not, its connections closed first."""
    queues.close()
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


def _serve_metrics(
    queues: QueueFactory, handler: Handler, host: str, port: int
) -> metrics_module.MetricsServer:
    """Serve the handler's metrics on ``host:port``; raise MetricsError if they cannot be."""
    try:
        endpoint = metrics_module.serve(queues, handler, port, host)
    except metrics_module.MetricsUnavailable as exc:
        raise MetricsError(str(exc)) from exc
    except OSError as exc:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise MetricsError(f"cannot serve the metrics on {address}: {exc.strerror or exc}") from exc
    logger.info("metrics at %s", endpoint.url)
    return endpoint


def restart_delay(previous: float, lived: float) -> float:
    """Return seconds to wait before restarting a worker process that died.

    :param previous: the delay before its last start; 0 for none.
    :param lived: seconds it ran. One that died young waits twice as long as
        last time, at most RESTART_MOST, so that one crashing at start does
        not spin; one that ran RESTART_RESET seconds waits RESTART_FIRST.
    """
    if previous <= 0 or lived >= RESTART_RESET:
        return RESTART_FIRST
    return min(RESTART_MOST, previous * 2)


class _Child:
    """One worker process of :func:`supervise`, in a session of its own."""

    def __init__(self, number: int, command: Sequence[str]) -> None:
        self.number = number
        self._command = command
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._delay = 0.0
        #: When to start it (again); None while it runs, or once it has ended for good.
        self.due: float | None = time.monotonic()
        #: Its exit status once it has ended for good.
        self.status: int | None = None

    def start(self) -> None:
        """Start the process now; a failure to is logged, and tried again later."""
        self._started = time.monotonic()
        try:
            # The command is this program's own command line, run again.
            self._process = subprocess.Popen(  # noqa: S603
                self._command,
                start_new_session=True,
                env={**os.environ, SUPERVISOR_VARIABLE: str(os.getpid())},
            )
        except OSError as exc:
            self._delay = restart_delay(self._delay, 0)
            self.due = time.monotonic() + self._delay
            logger.error(
                "worker process %d could not be started (%s); trying again in %gs",
                self.number,
                exc,
                self._delay,
            )
            return
        self.due = None
        logger.info("worker process %d started: pid %d", self.number, self._process.pid)

    def terminate(self) -> None:
        """Send the process SIGTERM if it runs."""
        if self._process is not None and self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)

    def ended(self) -> tuple[int, int] | None:
        """Return the process's pid and exit status once it has ended (once), else None."""
        if self._process is None or self._process.poll() is None:
            return None
        ended, self._process = self._process, None
        return ended.pid, ended.returncode

    def restart_later(self, pid: int, status: int) -> None:
        """Log how the process ended, and have it started again after a delay."""
        self._delay = restart_delay(self._delay, time.monotonic() - self._started)
        self.due = time.monotonic() + self._delay
        logger.error(
            "worker process %d (pid %d) %s; restarting it in %gs",
            self.number,
            pid,
            _how(status),
            self._delay,
        )


def _how(status: int) -> str:
    """Return how a process with exit status ``status`` (Popen's returncode) ended."""
    if status < 0:
        return f"was killed by {signal.Signals(-status).name}"
    return f"exited with status {status}"


def supervise(
    command: Callable[[int], Sequence[str]],
    processes: int,
    *,
    fatal_exits: Collection[int],
    forced_exit: int,
    failed_exit: int,
) -> int:
    """Run ``processes`` worker processes, number k ``command(k)``, until SIGTERM or SIGINT.

    The first signal is passed on to each as SIGTERM (a graceful stop), and
    all are waited for; a second one is passed on the same way, which makes
    them exit at once. A process that exits 0 by itself (``--burst``) is done;
    one that exits with a status in ``fatal_exits`` (its function cannot be
    imported: a restart would fail the same way) stops the others, and its
    status is returned; any other end is logged and the process restarted
    after :func:`restart_delay`.

    :returns: 0 once every process has exited 0 (after a signal, or by
        itself); ``forced_exit`` after a second signal; ``failed_exit`` when a
        process ended otherwise while they were being stopped.
    """
    signals = _Signals()
    signals.install()
    children = [_Child(number, command(number)) for number in range(1, processes + 1)]
    logger.info(
        "worker: running %d worker processes (pid %d); SIGTERM or Ctrl-C stops them",
        processes,
        os.getpid(),
    )
    passed_on = 0
    fatal: int | None = None
    while not all(child.status is not None for child in children):
        if signals.received > passed_on:
            # One a round: two sent at once could reach a child as one.
            passed_on += 1
            if passed_on == 1:
                logger.info("stopping the worker processes; a second signal stops them at once")
            for child in children:
                child.terminate()
        for child in children:
            stopping = passed_on > 0 or fatal is not None
            if child.status is not None:
                continue
            ended = child.ended()
            if ended is None:
                if child.due is not None and stopping:
                    child.status = 0  # its restart is called off: nothing was running
                elif child.due is not None and child.due <= time.monotonic():
                    child.start()
                continue
            pid, status = ended
            if status in fatal_exits:
                logger.error(
                    "worker process %d (pid %d) cannot run (status %d); stopping the others",
                    child.number,
                    pid,
                    status,
                )
                fatal = status if fatal is None else fatal
                for other in children:
                    other.terminate()
            elif status == 0 or (stopping and status == -signal.SIGTERM):
                # Killed by the SIGTERM passed on before it could catch one: it
                # had started no handler, so nothing was cut short.
                status = 0
                logger.info("worker process %d (pid %d) exited 0", child.number, pid)
            elif stopping:
                logger.error(
                    "worker process %d (pid %d) %s as it was stopping",
                    child.number,
                    pid,
                    _how(status),
                )
            else:
                child.restart_later(pid, status)
                continue
            child.status = status
        time.sleep(POLL)
    if fatal is not None:
        return fatal
    if passed_on > 1:
        return forced_exit
    if any(child.status != 0 for child in children):
        logger.error("worker processes stopped; some did not stop gracefully")
        return failed_exit
    logger.info("worker processes stopped")
    return 0

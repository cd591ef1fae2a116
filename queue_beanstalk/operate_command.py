"""The commands that operate the queues: stats, peek, kick, delete, put, pause and empty.

Each function runs one ``queue-beanstalk`` command (registered, and its command
line checked, in :mod:`queue_beanstalk.cli`) through the Python API of
:class:`~queue_beanstalk.Queue`, and returns its exit code. Like the worker,
they take ``--url``, else ``$QUEUE_BEANSTALK_URL``, else the default server.

A job is named ``ID`` or ``ID@host:port``: ids are per server, so with several
servers a plain ``ID`` is taken only when exactly one server holds a job of that
id on that queue. A command never acts on a job of another queue, and never
deletes a job someone has reserved.

Output is for people (a table, ``name: value`` lines) unless ``--json`` is
given; a refusal is one line on stderr.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import NamedTuple

from .backend import Backend, JobRef, JobStats, TubeStats
from .backends.beanstalk import DEFAULT_PORT, BeanstalkBackend
from .backends.memory import MemoryBackend
from .backends.servers import ServersBackend
from .checks import MAX_UINT32, check_priority, check_ttr, positive_seconds, whole_seconds
from .cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE, PROG, resolve_url
from .errors import NotFound
from .message import Message
from .peeked import Peeked
from .queue_factory import QueueFactory, factory

__all__ = [
    "JobId",
    "action",
    "delete",
    "empty",
    "interval",
    "job_id",
    "kick",
    "pause",
    "peek",
    "priority",
    "put",
    "stats",
    "ttr",
]

# The columns of the stats table, after the queue's name.
COLUMNS = ("ready", "delayed", "reserved", "buried", "urgent", "waiting", "paused")
# Bytes of an undecodable body that peek shows; --json gives it whole.
BODY_SHOWN = 1000
# Clears a terminal and puts the cursor at its top left, for stats --watch.
CLEAR = "\x1b[H\x1b[2J"


class JobId(NamedTuple):
    """A job as named on the command line: its id, and its server when given."""

    id: int
    server: str | None


class _Refused(Exception):
    """The command cannot go on: ``str(exc)`` says why, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


Operation = Callable[[argparse.Namespace, QueueFactory], int]


def _operating(operation: Operation) -> Callable[[argparse.Namespace], int]:
    """Make a command of ``operation``: open the queues, run it, report a refusal.

    Queue errors are left to :func:`queue_beanstalk.cli.main`, which reports
    them the same way for every command.
    """

    @functools.wraps(operation)
    def command(args: argparse.Namespace) -> int:
        try:
            try:
                url = resolve_url(args.url)
            except ValueError as exc:
                raise _Refused(str(exc), EXIT_USAGE) from None
            with factory(url) as queues:
                return operation(args, queues)
        except _Refused as refused:
            _error(str(refused))
            return refused.code

    return command


# The commands


@_operating
def stats(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``stats [QUEUE...] [--json] [--watch SECONDS]``: every queue's counts, or the named ones'.

    With ``--watch`` the figures are shown again every ``SECONDS`` until
    Ctrl-C, which exits 0; with ``--json``, one JSON object a line.
    """
    if args.watch is None:
        _show_stats(queues, args.queues, as_json=args.json, indent=2)
        return EXIT_OK
    clear = not args.json and sys.stdout.isatty()
    due = time.monotonic()
    try:
        while True:
            if not args.json:
                _say(f"{CLEAR if clear else ''}{_now()} (every {args.watch:g} s; Ctrl-C stops)")
            _show_stats(queues, args.queues, as_json=args.json, indent=None)
            if not args.json:
                _say("")
            sys.stdout.flush()
            due += args.watch
            time.sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        return EXIT_OK


@_operating
def peek(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``peek QUEUE [--ready|--delayed|--buried] [--json]``: the next message in that state.

    Nothing is reserved. When there is none, a line says so (``null`` with
    ``--json``) and the exit code is still 0: an empty state is no error.
    """
    queue = queues.get(args.queue)
    peeked = {
        "ready": queue.peek_ready,
        "delayed": queue.peek_delayed,
        "buried": queue.peek_buried,
    }[args.state]()
    several = len(_addresses(queues.backend) or ()) > 1
    if args.json:
        _say(json.dumps(None if peeked is None else _peeked_json(peeked), indent=2))
    elif peeked is None:
        _say(f"no {args.state} message on queue {args.queue}")
    else:
        lines = _peeked_lines(peeked, several)
        width = max(len(name) for name, _ in lines) + 2
        for name, value in lines:
            _say(f"{name + ':':<{width}}{value}")
    return EXIT_OK


@_operating
def kick(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``kick QUEUE [N]`` or ``kick QUEUE --id ID``: buried (else delayed) messages to ready."""
    queue = queues.get(args.queue)
    if args.id is None:
        kicked = queue.kick(args.count or 1)
        _say(f"kicked {_messages(kicked)} of queue {queue.name}")
        return EXIT_OK
    job = _locate(queues.backend, queue.name, args.id)
    try:
        queues.backend.kick_job(_ref(job))
    except NotFound:
        raise _Refused(
            f"message {_job_name(queues.backend, job)} of queue {queue.name} is {job.state}, "
            "not buried or delayed: nothing to kick"
        ) from None
    _say(f"kicked message {_job_name(queues.backend, job)} of queue {queue.name}")
    return EXIT_OK


@_operating
def delete(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``delete QUEUE ID``: delete a ready, delayed or buried message for good.

    A reserved message is refused: the worker holding it settles it.
    """
    job = _locate(queues.backend, args.queue, args.id)
    queues.backend.delete_job(_ref(job))  # NotFound "reserved" when someone holds it
    _say(f"deleted message {_job_name(queues.backend, job)} of queue {args.queue}")
    return EXIT_OK


@_operating
def put(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``put QUEUE ACTION [ARGS...] [--delay S] [--priority P] [--ttr S]``: print the new id.

    The id is ``ID@host:port`` when there are several servers, so that it can
    be given back to the other commands as it is.
    """
    message = Message(args.action, args.args)
    job = queues.get(args.queue).put(message, args.delay, priority=args.priority, ttr=args.ttr)
    _say(_name_of(queues.backend, JobRef(job, str(message.server))))
    return EXIT_OK


@_operating
def pause(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``pause QUEUE SECONDS``: hand out none of the queue's messages for a while; 0 resumes."""
    queue = queues.get(args.queue)
    seconds = whole_seconds(args.seconds, "seconds")
    queue.pause(seconds)
    if seconds:
        _say(f"paused queue {queue.name} for {seconds} s")
    else:
        _say(f"resumed queue {queue.name}")
    return EXIT_OK


@_operating
def empty(args: argparse.Namespace, queues: QueueFactory) -> int:
    """``empty QUEUE --buried|--delayed|--ready [--yes]``: delete every message in that state.

    Without ``--yes`` it asks on a terminal, and refuses (exit 2) when stdin is
    not one; declining exits 1, nothing deleted.
    """
    if not args.yes and not sys.stdin.isatty():
        raise _Refused(
            f"empty deletes messages for good: pass --yes to empty {args.queue} "
            "when stdin is not a terminal",
            EXIT_USAGE,
        )
    queue = queues.get(args.queue)
    if not args.yes:
        count = getattr(queue.stats(), args.state)
        if count == 0:
            _say(f"no {args.state} message on queue {queue.name}")
            return EXIT_OK
        sys.stderr.write(f"delete {_messages(count, args.state)} of {queue.name}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise _Refused(f"nothing deleted from {queue.name}")
    deleted = queue.empty(args.state)
    _say(f"deleted {_messages(deleted, args.state)} of queue {queue.name}")
    return EXIT_OK


# Argument types, for the parser


def job_id(value: str) -> JobId:
    """Return ``ID`` or ``ID@host[:port]`` as a JobId (a port of 11300 when none is given)."""
    number, at, server = value.partition("@")
    if at and not server:
        raise argparse.ArgumentTypeError(f"expected ID or ID@host:port, not {value!r}")
    try:
        found = int(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a job id, ID or ID@host:port, not {value!r}"
        ) from None
    if found < 1:
        raise argparse.ArgumentTypeError(f"a job id is at least 1, not {found}")
    return JobId(found, server or None)


def action(value: str) -> str:
    """Return ``value`` if it can be a message's action (not empty)."""
    if not value:
        raise argparse.ArgumentTypeError("the action must not be empty")
    return value


def priority(value: str) -> int:
    """Return ``value`` as a priority, 0 (most urgent) to ``2**32 - 1``."""
    try:
        return check_priority(int(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a priority, a whole number from 0 (most urgent) to {MAX_UINT32}, "
            f"not {value!r}"
        ) from None


def ttr(value: str) -> int:
    """Return ``value`` as a time-to-run in whole seconds, rounded up; at least 1."""
    try:
        return check_ttr(float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds to run, more than 0 and at most {MAX_UINT32}, not {value!r}"
        ) from None


def interval(value: str) -> float:
    """Return ``value`` as seconds between two looks, more than 0."""
    try:
        return positive_seconds(float(value), "the interval")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, more than 0, not {value!r}") from None


# Finding a job


def _locate(backend: Backend, queue: str, job: JobId) -> JobStats:
    """Return the stats of the job ``job`` names on ``queue``, or refuse.

    A plain id is looked up on every server; a server that cannot be asked
    raises QueueConnectionError rather than leave the choice in doubt.
    """
    if job.server is not None:
        servers = [_server_named(backend, job.server)]
    else:
        known = _addresses(backend)
        if known is None:
            raise _Refused(f"name the server of job {job.id}: ID@host:port")
        servers = known
    found: list[JobStats] = []
    elsewhere: list[JobStats] = []
    for server in servers:
        try:
            stats = backend.stats_job(JobRef(job.id, server))
        except NotFound:
            continue
        (found if stats.tube == queue else elsewhere).append(stats)
    if len(found) == 1:
        return found[0]
    if found:
        where = ", ".join(one.server for one in found)
        raise _Refused(
            f"job {job.id} of queue {queue} is on several servers ({where}): "
            f"say which with ID@server, e.g. {job.id}@{found[0].server}"
        )
    if elsewhere:
        other = elsewhere[0]
        raise _Refused(
            f"job {_name_of(backend, _ref(other))} is on queue {other.tube}, not {queue}"
        )
    on = "" if job.server is None else f" on server {servers[0]}"
    raise _Refused(f"no job {job.id} on queue {queue}{on}")


def _addresses(backend: Backend) -> list[str] | None:
    """Return the servers of ``backend`` as a JobRef names them; None when it cannot tell."""
    if isinstance(backend, ServersBackend):
        return backend.addresses
    if isinstance(backend, BeanstalkBackend):
        return [backend.address]
    if isinstance(backend, MemoryBackend):
        return [backend.server]
    return None


def _server_named(backend: Backend, server: str) -> str:
    """Return the server of ``backend`` that ``server`` (``host[:port]``) names, or refuse."""
    known = _addresses(backend)
    if known is None or server in known:
        return server
    with_port = f"{server}:{DEFAULT_PORT}"
    if with_port in known:
        return with_port
    raise _Refused(f"no server {server} among {', '.join(known)}")


def _ref(job: JobStats) -> JobRef:
    return JobRef(job.id, job.server)


def _name_of(backend: Backend, ref: JobRef) -> str:
    """Return ``ID``, or ``ID@server`` when ``backend`` has several servers."""
    return f"{ref.id}@{ref.server}" if len(_addresses(backend) or ()) > 1 else str(ref.id)


def _job_name(backend: Backend, job: JobStats) -> str:
    return _name_of(backend, _ref(job))


# Output


def _show_stats(
    queues: QueueFactory, names: list[str], *, as_json: bool, indent: int | None
) -> None:
    figures = {name: queues.get(name).stats() for name in (names or queues.queues())}
    servers = _addresses(queues.backend)
    if as_json:
        _say(json.dumps(_stats_json(figures, servers), indent=indent))
        return
    _say(_table(figures))
    for address in _unreachable(figures, servers):
        sys.stderr.write(
            f"{PROG}: warning: server {address} did not answer: its figures are left out\n"
        )


def _stats_json(figures: dict[str, TubeStats], servers: list[str] | None) -> dict[str, object]:
    found: dict[str, object] = {
        "queues": {name: _tube_json(one) for name, one in figures.items()},
        "time": _now(),
    }
    if servers is not None:
        found["servers"] = servers
        found["unreachable"] = _unreachable(figures, servers)
    return found


def _tube_json(stats: TubeStats) -> dict[str, object]:
    found: dict[str, object] = {
        "ready": stats.ready,
        "delayed": stats.delayed,
        "reserved": stats.reserved,
        "buried": stats.buried,
        "urgent": stats.urgent,
        "waiting": stats.waiting,
        "watching": stats.watching,
        "total": stats.total,
        "paused": stats.paused,
        "pause_left": stats.pause_left,
    }
    if stats.servers:
        found["servers"] = {address: _tube_json(one) for address, one in stats.servers.items()}
    return found


def _unreachable(figures: dict[str, TubeStats], servers: list[str] | None) -> list[str]:
    """Return the servers none of ``figures`` came from, when there are several."""
    if servers is None or len(servers) < 2 or not figures:
        return []
    answered = {address for one in figures.values() for address in one.servers}
    return [address for address in servers if address not in answered]


def _table(figures: dict[str, TubeStats]) -> str:
    rows = [["queue", *COLUMNS]]
    for name, one in figures.items():
        counts = [one.ready, one.delayed, one.reserved, one.buried, one.urgent, one.waiting]
        paused = f"{one.pause_left}s" if one.paused else "-"
        rows.append([name, *(str(count) for count in counts), paused])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        ).rstrip()
        for row in rows
    )


def _peeked_lines(peeked: Peeked, several: bool) -> list[tuple[str, str]]:
    stats = peeked.stats
    ident = f"{peeked.id}@{peeked.server}" if several else str(peeked.id)
    lines = [("queue", peeked.queue), ("id", ident), ("server", peeked.server)]
    lines.append(("state", peeked.state))
    if peeked.message is not None:
        lines.append(("action", peeked.message.action))
        lines.append(("args", json.dumps(list(peeked.message.args))))
    else:
        lines.append(("undecodable", peeked.error or ""))
        shown = repr(peeked.body[:BODY_SHOWN])
        if len(peeked.body) > BODY_SHOWN:
            shown += f" ... ({len(peeked.body)} bytes in all; --json gives it whole)"
        lines.append(("body", shown))
    lines.append(("priority", str(stats.priority)))
    lines.append(("age", f"{stats.age} s"))
    if peeked.state == "delayed":
        lines.append(("ready in", f"{stats.time_left} s"))
    lines.append(("ttr", f"{stats.ttr} s"))
    for counter in ("reserves", "timeouts", "releases", "buries", "kicks"):
        lines.append((counter, str(getattr(stats, counter))))
    return lines


def _peeked_json(peeked: Peeked) -> dict[str, object]:
    stats = peeked.stats
    found: dict[str, object] = {
        "queue": peeked.queue,
        "id": peeked.id,
        "server": peeked.server,
        "state": peeked.state,
        "action": None if peeked.message is None else peeked.message.action,
        "args": None if peeked.message is None else list(peeked.message.args),
        "error": peeked.error,
        "priority": stats.priority,
        "age": stats.age,
        "time_left": stats.time_left,
        "ttr": stats.ttr,
        "reserves": stats.reserves,
        "timeouts": stats.timeouts,
        "releases": stats.releases,
        "buries": stats.buries,
        "kicks": stats.kicks,
    }
    if peeked.message is None:
        found["body_base64"] = base64.b64encode(peeked.body).decode("ascii")
    return found


def _messages(count: int, state: str = "") -> str:
    """Return e.g. ``"1 message"``, ``"3 buried messages"``."""
    words = f"{state} message" if state else "message"
    return f"{count} {words}{'' if count == 1 else 's'}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _say(line: str, end: str = "\n") -> None:
    sys.stdout.write(line + end)


def _error(line: str) -> None:
    sys.stderr.write(f"{PROG}: error: {line}\n")

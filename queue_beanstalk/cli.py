"""The ``queue-beanstalk`` command line (also ``python -m queue_beanstalk``).

Usage: ``queue-beanstalk [--version] COMMAND ...``, where COMMAND is

``worker package.module:function --queue NAME [--queue NAME ...] [--url URL] [--concurrency N]
[--prefetch N] [--max-attempts N] [--retry-delay SECONDS] [--time-limit SECONDS]
[--stop-timeout SECONDS] [--burst] [--processes N] [--path DIR ...]
[--metrics-port PORT [--metrics-host HOST]]``
    call the function for every message on the queues until SIGTERM or SIGINT
    (graceful: callbacks in flight finish); a second signal exits at once. The
    current directory is on the import path; a server not up yet is waited for.
    ``--burst`` stops once no message is ready and none is in flight;
    ``--processes N`` runs N worker processes under this one, restarting any
    that dies; ``--metrics-port`` serves Prometheus metrics (:mod:`queue_beanstalk.metrics`).

``demo [--url URL] [--messages N]``
    show the Queue API, then a handler with several workers handling messages
    on two queues (delayed, retried, one buried), then a throughput burst.

``stats``, ``peek``, ``kick``, ``delete``, ``put``, ``pause``, ``empty`` (each with ``--url URL``)
    operate the queues: see :mod:`queue_beanstalk.operate_command`.

All take ``--log-level LEVEL`` (DEBUG, INFO, WARNING or ERROR; INFO by
default) and ``--log-format text|json`` (text by default); see
:mod:`queue_beanstalk.logs`.

Exit codes, also module constants::

    EXIT_OK           0    the command succeeded
    EXIT_ERROR        1    a queue error other than a connection failure (for
                           example the server refused a command), or the demo's
                           messages were not all settled in time
    EXIT_USAGE        2    a bad command line (argparse's own code)
    EXIT_CONNECTION   3    the queue server could not be reached, or the
                           connection broke
    EXIT_IMPORT       4    worker: the function's module or name cannot be imported
    EXIT_NOT_CALLABLE 5    worker: what the target names is not callable, or is
                           an async function
    EXIT_HANDLER_FAILED 6  worker: a worker thread ended on an error it could
                           not survive (logged); a supervisor should restart it.
                           With --processes: a worker process ended otherwise
                           than gracefully as they were being stopped
    EXIT_STOP_TIMEOUT 7    worker: callbacks still ran --stop-timeout seconds after
                           a stop; exited with their messages back on the server
    EXIT_INTERRUPTED  130  stopped by Ctrl-C (128 + SIGINT, as shells report it),
                           or a worker told twice to stop

Queue errors are reported as one line on stderr, without a traceback. Logging
(to stderr) is set up by :func:`main`, never on import.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from . import __version__, logs
from .checks import check_name, whole_seconds
from .errors import QueueConnectionError, QueueError
from .queue_factory import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_PREFETCH,
    URL_ENVIRONMENT_VARIABLE,
    factory,
)

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_ERROR",
    "EXIT_HANDLER_FAILED",
    "EXIT_IMPORT",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_CALLABLE",
    "EXIT_OK",
    "EXIT_STOP_TIMEOUT",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "resolve_url",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_IMPORT = 4
EXIT_NOT_CALLABLE = 5
EXIT_HANDLER_FAILED = 6
EXIT_STOP_TIMEOUT = 7
EXIT_INTERRUPTED = 130

PROG = "queue-beanstalk"
#: The highest TCP port.
MAX_PORT = 65535
# A worker process's own exits that a restart would only repeat: --processes
# stops them all instead.
_FATAL_EXITS = (EXIT_USAGE, EXIT_IMPORT, EXIT_NOT_CALLABLE)

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser; each subcommand sets ``command``, the function that runs it."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="A queue API and message handler for Python workers, on beanstalkd."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    logging_options = argparse.ArgumentParser(add_help=False)
    logging_options.add_argument(
        "--log-level", type=str.upper, choices=logs.LEVELS, default="INFO", metavar="LEVEL",
        help=f"log only records at LEVEL and above: {', '.join(logs.LEVELS)} (default: INFO)",
    )  # fmt: skip
    logging_options.add_argument(
        "--log-format", choices=logs.FORMATS, default="text",
        help="text lines, or one JSON object per line for log shippers (default: text)",
    )  # fmt: skip

    worker = commands.add_parser(
        "worker",
        parents=[logging_options],
        help="call a function for every message on some queues, until SIGTERM",
        description="Run a handler calling FUNCTION for every message on the queues. "
        "SIGTERM or Ctrl-C stops it gracefully; a second one exits at once.",
    )
    worker.add_argument("target", metavar="package.module:function")
    worker.add_argument(
        "--queue", dest="queues", action="append", required=True, metavar="NAME",
        type=_queue_name, help="a queue to watch; repeat for several",
    )  # fmt: skip
    worker.add_argument(
        "--url",
        type=_queue_url,
        help="the queue server (default: $QUEUE_BEANSTALK_URL, else beanstalk://127.0.0.1:11300)",
    )
    worker.add_argument(
        "--concurrency", type=_positive_int, default=1, metavar="N",
        help="callbacks run at once, each worker with its own connection (default: 1)",
    )  # fmt: skip
    worker.add_argument(
        "--prefetch", type=_prefetch, default=1, metavar="N",
        help="messages each worker reserves at once, run in order: for many short calls; "
        "unstarted ones go back at a stop, or after their time-to-run if the worker is "
        f"killed (1 to {MAX_PREFETCH}; default: 1)",
    )  # fmt: skip
    worker.add_argument(
        "--max-attempts", type=_positive_int, default=DEFAULT_MAX_ATTEMPTS, metavar="N",
        help=f"tries before a failing message is buried (default: {DEFAULT_MAX_ATTEMPTS})",
    )  # fmt: skip
    worker.add_argument(
        "--retry-delay", type=_seconds, metavar="SECONDS",
        help="seconds before a failed message is tried again (default: 1, 2, 4 ... at most 300)",
    )  # fmt: skip
    worker.add_argument(
        "--time-limit", type=_positive_seconds, metavar="SECONDS",
        help="seconds a call may run before its message goes back to the server for another "
        "try (the call itself runs on: a thread cannot be killed; default: no limit)",
    )  # fmt: skip
    worker.add_argument(
        "--stop-timeout", type=_positive_seconds, metavar="SECONDS",
        help=f"seconds a graceful stop waits for the callbacks in flight, then exits "
        f"{EXIT_STOP_TIMEOUT} with their messages back on the server (default: as long as "
        "they run)",
    )  # fmt: skip
    worker.add_argument(
        "--burst", action="store_true",
        help="stop, and exit 0, once no message is ready on the queues and none is in flight",
    )  # fmt: skip
    worker.add_argument(
        "--processes", type=_count, default=0, metavar="N",
        help="run N worker processes under this one, each with --concurrency workers, and "
        "restart any that dies; 0 runs the worker in this process (default: 0)",
    )  # fmt: skip
    worker.add_argument(
        "--path", dest="paths", action="append", default=[], metavar="DIR",
        help="a directory to import from, before the current one (which always is); "
        "repeat for several",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-port", type=_port, metavar="PORT",
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics; needs "
        "pip install 'queue_beanstalk[metrics]'; with --processes N, worker process k serves "
        "on PORT+k-1",
    )  # fmt: skip
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", metavar="HOST",
        help="the address --metrics-port listens on (default: 127.0.0.1; 0.0.0.0 for every one)",
    )  # fmt: skip
    worker.set_defaults(command=_worker)

    demo = commands.add_parser(
        "demo",
        parents=[logging_options],
        help="show a handler at work on two queues, then time a burst of messages",
        description="Use the Queue API by hand, then run a handler with 4 workers on "
        "messages put on two queues: delayed ones, failing ones that are retried, one that "
        "ends buried; prints each of their calls. Then times a burst of no-op messages "
        "through a handler.",
    )
    demo.add_argument(
        "--url",
        type=_queue_url,
        help="the queue server, e.g. beanstalk://127.0.0.1:11300 or memory:// "
        "(default: a throwaway beanstalkd, or memory:// when beanstalkd is not installed)",
    )
    demo.add_argument(
        "--messages",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="no-op messages the throughput burst puts through a handler (default: 1000)",
    )
    demo.set_defaults(command=_demo)
    _add_operating_commands(commands, logging_options)
    return parser


def _add_operating_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    logging_options: argparse.ArgumentParser,
) -> None:
    """Add stats, peek, kick, delete, put, pause and empty (issue 13) to ``commands``."""
    # Imported here: it takes its exit codes from this module.
    from . import operate_command as operate

    common = argparse.ArgumentParser(add_help=False, parents=[logging_options])
    common.add_argument(
        "--url",
        type=_queue_url,
        help="the queue server (default: $QUEUE_BEANSTALK_URL, else beanstalk://127.0.0.1:11300)",
    )

    def add(name: str, command: Command, summary: str, description: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, parents=[common], help=summary, description=description)
        parser.set_defaults(command=command)
        return parser

    stats = add(
        "stats", operate.stats, "show the queues' counts",
        "Show each queue's ready, delayed, reserved, buried, urgent and waiting counts, "
        "and whether it is paused; every queue the servers have when none is named.",
    )  # fmt: skip
    stats.add_argument("queues", nargs="*", type=_queue_name, metavar="QUEUE")
    stats.add_argument(
        "--json", action="store_true",
        help="print JSON: {\"queues\": {NAME: {\"ready\": N, ...}}, ...}, with each server's "
        "figures under \"servers\" when there are several",
    )  # fmt: skip
    stats.add_argument(
        "--watch", type=operate.interval, metavar="SECONDS",
        help="show them again every SECONDS until Ctrl-C (which exits 0); with --json, "
        "one JSON object a line",
    )  # fmt: skip

    peek = add(
        "peek", operate.peek, "show the next message of a queue, without taking it",
        "Show the next ready (or delayed, or buried) message of QUEUE: its action and "
        "args, or its raw body when it cannot be decoded; its id, state, age, priority, "
        "and how often it was reserved, released, buried and kicked. Nothing is reserved. "
        "None is no error: a line says so (null with --json), exit 0.",
    )  # fmt: skip
    peek.add_argument("queue", type=_queue_name, metavar="QUEUE")
    _add_state(peek, required=False)
    peek.add_argument("--json", action="store_true", help="print it as a JSON object")

    kick = add(
        "kick", operate.kick, "make buried (else delayed) messages ready",
        "Make up to N buried messages of QUEUE ready again, or delayed ones when none is "
        f"buried (default: 1); or, with --id, that one buried or delayed message. {_IDS}",
    )  # fmt: skip
    kick.add_argument("queue", type=_queue_name, metavar="QUEUE")
    which = kick.add_mutually_exclusive_group()
    which.add_argument("count", nargs="?", type=_positive_int, metavar="N")
    which.add_argument("--id", type=operate.job_id, metavar="ID", help="kick this message")

    delete = add(
        "delete", operate.delete, "delete a message nobody holds",
        "Delete the ready, delayed or buried message ID of QUEUE for good. A reserved "
        f"message is refused (exit 1): the worker holding it settles it. {_IDS}",
    )  # fmt: skip
    delete.add_argument("queue", type=_queue_name, metavar="QUEUE")
    delete.add_argument("id", type=operate.job_id, metavar="ID")

    put = add(
        "put", operate.put, "put a message on a queue and print its id",
        "Put the message ACTION ARGS... on QUEUE and print its id (ID@host:port when "
        "there are several servers). Options go before QUEUE or after the last of ARGS; "
        "everything after -- is ARGS, for ARGS that start with -.",
    )  # fmt: skip
    put.add_argument("queue", type=_queue_name, metavar="QUEUE")
    put.add_argument("action", type=operate.action, metavar="ACTION")
    put.add_argument("args", nargs="*", metavar="ARGS")
    put.add_argument(
        "--delay", type=_seconds, default=0, metavar="SECONDS",
        help="seconds before it can be got, rounded up (default: 0)",
    )  # fmt: skip
    put.add_argument(
        "--priority", type=operate.priority, metavar="P",
        help="0 (most urgent) to 4294967295 (default: the URL's, else 1024)",
    )  # fmt: skip
    put.add_argument(
        "--ttr", type=operate.ttr, metavar="SECONDS",
        help="seconds a worker may hold it before it is handed out again "
        "(default: the URL's, else 120)",
    )  # fmt: skip

    pause = add(
        "pause", operate.pause, "hand out none of a queue's messages for a while",
        "Make workers take nothing from QUEUE for SECONDS (rounded up); 0 resumes it. "
        "Puts still go in.",
    )  # fmt: skip
    pause.add_argument("queue", type=_queue_name, metavar="QUEUE")
    pause.add_argument("seconds", type=_seconds, metavar="SECONDS")

    empty = add(
        "empty", operate.empty, "delete every message of a queue in one state",
        "Delete every buried (or delayed, or ready) message of QUEUE. On a terminal it "
        "asks first; elsewhere it needs --yes, and refuses (exit 2) without. Reserved "
        "messages are never touched.",
    )  # fmt: skip
    empty.add_argument("queue", type=_queue_name, metavar="QUEUE")
    _add_state(empty, required=True)
    empty.add_argument("--yes", action="store_true", help="do not ask")


# What the help of the commands that take a job id ends with.
_IDS = (
    "Job ids are per server: with several servers, name a job ID@host:port (a plain ID "
    "is taken when only one server has a job of that id on that queue)."
)


def _add_state(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add --ready, --delayed and --buried, setting ``state`` (ready when none is required)."""
    states = parser.add_mutually_exclusive_group(required=required)
    for state in ("ready", "delayed", "buried"):
        states.add_argument(
            f"--{state}", dest="state", action="store_const", const=state,
            help=f"the {state} messages",
        )  # fmt: skip
    if not required:
        parser.set_defaults(state="ready")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (``sys.argv[1:]`` when None) and return its exit code.

    :param argv: the arguments, without the program name.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse exits by itself for --help, --version and usage errors; return the
        # code instead, so that main() always returns and can be called from tests.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = argv  # --processes runs the same command line in each worker process
    logs.configure(args.log_level, args.log_format)
    command: Command = args.command
    try:
        return command(args)
    except QueueConnectionError as exc:
        print(f"{PROG}: error: cannot reach the queue server: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except QueueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _demo(args: argparse.Namespace) -> int:
    # Imported here: the demo pulls in the throwaway-server helper, which other commands
    # do not need.
    from . import demo

    return EXIT_OK if demo.run(args.url, args.messages, sys.stdout).settled else EXIT_ERROR


def _worker(args: argparse.Namespace) -> int:
    from . import worker_command

    try:
        url = resolve_url(args.url)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.processes and args.metrics_port is not None:
        last = args.metrics_port + args.processes - 1
        if last > MAX_PORT:
            print(
                f"{PROG}: error: --metrics-port {args.metrics_port} with --processes "
                f"{args.processes} would need ports up to {last}, past {MAX_PORT}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    if args.processes:
        # The last --processes (and --metrics-port) wins: each worker process runs
        # this command line, and serves its metrics, if asked, on a port of its own.
        command = [sys.executable, "-m", "queue_beanstalk", *args.argv, "--processes", "0"]
        port = args.metrics_port

        def command_of(number: int) -> list[str]:
            if port is None:
                return command
            return [*command, "--metrics-port", str(port + number - 1)]

        return worker_command.supervise(
            command_of,
            args.processes,
            fatal_exits=_FATAL_EXITS,
            forced_exit=EXIT_INTERRUPTED,
            failed_exit=EXIT_HANDLER_FAILED,
        )
    worker_command.import_path(args.paths)
    try:
        func = worker_command.resolve(args.target)
    except worker_command.TargetError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_NOT_CALLABLE if exc.not_callable else EXIT_IMPORT
    metrics = None if args.metrics_port is None else (args.metrics_host, args.metrics_port)
    try:
        with factory(url) as queues:
            return worker_command.run(
                queues,
                func,
                args.queues,
                concurrency=args.concurrency,
                prefetch=args.prefetch,
                max_attempts=args.max_attempts,
                retry_delay=args.retry_delay,
                burst=args.burst,
                forced_exit=EXIT_INTERRUPTED,
                failed_exit=EXIT_HANDLER_FAILED,
                metrics=metrics,
                time_limit=args.time_limit,
                stop_timeout=args.stop_timeout,
                stop_timeout_exit=EXIT_STOP_TIMEOUT,
            )
    except worker_command.MetricsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _port(value: str) -> int:
    """Return ``value`` as a TCP port to listen on, 1 to MAX_PORT."""
    return _whole_number(value, 1, MAX_PORT)


def resolve_url(url: str | None) -> str | None:
    """Return ``url`` (checked by the parser), else ``$QUEUE_BEANSTALK_URL`` checked, else None.

    None leaves factory() its default.

    :raises ValueError: when the environment's URL is not one factory() takes;
        the message names the variable.
    """
    if url is not None:
        return url
    from_environment = os.environ.get(URL_ENVIRONMENT_VARIABLE) or None
    if from_environment is not None:
        try:
            factory(from_environment).close()
        except ValueError as exc:
            raise ValueError(f"${URL_ENVIRONMENT_VARIABLE}: {exc}") from exc
    return from_environment


def _queue_url(value: str) -> str:
    """Return ``value`` if factory() accepts it; it checks the URL without connecting."""
    try:
        factory(value).close()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def _queue_name(value: str) -> str:
    """Return ``value`` if beanstalkd accepts it as a queue (tube) name."""
    try:
        return check_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive_int(value: str) -> int:
    """Return ``value`` as an int of at least 1."""
    return _whole_number(value, 1)


def _prefetch(value: str) -> int:
    """Return ``value`` as an int from 1 to MAX_PREFETCH."""
    return _whole_number(value, 1, MAX_PREFETCH)


def _count(value: str) -> int:
    """Return ``value`` as an int of at least 0."""
    return _whole_number(value, 0)


def _whole_number(value: str, least: int, most: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {number}")
    if most is not None and number > most:
        raise argparse.ArgumentTypeError(f"must be at most {most}, not {number}")
    return number


def _positive_seconds(value: str) -> float:
    """Return ``value`` as a number of seconds above 0."""
    seconds = _number_of_seconds(value)
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {value}")
    return seconds


def _number_of_seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, not {value!r}") from None


def _seconds(value: str) -> float:
    """Return ``value`` as seconds a message may be delayed by (beanstalkd's bound)."""
    seconds = _number_of_seconds(value)
    try:
        whole_seconds(seconds, "a delay")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds

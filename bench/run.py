"""The command line: ``python -m bench [--quick] [--placement split|same|both] [--output FILE]``.

``--only SECTION ...`` runs some sections, e.g. ``--only handler`` for the
handler figures alone; ``--peers`` adds RQ, dramatiq and Celery on a Redis of
the benchmark's own (see :mod:`bench.peers`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from queue_beanstalk.testing import BeanstalkdServer

from . import machine, report
from .cases import FULL, QUICK, Bench, Sizes
from .peers import Peers
from .placement import PLACEMENTS, Placement, pin_process
from .servers import Server, SeveralServers
from .stats import Results

__all__ = ["main"]

#: Exit statuses: the run went through (targets missed or not), or the command line was bad.
EXIT_OK = 0
EXIT_USAGE = 2

# Command-line option to Sizes field, for the sizes that can be overridden.
_SIZE_OPTIONS = {
    "rounds": "rounds of every figure",
    "messages": "messages a round for put, get+delete and batch put",
    "batch": "messages per put_many call and per pipelined write",
    "handler_messages": "messages a round for handler throughput",
    "latency_samples": "latency samples a round",
    "sleep_messages": "messages per worker a round for the sleeping handler",
    "rss_messages": "messages through the handler whose RSS is read",
    "memory_messages": "messages held by memory:// whose RSS is read",
    "servers_messages": "messages a fill, one beanstalkd against two",
    "peer_messages": "no-op jobs a round through each peer (with --peers)",
    "peer_rounds": "rounds of the peers section (with --peers)",
}
#: The sections, by the names ``--only`` takes, in the order they run.
SECTIONS = (
    "put_get",
    "handler",
    "batch_put",
    "latency",
    "sleeping",
    "several_servers",
    "peers",
    "memory",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Return the parsed command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark queue_beanstalk against raw greenstalk, greenstalk with JSON, "
        "a pipelined socket and a minimal client, on a beanstalkd of its own; one beanstalkd "
        "against two; and, with --peers, RQ, dramatiq and Celery on a Redis of its own. "
        "Figures, not tests: exits 0 when a target is missed.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of a few seconds"
    )
    parser.add_argument(
        "--placement",
        choices=[*PLACEMENTS, "both"],
        default="split",
        help="split: beanstalkd on CPU 0, benchmark on CPU 1 (default); "
        "same: both on CPU 1; both: one after the other",
    )
    parser.add_argument("--output", type=Path, help="also write the report, in Markdown, here")
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the RSS measures (the longest part)"
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also time RQ, dramatiq and Celery workers on a Redis of the benchmark's own "
        "(first placement only; install them with bench/peers_setup.sh)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="SECTION",
        help="run these sections only: " + ", ".join(SECTIONS) + " (peers implies --peers)",
    )
    for field, text in _SIZE_OPTIONS.items():
        parser.add_argument(
            "--" + field.replace("_", "-"), type=int, metavar="N", help=text + " (overrides)"
        )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the tables; write the Markdown report when asked."""
    args = parse(argv)
    sizes = QUICK if args.quick else FULL
    overrides = {field: getattr(args, field) for field in _SIZE_OPTIONS}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    if any(value < 1 for value in dataclasses.astuple(sizes)):
        print("python -m bench: sizes must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    names = list(PLACEMENTS) if args.placement == "both" else [args.placement]
    placements = [_usable(PLACEMENTS[name]) for name in names]
    allowed = frozenset(os.sched_getaffinity(0))
    started = time.monotonic()
    load_before = machine.load_average()
    measured: list[tuple[str, Results]] = []
    versions: dict[str, str] = {}
    only = None if args.only is None else frozenset(args.only)
    peers = args.peers or (only is not None and "peers" in only)
    for number, placement in enumerate(placements):
        print(f"placement {placement.describe()} ...", file=sys.stderr)
        results, beanstalkd = _run_placement(
            placement,
            sizes,
            memory=number == 0 and not args.no_memory,
            peers=number == 0 and peers,
            only=only,
        )
        versions.setdefault("beanstalkd", beanstalkd)
        measured.append((placement.describe(), results))
    command = _command(args, argv)
    info = {
        **machine.describe(versions.get("beanstalkd", "unknown"), allowed),
        "sizes": _sizes(sizes),
        "load average (1, 5, 15 min)": f"{load_before} before, {machine.load_average()} after",
        "run took": f"{time.monotonic() - started:.0f} s",
    }
    print(report.text(measured, {**info, "rerun with": command}))
    if args.output is not None:
        text = report.markdown(measured, info, command=command)
        # What the figures mean is written by hand, beside the code, and kept.
        analysis = Path(__file__).with_name("ANALYSIS.md")
        if analysis.exists():
            text = text.rstrip("\n") + "\n\n" + analysis.read_text(encoding="utf-8")
        args.output.write_text(text, encoding="utf-8")
        print(f"\nwrote {args.output}", file=sys.stderr)
    return EXIT_OK


def _run_placement(
    placement: Placement,
    sizes: Sizes,
    *,
    memory: bool,
    peers: bool,
    only: frozenset[str] | None,
) -> tuple[Results, str]:
    """Start two beanstalkds, pin them and this process, run the sections, stop them by PID.

    Every section but the several-servers one uses the first server only; the
    two share the placement's server CPU (in split, both on CPU 0), as the
    peers' Redis does.

    :param peers: whether to run the peers section.
    :param only: the names of the sections to run; all when None.
    """
    pin_process(placement.bench)
    with BeanstalkdServer() as first, BeanstalkdServer() as second:
        servers = [_pinned(started, placement) for started in (first, second)]
        bench = Bench(servers[0].host, servers[0].port, sizes)
        more = [SeveralServers(bench, servers).several_servers]
        if peers:
            more.append(Peers(bench, placement.server).peers)
        results = bench.run(memory=memory, more=more, only=only)
        return results, machine.server_version(servers[0].host, servers[0].port)


def _pinned(server: BeanstalkdServer, placement: Placement) -> Server:
    """Pin a running beanstalkd where ``placement`` puts servers; return what the bench needs."""
    if server.pid is None or server.port is None:
        raise RuntimeError("beanstalkd is not running")
    pin_process(placement.server, server.pid)
    return Server(server.host, server.port, server.pid)


def _usable(placement: Placement) -> Placement:
    """Return ``placement``, or an unpinned one when this machine lacks its CPUs."""
    if placement.available():
        return placement
    cpus = frozenset(os.sched_getaffinity(0))
    print(
        f"warning: cannot pin as {placement.describe()}; running unpinned on {sorted(cpus)}",
        file=sys.stderr,
    )
    return Placement(f"{placement.name} (unpinned)", cpus, cpus)


def _sizes(sizes: Sizes) -> str:
    return ", ".join(
        f"{field.name}={getattr(sizes, field.name):,}" for field in dataclasses.fields(sizes)
    )


def _command(args: argparse.Namespace, argv: list[str] | None) -> str:
    if os.environ.get("MAKELEVEL") and args.output is not None and args.placement == "both":
        return "make bench"
    return " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])

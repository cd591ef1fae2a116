"""One beanstalkd against two: put_many and Handler throughput, and the CPU each message costs.

The two-server side is a factory on ``beanstalk://host:port1,host:port2`` (a
``ServersBackend``): its ``put_many`` batches go to the servers in turn, and
its Handler drains both. Each round, for each handler concurrency, each side
fills a tube of its own with ``put_many`` (timed) and a Handler drains it
(timed); which side goes first alternates from round to round.

Around every timed step the servers' CPU is read from ``/proc/<pid>/stat``
(utime + stime, in clock ticks) and the benchmark's own from
:func:`time.process_time` (every thread of this process). Both servers are
read on both sides, so the one-server side counts the idle one too (it costs
nothing). A tick is 10 ms on most Linux, and one step costs a server a few
tens of ms, so the CPU figures are totals over every round, not per round.
From them: microseconds of CPU per message, the share of one CPU each end used
while a step ran (whichever end nears 100% is the cap), and the rate one fully
used CPU would allow (10^6 / µs per message).
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from queue_beanstalk import QueueFactory

from . import library
from .cases import HANDLER_CONCURRENCY, Bench, messages

__all__ = ["Server", "SeveralServers", "server_cpu_seconds"]

#: The two sides, as row keys and as they are printed.
SIDES = {"one": "one server", "two": "two servers"}
#: Clock ticks a second, the unit of utime and stime in /proc/<pid>/stat.
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Server:
    """A running beanstalkd.

    :param host: its address.
    :param port: its port.
    :param pid: its process id, whose CPU time is read.
    """

    host: str
    port: int
    pid: int

    @property
    def address(self) -> str:
        """``host:port``, as a URL names it and as ``Message.server`` reports it."""
        return f"{self.host}:{self.port}"


def server_cpu_seconds(pids: Sequence[int]) -> float:
    """Return the CPU seconds (user + system) the processes ``pids`` have used, added up.

    Fields 14 and 15 of ``/proc/<pid>/stat``, counted after the command name,
    which is in parentheses and may hold spaces.
    """
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14, 15 of the line
    return ticks / TICKS


@dataclass
class Cost:
    """Messages, wall seconds and CPU seconds of one step, added up over the rounds."""

    messages: int = 0
    wall: float = 0.0
    server: float = 0.0
    client: float = 0.0

    def per_message(self, seconds: float) -> float:
        """Return ``seconds`` spread over the messages, in microseconds each."""
        return 1e6 * seconds / self.messages

    def busy(self, seconds: float) -> float:
        """Return ``seconds`` of CPU as a percentage of the wall time."""
        return 100 * seconds / self.wall


class SeveralServers:
    """The section that compares one beanstalkd with two; records into ``bench.results``.

    :param bench: the benchmark, whose server is the first of ``servers``.
    :param servers: two running beanstalkds, pinned where the placement puts servers.
    """

    def __init__(self, bench: Bench, servers: Sequence[Server]) -> None:
        self.bench = bench
        self.servers = servers
        self.results = bench.results
        self.urls = {
            "one": f"beanstalk://{servers[0].address}",
            "two": "beanstalk://" + ",".join(server.address for server in servers),
        }
        self.count = bench.sizes.servers_messages
        self.messages = messages(self.count)
        #: Step ("put", "handler1", ...) and side to what it cost.
        self.costs: dict[tuple[str, str], Cost] = collections.defaultdict(Cost)

    def steps(self) -> dict[str, str]:
        """Return each step's key and how the tables name it."""
        names = {"put": "put_many"}
        for concurrency in HANDLER_CONCURRENCY:
            names[f"handler{concurrency}"] = f"c={concurrency}: Handler"
        return names

    def several_servers(self) -> None:
        """put_many and Handler throughput into one server and into two; CPU per message."""
        self.declare()
        with (
            self.bench.factory(self.urls["one"]) as one,
            self.bench.factory(self.urls["two"]) as two,
        ):
            factories = {"one": one, "two": two}
            for queues in factories.values():
                self.warm(queues)
            for number in range(self.bench.sizes.rounds):
                for concurrency in HANDLER_CONCURRENCY:
                    self.bench.alternate(
                        number,
                        *(
                            functools.partial(
                                self.fill_and_drain, factories[side], side, concurrency
                            )
                            for side in SIDES
                        ),
                    )
        self.record_costs()

    def declare(self) -> None:
        """Declare the rows, in the order they are printed."""
        count, batch, rounds = self.count, self.bench.sizes.batch, self.bench.sizes.rounds
        self.declare_rows(
            "servers",
            f"several servers, one beanstalkd against two, both on the servers' CPU: "
            f"put_many {count:,} messages ({batch:,} a call), then a Handler drains them "
            f"({len(HANDLER_CONCURRENCY)} fills a side a round)",
            "msg/s",
            ends=("",),
        )
        self.declare_rows(
            "cpu",
            f"several servers, CPU per message (servers: /proc/PID/stat; "
            f"benchmark: process_time; all {rounds} rounds together)",
            "µs",
            ends=("server", "client"),
        )
        self.declare_rows(
            "busy",
            "several servers, CPU used while a step ran, % of one CPU (near 100: the cap)",
            "%",
            ends=("server", "client"),
        )
        section = "several servers, what one fully used CPU allows: 10^6 / µs per message"
        for step, name in self.steps().items():
            for end in ("server", "client"):
                who = "server" if end == "server" else "benchmark"
                label = f"{name}: one {who} CPU fully used"
                self.results.row(f"ceiling.{end}.{step}", section, label, "msg/s")

    def declare_rows(self, kind: str, section: str, unit: str, *, ends: tuple[str, ...]) -> None:
        """Declare a row for each step, end (server or client, or none) and side.

        The two-server row is compared with the one-server row, round by round.
        """
        for step, name in self.steps().items():
            for end in ends:
                for side, text in SIDES.items():
                    key = ".".join(part for part in (kind, end, step, side) if part)
                    self.results.row(
                        key,
                        section,
                        ", ".join(part for part in (name, _WHOSE.get(end, ""), text) if part),
                        unit,
                        short="one",
                        baselines=(key.rsplit(".", 1)[0] + ".one",) if side == "two" else (),
                    )

    def warm(self, queues: QueueFactory) -> None:
        """Open a connection to every server and read max-job-size before timing.

        One message a batch, a batch per server: the two-server factory's turn
        comes back to its first server, so every fill spreads the same way.
        """
        queue = queues.get(self.bench.tube("servers-warm"))
        for message in self.messages[: len(self.servers)]:
            queue.put_many([message])
        for _ in self.servers:
            queue.delete(queue.get(1))

    def fill_and_drain(self, queues: QueueFactory, side: str, concurrency: int) -> None:
        """Fill a new tube with put_many, then drain it with a Handler; record both."""
        tube = self.bench.tube(f"servers-{side}")
        put_many = queues.get(tube).put_many
        with self.measure("put", side):
            seconds, _ = library.put_many_batches(put_many, self.messages, self.bench.sizes.batch)
        self.results.add(f"servers.put.{side}", self.count / seconds)
        if side == "two":
            self.check_spread()
        step = f"handler{concurrency}"
        with self.measure(step, side):
            seconds = library.handler_run(queues, tube, self.count, concurrency=concurrency)
        self.results.add(f"servers.{step}.{side}", self.count / seconds)
        for server in self.servers:
            self.bench.check_empty(tube, (server.host, server.port))

    @contextmanager
    def measure(self, step: str, side: str) -> Iterator[None]:
        """Add the block's wall time and CPU, and a fill's messages, to ``step`` on ``side``."""
        pids = [server.pid for server in self.servers]
        server, client, wall = server_cpu_seconds(pids), time.process_time(), time.perf_counter()
        yield
        cost = self.costs[step, side]
        cost.wall += time.perf_counter() - wall
        cost.client += time.process_time() - client
        cost.server += server_cpu_seconds(pids) - server
        cost.messages += self.count

    def check_spread(self) -> None:
        """Warn when the last fill did not spread evenly over the servers.

        A batch goes to one server, so the spread is even when the batches a
        fill takes are a multiple of the servers.
        """
        spread = collections.Counter(message.server for message in self.messages)
        if len(set(spread.values())) > 1 or len(spread) < len(self.servers):
            shares = ", ".join(f"{server}: {count:,}" for server, count in spread.items())
            print(f"  warning: a two-server fill spread unevenly ({shares})", file=sys.stderr)

    def record_costs(self) -> None:
        """Record CPU per message, CPU busy and the ceilings from the totals of every round."""
        rows = self.results
        for step in self.steps():
            for side in SIDES:
                cost = self.costs[step, side]
                for end, seconds in (("server", cost.server), ("client", cost.client)):
                    rows.add(f"cpu.{end}.{step}.{side}", cost.per_message(seconds))
                    rows.add(f"busy.{end}.{step}.{side}", cost.busy(seconds))
            one = self.costs[step, "one"]
            for end, seconds in (("server", one.server), ("client", one.client)):
                if seconds > 0:
                    rows.add(f"ceiling.{end}.{step}", 1e6 / one.per_message(seconds))


# Whose CPU a row is about.
_WHOSE = {"server": "servers' CPU", "client": "benchmark's CPU"}

"""Peers a user would pick instead: RQ, dramatiq and Celery on Redis, beside queue_beanstalk.

Each round, for each peer in turn (the order alternating from round to
round): this process enqueues ``peer_messages`` no-op jobs, one call each
(timed: the enqueue rate), then one worker process, started as a user starts
it, drains them. The drain is timed inside the worker, from the start of the
first job to the start of the last (:func:`bench.peer_tasks.mark`), so that a
worker's start-up, reported apart, and its way of noticing an empty queue do
not count. RQ and queue_beanstalk have a burst mode and exit by themselves;
dramatiq and Celery are sent SIGTERM once the last job has started. Every
worker runs one job at a time in one process, logs at WARNING, and keeps its
framework's defaults otherwise.

Redis is a ``redis-server`` of the section's own (:class:`RedisServer`),
pinned where the placement puts servers, as beanstalkd is; the workers inherit
the benchmark's CPU. Around each step the server's command counter is read
(beanstalkd's ``cmd-*`` stats, Redis's ``INFO commandstats``), for the
commands each framework spends per job.

The section runs only when asked for (``--peers``) and skips, with a note,
any peer whose packages are not installed (``bash bench/peers_setup.sh``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import greenstalk

from .cases import Bench
from .frameworks import PEERS, Peer, QueueBeanstalk, note
from .redis_server import RedisNotFound, RedisServer

__all__ = ["Peers"]

#: The repository root: workers run there, and import ``bench.peer_tasks`` from it.
ROOT = Path(__file__).resolve().parent.parent
#: Seconds between looks at the marks file while a worker drains.
POLL = 0.01


@dataclass
class Run:
    """What one peer's run measured.

    :param enqueue: seconds to enqueue the jobs.
    :param start_up: seconds from starting the worker to the start of its first job.
    :param drain: seconds from the start of the first job to the start of the last.
    :param enqueue_commands: server commands run while enqueuing.
    :param drain_commands: server commands run while the worker ran.
    """

    enqueue: float
    start_up: float
    drain: float
    enqueue_commands: int
    drain_commands: int


class Peers:
    """The section that times the peers; records into ``bench.results``.

    :param bench: the benchmark, whose beanstalkd queue_beanstalk uses.
    :param cpus: the CPUs servers are pinned to, for Redis.
    """

    def __init__(self, bench: Bench, cpus: frozenset[int]) -> None:
        self.bench = bench
        self.cpus = cpus
        self.results = bench.results
        self.count = bench.sizes.peer_messages

    def peers(self) -> None:
        """Enqueue rate and one worker's drain rate of RQ, dramatiq, Celery and queue_beanstalk."""
        if self.count < 2:
            raise ValueError("the peers section needs at least 2 jobs a round")
        self.declare()
        with self.redis() as redis:
            peers = [kind(self.bench, redis) for kind in PEERS]
            ready = []
            for peer in peers:
                why = peer.missing()
                if why is None:
                    ready.append(peer)
                    continue
                for kind in ("enqueue", "drain", "start", "cmd.enqueue", "cmd.drain"):
                    self.results.rows[f"peers.{kind}.{peer.key}"].note = f"skipped: {why}"
            with tempfile.TemporaryDirectory(prefix="bench-peers-") as scratch:
                for number in range(self.bench.sizes.peer_rounds):
                    self.bench.alternate(
                        number,
                        *(
                            functools.partial(self.measure, peer, Path(scratch), number)
                            for peer in ready
                        ),
                    )

    @contextlib.contextmanager
    def redis(self) -> Iterator[RedisServer | None]:
        """Yield a Redis of the section's own, stopped afterwards; None when there is none."""
        if not any(kind.on_redis and kind.uninstalled() is None for kind in PEERS):
            # Every Redis peer lacks its packages: they say so; no server is needed.
            yield None
            return
        server = RedisServer(self.cpus)
        try:
            server.start()
        except RedisNotFound:
            yield None
            return
        try:
            yield server
        finally:
            server.stop()

    def declare(self) -> None:
        """Declare the rows, in the order they are printed, and the note on what peers do."""
        count, rounds, rows = self.count, self.bench.sizes.peer_rounds, self.results
        section = (
            f"peers: {count:,} no-op jobs enqueued one call each, then drained by one "
            f"worker process, one job at a time ({rounds} round{'s' * (rounds > 1)})"
        )
        others = tuple(kind for kind in PEERS if kind is not QueueBeanstalk)
        for kind in PEERS:
            ours = kind is QueueBeanstalk
            rows.row(
                f"peers.enqueue.{kind.key}",
                section,
                f"enqueue: {kind.name}",
                "msg/s",
                short=kind.name,
                baselines=tuple(f"peers.enqueue.{k.key}" for k in others if k.own_enqueue)
                if ours
                else (),
            )
        for kind in PEERS:
            ours = kind is QueueBeanstalk
            rows.row(
                f"peers.drain.{kind.key}",
                section,
                f"drain: {kind.name}",
                "msg/s",
                short=kind.name,
                baselines=tuple(f"peers.drain.{k.key}" for k in others) if ours else (),
            )
        rows.notes[section] = note()
        section = "peers: worker start-up, from starting the process to the start of its first job"
        for kind in PEERS:
            rows.row(f"peers.start.{kind.key}", section, kind.name, "s")
        section = (
            "peers: server commands per job (beanstalkd: its cmd-* stats; Redis: INFO "
            "commandstats, commands run by Lua scripts included; a drain's count includes "
            "the worker's start-up, idle polls and shutdown)"
        )
        for kind in PEERS:
            rows.row(f"peers.cmd.enqueue.{kind.key}", section, f"enqueue: {kind.name}", "cmd")
        for kind in PEERS:
            rows.row(f"peers.cmd.drain.{kind.key}", section, f"drain: {kind.name}", "cmd")

    def measure(self, peer: Peer, scratch: Path, number: int) -> None:
        """Run one peer once and record its rows."""
        run = self.run(peer, scratch / f"{peer.key}-{number}.marks")
        rows, key, count = self.results, peer.key, self.count
        rows.add(f"peers.enqueue.{key}", count / run.enqueue)
        rows.add(f"peers.drain.{key}", (count - 1) / run.drain)
        rows.add(f"peers.start.{key}", run.start_up)
        rows.add(f"peers.cmd.enqueue.{key}", run.enqueue_commands / count)
        # The warm-up job is drained too.
        rows.add(f"peers.cmd.drain.{key}", run.drain_commands / (count + 1))

    def run(self, peer: Peer, marks: Path) -> Run:
        """Enqueue a warm-up job (untimed) and the jobs (timed), then drain them with a worker.

        The first and last jobs carry the path of ``marks``, the others an empty one.
        """
        if peer.on_redis and peer.redis is not None:
            peer.redis.command("FLUSHALL")
        commands = self.counter(peer)
        count, path = self.count, str(marks)
        with peer.sending() as send:
            send("")  # opens the connection, declares the queue
            before = commands()
            start = time.perf_counter()
            send(path)
            for _ in range(count - 2):
                send("")
            send(path)
            enqueue = time.perf_counter() - start
            enqueued = commands()
        started, first, last = self.drain(peer, marks)
        drained = commands()
        left = peer.left()
        if left:
            raise RuntimeError(f"{peer.name}: {left} job(s) left after the worker stopped")
        # Each reading of the counter is counted by the next.
        return Run(
            enqueue=enqueue,
            start_up=first - started,
            drain=last - first,
            enqueue_commands=enqueued - before - 1,
            drain_commands=drained - enqueued - 1,
        )

    def drain(self, peer: Peer, marks: Path) -> tuple[float, float, float]:
        """Run the peer's worker until the last job has started and the worker has stopped.

        :returns: ``time.monotonic()`` at the worker's start, the first job's and the last's.
        """
        log = marks.with_suffix(".log")
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        if peer.redis is not None:
            env["BENCH_REDIS_URL"] = peer.redis.url
        deadline = 60.0 + 0.05 * self.count
        with open(log, "wb") as output:
            started = time.monotonic()
            process = subprocess.Popen(
                peer.worker(), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )
            try:
                times = self.wait_for_marks(process, marks, started + deadline)
                if not peer.exits:
                    process.terminate()
                process.wait(max(1.0, started + deadline - time.monotonic()))
            except BaseException:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
                raise
        if peer.exits and process.returncode != 0:
            raise RuntimeError(
                f"{peer.name}'s worker exited with {process.returncode}: {_tail(log)}"
            )
        return started, times[0], times[1]

    def wait_for_marks(
        self, process: subprocess.Popen[bytes], marks: Path, deadline: float
    ) -> list[float]:
        """Wait until both marked jobs have started; return their times."""
        while True:
            with contextlib.suppress(FileNotFoundError):
                times = [float(line) for line in marks.read_text(encoding="ascii").split()]
                if len(times) >= 2:
                    return times[:2]
            if process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with {process.returncode} before the last job: "
                    f"{_tail(marks.with_suffix('.log'))}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not reach the last job in time: {marks}")
            time.sleep(POLL)

    def counter(self, peer: Peer) -> Callable[[], int]:
        """Return a function reading the total of commands the peer's server has run."""
        if peer.on_redis and peer.redis is not None:
            return peer.redis.commands_done
        address = self.bench.address

        def beanstalkd_commands() -> int:
            with greenstalk.Client(address, encoding=None) as conn:
                stats = conn.stats()
            return sum(int(str(value)) for name, value in stats.items() if name.startswith("cmd-"))

        return beanstalkd_commands


def _tail(log: Path, lines: int = 5) -> str:
    """Return the last lines of a worker's output, for an error message."""
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"

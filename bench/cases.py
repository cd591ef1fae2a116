"""The comparisons: each section measures the raw baselines and the library back to back.

Every section runs ``sizes.rounds`` rounds; within a round the sides run one
after the other, in alternating order from round to round, so drift on the
shared machine does not always favour the same side. The loops of single puts
and gets go further: a round is cut into ``SLICES`` slices and the sides take
turns slice by slice, so a slow second on the machine lands on every side of a
ratio rather than on one.
"""

from __future__ import annotations

import functools
import itertools
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import greenstalk

from queue_beanstalk import JsonCodec, Message, QueueFactory, factory

from . import library, minimal, raw, rss
from .stats import Results, percentile

__all__ = ["FULL", "QUICK", "Bench", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    """How much work each figure measures.

    :param rounds: repetitions of every figure (reported as min/median/max).
    :param messages: messages a round for put, get+delete and batch put.
    :param batch: messages per ``put_many`` call and per pipelined write.
    :param handler_messages: messages a round for handler throughput.
    :param latency_samples: put-to-callback samples a round.
    :param sleep_messages: messages per worker a round for the sleeping callback.
    :param rss_messages: messages through the handler whose RSS is watched.
    :param memory_messages: messages held by the memory backend whose RSS is watched.
    :param servers_messages: messages a fill, one server against two (see bench.servers).
    :param peer_messages: no-op jobs a round through each peer (see bench.peers).
    :param peer_rounds: rounds of the peers section, which runs only when asked for.
    """

    rounds: int
    messages: int
    batch: int
    handler_messages: int
    latency_samples: int
    sleep_messages: int
    rss_messages: int
    memory_messages: int
    servers_messages: int
    peer_messages: int
    peer_rounds: int


FULL = Sizes(
    rounds=5,
    messages=20_000,
    batch=1_000,
    handler_messages=10_000,
    latency_samples=500,
    sleep_messages=30,
    rss_messages=200_000,
    memory_messages=100_000,
    servers_messages=20_000,
    peer_messages=1_000,
    peer_rounds=2,
)
QUICK = Sizes(
    rounds=2,
    messages=1_000,
    batch=250,
    handler_messages=1_000,
    latency_samples=50,
    sleep_messages=5,
    rss_messages=5_000,
    memory_messages=5_000,
    servers_messages=1_000,
    peer_messages=200,
    peer_rounds=1,
)

#: Latency: puts not counted while connections open, and the pause after each.
LATENCY_WARMUP = 20
LATENCY_PAUSE = 0.001
#: Turns the sides of a put or get+delete round take (see the module docstring).
SLICES = 20
#: Jobs a prefetching Handler worker holds, and the batch of the pipelined drain it is held to.
PREFETCH = 32
#: The sleeping callback of the I/O-bound case.
SLEEP = 0.010
#: Messages a handler takes before its RSS is first read: connections, caches, imports.
RSS_WARMUP = 1_000
HANDLER_CONCURRENCY = (1, 4)
#: The sides of a put or get+delete round, as their rows' keys end.
SIDES = ("raw", "json", "minimal", "queue")
SLEEP_CONCURRENCY = (1, 4, 16)


def messages(count: int) -> list[Message]:
    """Return ``count`` messages, alike but for a fixed-width argument."""
    return [Message("bench", [f"{number:08d}"]) for number in range(count)]


def bodies(count: int) -> list[bytes]:
    """Return the job bodies of :func:`messages`, as the library's JSON codec writes them."""
    codec = JsonCodec()
    return [codec.encode(message) for message in messages(count)]


class Bench:
    """Runs the sections against one beanstalkd and records into ``results``.

    :param host: the server's address.
    :param port: the server's port.
    :param sizes: how much work each figure measures.
    """

    def __init__(self, host: str, port: int, sizes: Sizes) -> None:
        self.address: raw.Address = (host, port)
        self.url = f"beanstalk://{host}:{port}"
        self.sizes = sizes
        self.results = Results()
        self._tubes = itertools.count(1)
        self._messages = messages(max(sizes.messages, sizes.handler_messages))
        self._bodies = bodies(max(sizes.messages, sizes.handler_messages))

    def run(
        self,
        *,
        memory: bool,
        more: Sequence[Callable[[], None]] = (),
        only: Collection[str] | None = None,
    ) -> Results:
        """Run every section, then ``more``, then the RSS one when ``memory``.

        The library may be mid-change while the benchmark runs: whatever a section
        raises is printed and noted in its rows, and the other sections go on.

        :param only: names of the sections (their methods' names) to run; all when None.
        """
        sections = [self.put_get, self.handler, self.batch_put, self.latency, self.sleeping, *more]
        if memory:
            sections.append(self.memory)
        if only is not None:
            sections = [section for section in sections if section.__name__ in only]
        for section in sections:
            started = time.monotonic()
            try:
                section()
            except Exception as exc:  # noqa: BLE001 (reported in the table, see above)
                traceback.print_exc()
                for row in self.results.rows.values():
                    if not row.samples and not row.note:
                        row.note = f"failed: {type(exc).__name__}: {exc}"
            print(f"  {section.__name__}: {time.monotonic() - started:.1f} s", file=sys.stderr)
        return self.results

    def tube(self, purpose: str) -> str:
        """Return a tube name used by nothing else in this run."""
        return f"bench-{purpose}-{next(self._tubes)}"

    @contextmanager
    def factory(self, url: str | None = None) -> Iterator[QueueFactory]:
        """Yield a queue factory on the server (or ``url``), closed afterwards."""
        queues = factory(url or self.url)
        try:
            yield queues
        finally:
            queues.close()

    def prefill(self, tube: str, count: int) -> None:
        """Put ``count`` jobs into ``tube`` through a pipelined socket (not timed)."""
        source = itertools.cycle(self._bodies)
        with raw.Pipeline(self.address, tube) as pipe:
            for first in range(0, count, self.sizes.batch):
                size = min(self.sizes.batch, count - first)
                pipe.put_many(list(itertools.islice(source, size)))

    def check_empty(self, tube: str, address: raw.Address | None = None) -> None:
        """Raise when jobs are left in ``tube``: a figure would have counted too few.

        :param address: the server to ask; the benchmark's own when None.
        """
        with greenstalk.Client(address or self.address, encoding=None) as conn:
            try:
                stats = conn.stats_tube(tube)
            except greenstalk.NotFoundError:
                return  # nobody watches it and it is empty: the server dropped it
        left = sum(int(stats[field]) for field in ("current-jobs-ready", "current-jobs-reserved"))
        if left:
            raise RuntimeError(f"{left} job(s) left in {tube}")

    def alternate(self, round_number: int, *steps: Callable[[], None]) -> None:
        """Run ``steps`` in order on even rounds, in reverse on odd ones."""
        for step in steps if round_number % 2 == 0 else reversed(steps):
            step()

    def side_by_side(
        self, round_number: int, count: int, *sides: Callable[[int, int], float]
    ) -> list[float]:
        """Run the sides over items ``0..count`` in turns; return each side's items/s.

        Each side is called with a slice's first and last (excluded) item
        indexes and returns the seconds it took; the side that goes first
        moves on by one from slice to slice and from round to round.
        """
        seconds = [0.0] * len(sides)
        bounds = [count * part // SLICES for part in range(SLICES + 1)]
        for part in range(SLICES):
            first, last = bounds[part], bounds[part + 1]
            turn = (round_number + part) % len(sides)
            for side in [*range(turn, len(sides)), *range(turn)]:
                seconds[side] += sides[side](first, last)
        return [count / spent for spent in seconds]

    # Sections

    def put_get(self) -> None:
        """put and get+delete: raw greenstalk, greenstalk with JSON, a minimal client, Queue.

        And Queue on memory://, on its own.
        """
        count = self.sizes.messages
        section = f"put, then get+delete, one at a time ({count:,} messages a round)"
        rows = self.results
        rows.row("put.raw", section, "put: raw greenstalk put loop", "msg/s", short="raw")
        rows.row(
            "put.json",
            section,
            "put: greenstalk, json.dumps each message",
            "msg/s",
            short="greenstalk+json",
        )
        rows.row(
            "put.minimal",
            section,
            "put: minimal client, JSON encode, one socket",
            "msg/s",
            baselines=("put.raw", "put.json"),
        )
        rows.row("put.queue", section, "put: Queue.put", "msg/s", baselines=("put.raw", "put.json"))
        rows.row("put.memory", section, "put: Queue.put, memory://", "msg/s")
        rows.row("get.raw", section, "get+delete: raw reserve(0)+delete", "msg/s", short="raw")
        rows.row(
            "get.json",
            section,
            "get+delete: greenstalk reserve(0), json.loads, delete",
            "msg/s",
            short="greenstalk+json",
        )
        rows.row(
            "get.minimal",
            section,
            "get+delete: minimal client, json.loads, Message, one socket",
            "msg/s",
            baselines=("get.raw", "get.json"),
        )
        rows.row(
            "get.queue",
            section,
            "get+delete: Queue.get(0)+delete",
            "msg/s",
            baselines=("get.raw", "get.json"),
        )
        rows.row("get.memory", section, "get+delete: Queue.get(0)+delete, memory://", "msg/s")
        bodies, msgs = self._bodies[:count], self._messages[:count]
        calls = [(message.action, list(message.args)) for message in msgs]
        raw_tube, json_tube, minimal_tube, queue_tube = (self.tube(f"put-{side}") for side in SIDES)
        conn = raw.client(self.address, raw_tube)
        json_conn = raw.json_client(self.address, json_tube)
        with self.factory() as queues, self.factory("memory://") as memory:
            queue, memory_queue = queues.get(queue_tube), memory.get("bench")
            # Open the connections and read the server's max-job-size before timing.
            for warm in (queue, memory_queue):
                warm.put(msgs[0])
                warm.delete(warm.get(0))
            for number in range(self.sizes.rounds):
                rates = self.side_by_side(
                    number,
                    count,
                    lambda first, last: raw.put_loop(conn, bodies[first:last])[0],
                    lambda first, last: raw.json_put_loop(json_conn, calls[first:last]),
                    lambda first, last: minimal.put_loop(
                        self.address, minimal_tube, calls[first:last]
                    ),
                    lambda first, last: library.queue_put_loop(queue, msgs[first:last]),
                )
                for side, rate in zip(SIDES, rates, strict=True):
                    rows.add(f"put.{side}", rate)
                rates = self.side_by_side(
                    number,
                    count,
                    lambda first, last: raw.reserve_delete_loop(conn, last - first),
                    lambda first, last: raw.json_get_delete_loop(json_conn, last - first),
                    lambda first, last: minimal.get_delete_loop(
                        self.address, minimal_tube, last - first
                    ),
                    lambda first, last: library.queue_get_delete_loop(queue, last - first),
                )
                for side, rate in zip(SIDES, rates, strict=True):
                    rows.add(f"get.{side}", rate)
                rows.add("put.memory", count / library.queue_put_loop(memory_queue, msgs))
                rows.add("get.memory", count / library.queue_get_delete_loop(memory_queue, count))
        conn.close()
        json_conn.close()
        for tube in (raw_tube, json_tube, minimal_tube, queue_tube):
            self.check_empty(tube)

    def handler(self) -> None:
        """Handler with a no-op function against raw reserve/delete loops, at 1 and 4 workers.

        At one worker, also a Handler that prefetches ``PREFETCH`` jobs, held to
        a pipelined socket that reserves as many a round trip (the ceiling), and
        a minimal client doing each Handler's work (:mod:`bench.minimal`).
        """
        count = self.sizes.handler_messages
        section = f"handler, no-op function, waiting messages ({count:,} a round)"
        rows = self.results
        for concurrency in HANDLER_CONCURRENCY:
            raw_key, handler_key = f"handler{concurrency}.raw", f"handler{concurrency}.queue"
            rows.row(
                raw_key,
                section,
                f"c={concurrency}: raw reserve(0)+delete loop"
                + (f", {concurrency} threads" if concurrency > 1 else ""),
                "msg/s",
                short="raw",
            )
            if concurrency == 1:
                rows.row(
                    "handler1.pipelined",
                    section,
                    f"c=1: raw pipelined socket, {PREFETCH} reserve-with-timeout 0 a write",
                    "msg/s",
                    short="pipelined",
                )
                rows.row(
                    "handler1.minimal",
                    section,
                    "c=1: minimal client, delete + reserve-with-timeout 1 a write",
                    "msg/s",
                    baselines=(raw_key,),
                )
            rows.row(
                handler_key,
                section,
                f"c={concurrency}: Handler, concurrency={concurrency}",
                "msg/s",
                baselines=(raw_key,),
            )
            if concurrency == 1:
                rows.row(
                    "handler1.minimal_prefetch",
                    section,
                    f"c=1: minimal client, {PREFETCH} deletes + {PREFETCH} reserves a write",
                    "msg/s",
                    baselines=("handler1.raw", "handler1.pipelined"),
                )
                rows.row(
                    "handler1.prefetch",
                    section,
                    f"c=1: Handler, concurrency=1, prefetch={PREFETCH}",
                    "msg/s",
                    baselines=("handler1.raw", "handler1.pipelined"),
                )
        with self.factory() as queues:
            steps: dict[int, list[Callable[[], None]]] = {
                concurrency: [
                    functools.partial(self._raw_drain, count, concurrency),
                    functools.partial(self._handler_drain, queues, count, concurrency),
                ]
                for concurrency in HANDLER_CONCURRENCY
            }
            steps[1][1:1] = [
                functools.partial(self._pipelined_drain, count),
                functools.partial(self._minimal_drain, count),
            ]
            steps[1].append(functools.partial(self._minimal_drain, count, PREFETCH))
            if library.prefetch_available(queues):
                steps[1].append(functools.partial(self._handler_drain, queues, count, 1, PREFETCH))
            else:
                rows.rows[
                    "handler1.prefetch"
                ].note = "prefetch not available (QueueFactory.handler takes no prefetch)"
            for number in range(self.sizes.rounds):
                for concurrency in HANDLER_CONCURRENCY:
                    self.alternate(number, *steps[concurrency])

    def _raw_drain(self, count: int, concurrency: int) -> None:
        tube = self.tube("drain-raw")
        self.prefill(tube, count)
        seconds, done = raw.drain(self.address, tube, concurrency)
        if done != count:
            raise RuntimeError(f"the raw loop deleted {done} jobs, not {count}")
        self.results.add(f"handler{concurrency}.raw", count / seconds)

    def _pipelined_drain(self, count: int) -> None:
        tube = self.tube("drain-pipelined")
        self.prefill(tube, count)
        with raw.Pipeline(self.address, tube) as pipe:
            seconds, done = pipe.drain(PREFETCH)
        if done != count:
            raise RuntimeError(f"the pipelined socket deleted {done} jobs, not {count}")
        self.check_empty(tube)
        self.results.add("handler1.pipelined", count / seconds)

    def _minimal_drain(self, count: int, prefetch: int = 1) -> None:
        tube = self.tube("drain-minimal")
        self.prefill(tube, count)
        if prefetch > 1:
            seconds = minimal.prefetch_loop(self.address, tube, count, prefetch)
        else:
            seconds = minimal.handler_loop(self.address, tube, count)
        self.check_empty(tube)
        key = "minimal_prefetch" if prefetch > 1 else "minimal"
        self.results.add(f"handler1.{key}", count / seconds)

    def _handler_drain(
        self, queues: QueueFactory, count: int, concurrency: int, prefetch: int = 1
    ) -> None:
        tube = self.tube("drain-handler")
        self.prefill(tube, count)
        seconds = library.handler_run(
            queues, tube, count, concurrency=concurrency, prefetch=prefetch
        )
        self.check_empty(tube)
        key = "prefetch" if prefetch > 1 else "queue"
        self.results.add(f"handler{concurrency}.{key}", count / seconds)

    def batch_put(self) -> None:
        """put_many against the raw put loop and a pipelined socket (the ceiling)."""
        count, batch = self.sizes.messages, self.sizes.batch
        section = f"batch put ({count:,} messages a round, {batch:,} per call or write)"
        rows = self.results
        rows.row("batch.loop", section, "raw greenstalk put loop", "msg/s", short="raw loop")
        rows.row(
            "batch.pipelined",
            section,
            "raw pipelined socket, one write per batch",
            "msg/s",
            short="pipelined",
        )
        rows.row(
            "batch.put_many",
            section,
            "Queue.put_many",
            "msg/s",
            baselines=("batch.loop", "batch.pipelined"),
        )
        rows.row("batch.memory", section, "Queue.put_many, memory://", "msg/s")
        bodies, msgs = self._bodies[:count], self._messages[:count]
        loop_tube, pipe_tube, many_tube = (self.tube(name) for name in ("loop", "pipe", "many"))
        conn = raw.client(self.address, loop_tube)
        pipe = raw.Pipeline(self.address, pipe_tube)
        cleaner = raw.Pipeline(self.address, many_tube)
        with self.factory() as queues, self.factory("memory://") as memory:
            put_many = library.put_many_of(queues.get(many_tube))
            memory_put_many = library.put_many_of(memory.get("bench"))
            if put_many is None or memory_put_many is None:
                rows.rows["batch.put_many"].note = "not available (no Queue.put_many)"
                rows.rows["batch.memory"].note = "not available (no Queue.put_many)"
            else:
                # Opens the connection and reads the server's max-job-size before timing.
                cleaner.delete_many(put_many(msgs[:1]))

            def loop() -> None:
                seconds, ids = raw.put_loop(conn, bodies)
                rows.add("batch.loop", count / seconds)
                cleaner.delete_many(ids)

            def pipelined() -> None:
                start = time.perf_counter()
                ids: list[int] = []
                for first in range(0, count, batch):
                    ids += pipe.put_many(bodies[first : first + batch])
                rows.add("batch.pipelined", count / (time.perf_counter() - start))
                cleaner.delete_many(ids)

            def many() -> None:
                if put_many is None:
                    return
                seconds, ids = library.put_many_batches(put_many, msgs, batch)
                rows.add("batch.put_many", count / seconds)
                cleaner.delete_many(ids)

            for number in range(self.sizes.rounds):
                self.alternate(number, loop, pipelined, many)
                if memory_put_many is not None:
                    seconds, _ = library.put_many_batches(memory_put_many, msgs, batch)
                    rows.add("batch.memory", count / seconds)
        for closing in (conn, pipe, cleaner):
            closing.close()
        for tube in (loop_tube, pipe_tube, many_tube):
            self.check_empty(tube)

    def latency(self) -> None:
        """Put to callback start, one message at a time, the consumer idle in reserve."""
        samples = self.sizes.latency_samples
        section = f"latency, put to callback start, consumer idle ({samples} samples a round)"
        rows = self.results
        for quantile in ("p50", "p99"):
            rows.row(
                f"latency.raw.{quantile}",
                section,
                f"{quantile}: raw put, thread blocked in reserve",
                "ms",
                short="raw",
            )
            rows.row(
                f"latency.queue.{quantile}",
                section,
                f"{quantile}: Queue.put to Handler callback",
                "ms",
                baselines=(f"latency.raw.{quantile}",),
            )
        total = LATENCY_WARMUP + samples
        bodies, msgs = self._bodies[:total], self._messages[:total]

        def record(side: str, delays: Sequence[float]) -> None:
            rows.add(f"latency.{side}.p50", 1000 * percentile(delays, 0.50))
            rows.add(f"latency.{side}.p99", 1000 * percentile(delays, 0.99))

        with self.factory() as queues:
            for number in range(self.sizes.rounds):
                self.alternate(
                    number,
                    lambda: record(
                        "raw",
                        raw.put_to_reserve_latency(
                            self.address,
                            self.tube("latency-raw"),
                            bodies,
                            warmup=LATENCY_WARMUP,
                            pause=LATENCY_PAUSE,
                        ),
                    ),
                    lambda: record(
                        "queue",
                        library.handler_latency(
                            queues,
                            self.tube("latency-queue"),
                            msgs,
                            warmup=LATENCY_WARMUP,
                            pause=LATENCY_PAUSE,
                        ),
                    ),
                )

    def sleeping(self) -> None:
        """An I/O-bound function (sleeps 10 ms) at 1, 4 and 16 workers."""
        per_worker = self.sizes.sleep_messages
        section = (
            f"I/O-bound handler, function sleeps {SLEEP * 1000:g} ms "
            f"({per_worker} messages per worker a round)"
        )
        for concurrency in SLEEP_CONCURRENCY:
            self.results.row(
                f"sleep.c{concurrency}",
                section,
                f"Handler, concurrency={concurrency}",
                "msg/s",
                short="c=1",
                baselines=() if concurrency == 1 else ("sleep.c1",),
            )
        with self.factory() as queues:
            for _ in range(self.sizes.rounds):
                for concurrency in SLEEP_CONCURRENCY:
                    count = per_worker * concurrency
                    tube = self.tube("sleep")
                    self.prefill(tube, count)
                    seconds = library.handler_run(
                        queues, tube, count, concurrency=concurrency, sleep=SLEEP
                    )
                    self.check_empty(tube)
                    self.results.add(f"sleep.c{concurrency}", count / seconds)

    def memory(self) -> None:
        """RSS of a handler process over many messages, and of the memory backend holding many."""
        count, held = self.sizes.rss_messages, self.sizes.memory_messages
        section = "memory (one run each, in a child process; MB = 10^6 bytes)"
        rows = self.results
        labels = {
            "rss.start": "handler process RSS at start",
            "rss.before": f"handler process RSS after {RSS_WARMUP:,} messages",
            "rss.after": f"handler process RSS after {count:,} more",
            "rss.growth": f"handler process RSS growth over {count:,} messages",
        }
        for key, label in labels.items():
            rows.row(key, section, label, "MB")
        rows.row("rss.rate", section, f"handler rate over those {count:,}", "msg/s")
        rows.row("memory.delta", section, f"memory:// RSS growth holding {held:,} messages", "MB")
        rows.row("memory.each", section, "memory:// bytes per message held", "B")
        tube = self.tube("rss")
        self.prefill(tube, RSS_WARMUP + count)
        marks = rss.handler_rss(self.url, tube, warmup=RSS_WARMUP, count=count)
        self.check_empty(tube)
        for key in ("start", "before", "after"):
            rows.add(f"rss.{key}", marks[f"{key}_kib"] * 1024 / 1e6)
        rows.add("rss.growth", (marks["after_kib"] - marks["before_kib"]) * 1024 / 1e6)
        rows.add("rss.rate", count / marks["seconds"])
        marks = rss.memory_backend_rss(held)
        grown = (marks["after_kib"] - marks["before_kib"]) * 1024
        rows.add("memory.delta", grown / 1e6)
        rows.add("memory.each", grown / held)

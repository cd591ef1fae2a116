"""The frameworks the peers section compares: how each enqueues a no-op job, runs its worker.

A :class:`Peer` fills in a few hooks (a context that enqueues, the worker's
command line, the jobs left); :class:`bench.peers.Peers` does the timing, the
same way for every one. RQ, dramatiq and Celery are imported only when they
run, so that the benchmark runs without them.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import greenstalk

from queue_beanstalk import Message

from .cases import Bench
from .redis_server import RedisServer

__all__ = ["PEERS", "Peer", "note"]

#: The queue each Redis peer uses; Redis is flushed before every run.
QUEUE = "bench"


class Peer(ABC):
    """One framework: how to enqueue a no-op job, how to start its worker, what is left.

    :param bench: the benchmark, for its beanstalkd.
    :param redis: the section's Redis, or None when it could not be started.
    """

    #: Row keys and printed names.
    key: ClassVar[str]
    name: ClassVar[str]
    #: How the worker is run, for the row's label.
    runs: ClassVar[str]
    #: Modules without which the peer is skipped.
    needs: ClassVar[tuple[str, ...]] = ("redis",)
    #: Whether the worker exits by itself once the queue is empty (a burst mode).
    exits: ClassVar[bool] = False
    #: Whether it keeps its jobs in Redis (else in beanstalkd).
    on_redis: ClassVar[bool] = True
    #: Whether its enqueue is its own, to compare with (RQ SimpleWorker's is RQ's).
    own_enqueue: ClassVar[bool] = True

    def __init__(self, bench: Bench, redis: RedisServer | None) -> None:
        self.bench = bench
        self.redis = redis

    @classmethod
    def uninstalled(cls) -> str | None:
        """Return the first module the peer needs that is not installed, or None."""
        for module in cls.needs:
            if importlib.util.find_spec(module) is None:
                return module
        return None

    def missing(self) -> str | None:
        """Return why the peer cannot run here, or None."""
        module = self.uninstalled()
        if module is not None:
            return f"{module} not installed (bash bench/peers_setup.sh)"
        if self.on_redis and self.redis is None:
            return "no redis-server (bash bench/peers_setup.sh)"
        return None

    @property
    def redis_url(self) -> str:
        """The Redis every Redis peer's client and worker use."""
        if self.redis is None:
            raise RuntimeError(f"{self.name} needs Redis")
        return self.redis.url

    @abstractmethod
    def sending(self) -> contextlib.AbstractContextManager[Callable[[str], object]]:
        """Return a context giving a function that enqueues one no-op job, its argument a path.

        Its connections are closed on leaving it.
        """

    @abstractmethod
    def worker(self) -> list[str]:
        """Return the worker's command line (run from the repository root)."""

    @abstractmethod
    def left(self) -> int:
        """Return how many jobs are not done, once the worker has stopped."""


class QueueBeanstalk(Peer):
    """queue_beanstalk: ``Queue.put``, and ``queue-beanstalk worker --burst``."""

    key = "queue_beanstalk"
    name = "queue_beanstalk"
    runs = "queue-beanstalk worker --burst"
    needs = ()
    exits = True
    on_redis = False

    def __init__(self, bench: Bench, redis: RedisServer | None) -> None:
        super().__init__(bench, redis)
        self._tube = ""

    @contextlib.contextmanager
    def sending(self) -> Iterator[Callable[[str], object]]:
        self._tube = self.bench.tube("peer")
        with self.bench.factory() as queues:
            put = queues.get(self._tube).put
            yield lambda path: put(Message("noop", [path]))

    def worker(self) -> list[str]:
        return [
            *(sys.executable, "-m", "queue_beanstalk", "worker", "bench.peer_tasks:handle"),
            *("--queue", self._tube, "--url", self.bench.url, "--burst", "--log-level", "WARNING"),
        ]

    def left(self) -> int:
        with greenstalk.Client(self.bench.address, encoding=None) as conn:
            try:
                stats = conn.stats_tube(self._tube)
            except greenstalk.NotFoundError:
                return 0
        return sum(int(stats[field]) for field in ("current-jobs-ready", "current-jobs-reserved"))


class Rq(Peer):
    """RQ: ``Queue.enqueue``, and ``rq worker --burst``, which forks a child for every job."""

    key = "rq"
    name = "RQ"
    runs = "rq worker --burst"
    needs = ("redis", "rq")
    exits = True
    worker_class: ClassVar[str | None] = None

    @contextlib.contextmanager
    def sending(self) -> Iterator[Callable[[str], object]]:
        redis, rq = importlib.import_module("redis"), importlib.import_module("rq")
        noop = importlib.import_module("bench.peer_tasks").noop
        with redis.Redis.from_url(self.redis_url) as connection:
            enqueue = rq.Queue(QUEUE, connection=connection).enqueue
            yield lambda path: enqueue(noop, path)

    def worker(self) -> list[str]:
        command = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", self.redis_url]
        if self.worker_class is not None:
            command += ["--worker-class", self.worker_class]
        return [*command, "--logging_level", "WARNING", QUEUE]

    def left(self) -> int:
        redis, rq = importlib.import_module("redis"), importlib.import_module("rq")
        with redis.Redis.from_url(self.redis_url) as connection:
            return int(rq.Queue(QUEUE, connection=connection).count)


class RqSimple(Rq):
    """RQ with ``SimpleWorker``, which runs every job in the worker process itself."""

    key = "rq_simple"
    name = "RQ SimpleWorker"
    runs = "rq worker --burst --worker-class rq.worker.SimpleWorker"
    worker_class = "rq.worker.SimpleWorker"
    own_enqueue = False


class Dramatiq(Peer):
    """dramatiq: ``actor.send``, and ``dramatiq --processes 1 --threads 1``."""

    key = "dramatiq"
    name = "dramatiq"
    runs = "dramatiq --processes 1 --threads 1"
    needs = ("redis", "dramatiq")

    @contextlib.contextmanager
    def sending(self) -> Iterator[Callable[[str], object]]:
        # The broker is the app module's, kept for the next run.
        yield _app("dramatiq_app", self.redis_url).noop.send

    def worker(self) -> list[str]:
        return [
            *(sys.executable, "-m", "dramatiq", "--processes", "1", "--threads", "1"),
            "bench.peer_tasks.dramatiq_app",
        ]

    def left(self) -> int:
        return int(_app("dramatiq_app", self.redis_url).broker.do_qsize(QUEUE))


class Celery(Peer):
    """Celery: ``task.delay``, and ``celery worker --pool solo --concurrency 1``."""

    key = "celery"
    name = "Celery"
    runs = "celery worker --pool solo --concurrency 1"
    needs = ("redis", "celery")

    @contextlib.contextmanager
    def sending(self) -> Iterator[Callable[[str], object]]:
        # The connection pool is the app module's, kept for the next run.
        yield _app("celery_app", self.redis_url).noop.delay

    def worker(self) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", "bench.peer_tasks.celery_app", "worker"),
            *("--pool", "solo", "--concurrency", "1", "--loglevel", "WARNING"),
        ]

    def left(self) -> int:
        if self.redis is None:
            raise RuntimeError("Celery needs Redis")
        # The queue's list, and the messages taken but not acknowledged.
        return int(self.redis.command("LLEN", "celery")) + int(
            self.redis.command("HLEN", "unacked")
        )


PEERS: tuple[type[Peer], ...] = (Rq, RqSimple, Dramatiq, Celery, QueueBeanstalk)

#: What each peer does for a job beyond what queue_beanstalk does, printed under the table.
WHAT_THEY_DO = (
    "What they do per job beyond queue_beanstalk, which sends one `put` with a short JSON "
    "body and whose worker sends one `reserve` and one `delete` (the delete in the same "
    "write as the next reserve); the server commands counted below say the same in numbers. "
    "**RQ** stores each call as a job hash of 15 fields (the call pickled and compressed, "
    "status, times, timeout, description), written with the queue push in one MULTI; its "
    "default worker forks a work-horse process for every job, moves the job through the "
    "started and finished registries with heartbeats, and keeps its result for 500 s; "
    "`SimpleWorker` runs the job in the worker process and does the rest. "
    "**dramatiq** sends a JSON message with ids and a timestamp of its own through a Lua "
    "script that also stamps a heartbeat, as fetching and acknowledging do; its worker at "
    "one thread prefetches 2 messages and its consumer thread sleeps (a backoff of a few "
    "ms) whenever both are still in hand, which caps one thread (its default is 8 threads "
    "a process); middleware (age and time limits, retries, callbacks, pipelines) runs "
    "around each message. "
    "**Celery** pushes a message of about 1 kB per task (19 headers: id, task name, ETA, "
    "expiry, retries, root and parent ids, argument reprs, ...; the body base64-encoded "
    "JSON); its worker prefetches 4, keeps each message in an `unacked` hash until it is "
    "acknowledged (by default before the task runs), and runs an event loop with remote "
    "control; at start-up it gathers with the other workers. "
    "That buys what queue_beanstalk leaves to beanstalkd or does not have (stored "
    "results, registries, a process per job, middleware, remote control): these rows "
    "measure what a no-op job costs in each, not what each is for."
)


def note() -> str:
    """Return the paragraph printed under the peers' table: the workers run, what peers do."""
    workers = "; ".join(f"{kind.name}: `{kind.runs}`" for kind in PEERS)
    return f"Workers, each at log level WARNING: {workers}. {WHAT_THEY_DO}"


def _app(module: str, redis_url: str) -> Any:
    """Import a framework's app module from bench.peer_tasks, its broker on ``redis_url``.

    The module reads the URL from the environment when it is first imported,
    as the worker processes do.
    """
    os.environ["BENCH_REDIS_URL"] = redis_url
    return importlib.import_module(f"bench.peer_tasks.{module}")

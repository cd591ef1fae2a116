"""Metrics: what a handler did, per queue, and a Prometheus endpoint built on it.

Every handler keeps counts as it goes (:class:`Tally`, thread-safe), and
:meth:`Handler.stats` returns a snapshot of them, a :class:`HandlerStats`:
no round trip, no extra package, for any process that runs a handler.

The outcomes counted, per queue:

``deleted``, ``released``, ``buried``
    what the handler settled a message as. Each message the handler settles
    counts once, in exactly one of the three, when the handler takes it over
    to settle (a settle the server then refuses is logged, and still counted):
    ``deleted``, the function returned; ``released``, a failure with tries
    left, a :class:`~queue_beanstalk.Retry`, or a message handed back
    unstarted as the handler stopped; ``buried``, a failure on its last try, a
    :class:`~queue_beanstalk.Bury`, or a body the codec cannot read. A message
    the function settled itself (``Queue.delete(message)``, ...) is not counted.
``failed``, ``retried``
    calls of the function that raised: ``failed`` anything but ``Retry`` and
    ``Bury`` (each is then ``released`` or ``buried`` too), ``retried`` a
    ``Retry`` (each then ``released`` too).

Every call of the function is timed (``time.perf_counter``), whatever it
raised, into the buckets of :data:`DURATION_BUCKETS`. Counts start at zero
when the handler is made and go on across its stops and starts.

Prometheus, with the optional ``prometheus_client`` (``pip install
'queue_beanstalk[metrics]'``), imported only when used: :class:`HandlerCollector`
exposes the counts, and reads the queues' own counts at each scrape;
:func:`serve` runs the endpoint the worker command's ``--metrics-port`` serves.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import QueueError
from .retries import Bury, Outcome, Retry

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
    from prometheus_client.metrics_core import Metric

    from .handler import Handler
    from .queue_factory import QueueFactory

__all__ = [
    "DURATION_BUCKETS",
    "INSTALL_HINT",
    "OUTCOMES",
    "Durations",
    "HandlerCollector",
    "HandlerStats",
    "MetricsServer",
    "MetricsUnavailable",
    "serve",
]

logger = logging.getLogger("queue_beanstalk")

#: The outcomes counted for each queue; see the module's docstring.
OUTCOMES = ("deleted", "released", "buried", "failed", "retried")
#: Upper bounds, in seconds, of the buckets calls are timed into (then +Inf).
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
#: What to install for the Prometheus endpoint.
INSTALL_HINT = "pip install 'queue_beanstalk[metrics]'"
#: The outcome each settle counts as (``Outcome.done``, looked up faster).
_DONE = {outcome: outcome.done for outcome in Outcome}
#: The states whose message counts are read from the server at each scrape.
_STATES = ("ready", "delayed", "reserved", "buried")


class MetricsUnavailable(ImportError):
    """The ``prometheus_client`` package is not installed; the message says how to get it."""


@dataclass(frozen=True)
class Durations:
    """How long a queue's calls of the function took, in seconds, as a histogram."""

    #: Calls timed.
    count: int
    #: Their seconds, added up.
    sum: float
    #: ``(upper bound, calls that took at most that long)`` for each of
    #: :data:`DURATION_BUCKETS`, then ``(math.inf, count)``: cumulative, as Prometheus has them.
    buckets: tuple[tuple[float, int], ...]


@dataclass(frozen=True)
class HandlerStats:
    """A snapshot of a handler's counts, from :meth:`Handler.stats`; see the module for each."""

    #: Counts by queue, then by outcome (every one of :data:`OUTCOMES`, zeros included).
    messages: Mapping[str, Mapping[str, int]]
    #: Call durations by queue.
    durations: Mapping[str, Durations]


class _Counts:
    """One queue's counts: by outcome; and call durations, per bucket (not cumulative), summed."""

    __slots__ = ("buckets", "outcomes", "sum")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def durations(self) -> Durations:
        """Return the durations as a histogram, its buckets cumulative."""
        running, cumulative = 0, []
        for bound, count in zip((*DURATION_BUCKETS, math.inf), self.buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        return Durations(running, self.sum, tuple(cumulative))


class Tally:
    """A handler's counts and call durations, per queue, kept as they happen.

    Thread-safe: every worker thread of a handler adds to one tally, under one
    lock held for a few additions; a handled message costs one acquire.

    :param queues: the queues counted from the start (zeros); others are added when seen.
    """

    def __init__(self, queues: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._queues = defaultdict(_Counts, {queue: _Counts() for queue in queues})

    def settled(self, queue: str, outcome: Outcome) -> None:
        """Count a message the handler is settling as ``outcome``."""
        with self._lock:
            self._queues[queue].outcomes[_DONE[outcome]] += 1

    def called(
        self,
        queue: str,
        started: float,
        error: BaseException | None = None,
        *,
        deleted: bool = False,
    ) -> None:
        """Count a call of the function that has just ended, and what it raised.

        :param started: ``time.perf_counter()`` as the call began.
        :param error: what the call raised; None when it returned.
        :param deleted: count its message as deleted too (one acquire, not two,
            for the common case).
        """
        seconds = time.perf_counter() - started
        bucket = bisect.bisect_left(DURATION_BUCKETS, seconds)
        raised = None if error is None else _counted_as(error)
        with self._lock:
            counts = self._queues[queue]
            counts.buckets[bucket] += 1
            counts.sum += seconds
            if raised is not None:
                counts.outcomes[raised] += 1
            if deleted:
                counts.outcomes["deleted"] += 1

    def snapshot(self) -> HandlerStats:
        """Return the counts so far, copied."""
        with self._lock:
            messages = {queue: dict(counts.outcomes) for queue, counts in self._queues.items()}
            durations = {queue: counts.durations() for queue, counts in self._queues.items()}
        return HandlerStats(messages, durations)


def _counted_as(error: BaseException) -> str | None:
    """Return the outcome a call that raised ``error`` counts as, besides its message's."""
    if isinstance(error, Retry):
        return "retried"
    return None if isinstance(error, Bury) else "failed"


def _le(bound: float) -> str:
    """Return a bucket's upper bound as Prometheus writes it: ``0.5``, ``1.0``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else repr(bound)


def _require() -> None:
    """Import ``prometheus_client``, to say now, and how to get it, if it is not installed.

    :raises MetricsUnavailable: when it is not installed.
    """
    try:
        import prometheus_client  # noqa: F401 - imported to see that it can be
    except ImportError as exc:
        raise MetricsUnavailable(
            f"the metrics need the prometheus_client package: {INSTALL_HINT}"
        ) from exc


def _combined(handlers: tuple[Handler, ...]) -> HandlerStats:
    """Return the handlers' counts added up, queue by queue."""
    messages: dict[str, dict[str, int]] = {}
    sums: dict[str, tuple[list[int], float]] = {}
    for handler in handlers:
        stats = handler.stats()
        for queue, counts in stats.messages.items():
            total = messages.setdefault(queue, dict.fromkeys(OUTCOMES, 0))
            for outcome, count in counts.items():
                total[outcome] += count
        for queue, durations in stats.durations.items():
            buckets, seconds = sums.get(queue, ([0] * len(durations.buckets), 0.0))
            for index, (_, count) in enumerate(durations.buckets):
                buckets[index] += count
            sums[queue] = (buckets, seconds + durations.sum)
    bounds = (*DURATION_BUCKETS, math.inf)
    return HandlerStats(
        messages,
        {
            queue: Durations(buckets[-1], seconds, tuple(zip(bounds, buckets, strict=True)))
            for queue, (buckets, seconds) in sums.items()
        },
    )


class HandlerCollector:
    """A Prometheus collector of handlers' counts and, read at each scrape, their queues' counts.

    Register it where the handlers run (several handlers are added up)::

        from prometheus_client import REGISTRY
        REGISTRY.register(HandlerCollector(queues, handler))

    It yields ``queue_beanstalk_messages_total{queue, outcome}`` and
    ``queue_beanstalk_handler_seconds{queue}``, then, read from the server at
    each scrape for each queue the handlers watch,
    ``queue_beanstalk_queue_messages{queue, state}`` (ready, delayed, reserved,
    buried) and ``queue_beanstalk_queue_next_ready_age_seconds{queue}``, and
    ``queue_beanstalk_up``. A scrape that cannot read the server reports
    ``queue_beanstalk_up 0`` and leaves the queue gauges out; the handlers'
    counts are always there. A scrape costs three round trips a queue.
    Thread-safe: scrapes may run at once.

    :param queues: the factory the handlers were made by: its server is read.
    :param handlers: the handlers to count.
    :raises MetricsUnavailable: when ``prometheus_client`` is not installed.
    """

    def __init__(self, queues: QueueFactory, *handlers: Handler) -> None:
        _require()
        self._queues = queues
        self._handlers = handlers
        self._names = tuple(dict.fromkeys(name for handler in handlers for name in handler.queues))

    def describe(self) -> Iterator[Metric]:
        """Yield the metrics without their samples, so that registering reads no server."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        """Yield the metrics, the queues' counts read from the server now."""
        messages, seconds, states, age, up = _families()
        stats = _combined(self._handlers)
        for queue, counts in stats.messages.items():
            for outcome, count in counts.items():
                messages.add_metric([queue, outcome], count)
        for queue, durations in stats.durations.items():
            buckets = [(_le(bound), count) for bound, count in durations.buckets]
            seconds.add_metric([queue], buckets, durations.sum)
        yield from (messages, seconds)
        try:
            read = [(name, *self._read(name)) for name in self._names]
        except QueueError as exc:
            logger.debug("metrics: could not read the queues' counts: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        for name, counts, next_age in read:
            for state in _STATES:
                states.add_metric([name, state], counts[state])
            age.add_metric([name], next_age)
        up.add_metric([], 1)
        yield from (states, age, up)

    def _read(self, name: str) -> tuple[dict[str, int], int]:
        """Return a queue's message counts by state, and the next ready message's age (or 0)."""
        queue = self._queues.get(name)
        stats = queue.stats()
        counts = {
            "ready": stats.ready,
            "delayed": stats.delayed,
            "reserved": stats.reserved,
            "buried": stats.buried,
        }
        peeked = queue.peek_ready()
        return counts, 0 if peeked is None else peeked.stats.age

    def __repr__(self) -> str:
        return f"queue_beanstalk.metrics.HandlerCollector(queues={self._names!r})"


def _families() -> tuple[
    CounterMetricFamily,
    HistogramMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
]:
    """Return the collector's metric families, without samples."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    return (
        CounterMetricFamily(
            "queue_beanstalk_messages",
            "Messages the handler settled, by outcome: deleted, released or buried (one of "
            "them each); and, besides, calls that raised: failed (an error), retried (Retry).",
            labels=["queue", "outcome"],
        ),
        HistogramMetricFamily(
            "queue_beanstalk_handler_seconds",
            "Seconds each call of the handler's function took, whatever it raised.",
            labels=["queue"],
        ),
        GaugeMetricFamily(
            "queue_beanstalk_queue_messages",
            "Messages in the queue by state, read from the server at the scrape.",
            labels=["queue", "state"],
        ),
        GaugeMetricFamily(
            "queue_beanstalk_queue_next_ready_age_seconds",
            "Whole seconds since the next ready message was put: the one a worker gets next, "
            "the most urgent (the oldest of equal priorities), not always the oldest; "
            "0 if none is ready.",
            labels=["queue"],
        ),
        GaugeMetricFamily(
            "queue_beanstalk_up",
            "1 if the queues' counts were read from the server at this scrape, else 0.",
        ),
    )


class MetricsServer:
    """The metrics endpoint :func:`serve` started, answering from a daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self._host = host

    @property
    def url(self) -> str:
        """The endpoint's URL, ``http://host:port/metrics``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._server.server_port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        """Stop answering and close the socket (a scrape in progress may be cut short)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"queue_beanstalk.metrics.MetricsServer(url={self.url!r})"


def serve(
    queues: QueueFactory, handler: Handler, port: int, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve Prometheus text at ``http://host:port/metrics``, from a daemon thread.

    The endpoint has the handler's metrics (:class:`HandlerCollector`) and
    ``prometheus_client``'s own of the process (CPU, memory, open files,
    garbage collection), in a registry of its own.

    :param port: the TCP port; 0 picks a free one (see :attr:`MetricsServer.url`).
    :param host: the address to listen on: loopback unless told otherwise.
    :raises MetricsUnavailable: when ``prometheus_client`` is not installed.
    :raises OSError: when the address cannot be listened on (a port in use).
    """
    _require()
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
        start_http_server,
    )

    registry = CollectorRegistry()
    registry.register(HandlerCollector(queues, handler))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    server, thread = start_http_server(port, host, registry=registry)
    return MetricsServer(server, thread, host)

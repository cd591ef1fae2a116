"""What each backend brings to the contract suite, and how backends legitimately differ."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import ClassVar

import greenstalk
import pytest

from queue_beanstalk import MemoryBackend, QueueFactory
from queue_beanstalk.backend import JobRef

from ..support import eventually

#: Put a body on a tube as another client would, and return where the job is.
RawPut = Callable[[str, bytes], JobRef]

#: How long a handler may take to drain a tube before the test fails, in seconds.
DRAIN_TIMEOUT = 20.0


class BackendCase(abc.ABC):
    """A backend as the contract suite sees it; a test class inherits one and the mixins.

    The conftest's ``queues`` and ``raw_put`` fixtures ask the ``backend_case``
    fixture below for the URL and the raw put, so inside a test class they are
    this backend's and nothing is parametrized.
    """

    #: Whether jobs live in a server of their own, which learns of a closed
    #: connection only when it reads the hang-up: what a closed consumer held
    #: is given back soon after, not at once.
    has_server: ClassVar[bool]
    #: Whether a job's time-to-run may go unnoticed while the connection holding
    #: it is idle (beanstalkd 1.12, its issue #380: about 1 run in 30 here, with
    #: greenstalk alone too); a test of that expiry then tries a few times.
    misses_idle_ttr: ClassVar[bool]
    #: Whether separate puts come out by priority, then in put order. One
    #: server orders its jobs; several servers each order their own, and
    #: nothing orders jobs across them (a put_many batch stays on one server).
    orders_across_puts: ClassVar[bool] = True

    @pytest.fixture
    def backend_case(self) -> BackendCase:
        """This backend, for the conftest fixtures built from it."""
        return self

    @abc.abstractmethod
    def url(self, request: pytest.FixtureRequest) -> str:
        """Return the URL to pass to ``factory()``, starting what it needs through ``request``."""

    @abc.abstractmethod
    def raw_put(self, queues: QueueFactory, request: pytest.FixtureRequest) -> RawPut:
        """Return a put of raw bytes, past the library's codec, as another client's would be."""

    @abc.abstractmethod
    def drain(self, queues: QueueFactory, *tubes: str, until: Callable[[], bool]) -> None:
        """Wait until a running handler has settled every job on ``tubes``, then check ``until``.

        ``until`` is what the test needs to hold once the tubes are drained;
        a backend that cannot tell when a tube is drained polls it instead.
        """


class MemoryCase(BackendCase):
    """memory://: one process, so a drain is a join, with nothing to poll."""

    has_server = False
    misses_idle_ttr = False

    def url(self, request: pytest.FixtureRequest) -> str:
        """Return ``memory://``."""
        return "memory://"

    def raw_put(self, queues: QueueFactory, request: pytest.FixtureRequest) -> RawPut:
        """Return a put straight into the backend, below the codec."""

        def put_memory(tube: str, body: bytes) -> JobRef:
            return queues.backend.put(tube, body, priority=0, delay=0, ttr=60)

        return put_memory

    def drain(self, queues: QueueFactory, *tubes: str, until: Callable[[], bool]) -> None:
        """Join each tube, then assert ``until``: it must hold by then."""
        backend = queues.backend
        assert isinstance(backend, MemoryBackend)
        for tube in tubes:
            backend.join(tube, DRAIN_TIMEOUT)
        assert until()


class BeanstalkdCase(BackendCase):
    """A real beanstalkd, started once for the session; another client is greenstalk."""

    has_server = True
    misses_idle_ttr = True

    def url(self, request: pytest.FixtureRequest) -> str:
        """Return the session's beanstalkd URL (the test is skipped when there is none)."""
        return str(request.getfixturevalue("beanstalkd_url"))

    def raw_put(self, queues: QueueFactory, request: pytest.FixtureRequest) -> RawPut:
        """Return a put through a greenstalk client of its own (on the first server of a list)."""
        address = self.url(request).removeprefix("beanstalk://").split(",")[0]
        host, port = address.split(":")

        def put_greenstalk(tube: str, body: bytes) -> JobRef:
            with greenstalk.Client((host, int(port)), encoding=None, use=tube) as client:
                return JobRef(client.put(body, priority=0), address)

        return put_greenstalk

    def drain(self, queues: QueueFactory, *tubes: str, until: Callable[[], bool]) -> None:
        """Poll until ``until`` holds: beanstalkd has no wait for an empty tube."""
        eventually(until, timeout=DRAIN_TIMEOUT)


class ServersCase(BeanstalkdCase):
    """Three real beanstalkd servers behind one URL; another client puts on the first."""

    orders_across_puts = False

    def url(self, request: pytest.FixtureRequest) -> str:
        """Return the session's three-server URL (the test is skipped when there is none)."""
        return str(request.getfixturevalue("beanstalkd_servers_url"))

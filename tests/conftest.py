"""Fixtures: a real beanstalkd for the whole session, and a factory per backend.

The server comes from testcontainers when a Docker engine answers, else from
the ``beanstalkd`` binary on a free loopback port. With CI=true a missing
beanstalkd fails the run instead of skipping the tests that need it.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import pytest

from queue_beanstalk import Handler, QueueFactory, factory
from queue_beanstalk.testing import BeanstalkdNotFound, BeanstalkdServer

from .contract.cases import BackendCase, RawPut
from .support import FakeBeanstalkd, Reply

BEANSTALKD_IMAGE = "schickling/beanstalkd:latest"


def _docker_answers() -> bool:
    # docker-py leaks its socket when the engine does not answer; collect it
    # here, with its ResourceWarning silenced, rather than in some later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker

            client = docker.from_env(timeout=3)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:  # noqa: BLE001 - any failure means "no usable engine"
            return False
        finally:
            gc.collect()


def _wait_accepting(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.fixture(scope="session")
def beanstalkd_url() -> Iterator[str]:
    """The URL of a beanstalkd started for this test session."""
    if _docker_answers():
        from testcontainers.core.container import DockerContainer

        with DockerContainer(BEANSTALKD_IMAGE).with_exposed_ports(11300) as container:
            host = container.get_container_host_ip()
            port = int(container.get_exposed_port(11300))
            _wait_accepting(host, port)
            yield f"beanstalk://{host}:{port}"
        return
    with _beanstalkd() as server:
        yield server.url


@pytest.fixture(scope="session")
def beanstalkd_servers_url() -> Iterator[str]:
    """The URL of three beanstalkd servers started for this test session, as one list."""
    with _beanstalkd() as first, _beanstalkd() as second, _beanstalkd() as third:
        yield "beanstalk://" + ",".join(
            f"{server.host}:{server.port}" for server in (first, second, third)
        )


def _beanstalkd() -> BeanstalkdServer:
    """Return a beanstalkd binary's server, to start with ``with``; fail or skip without one."""
    try:
        return BeanstalkdServer()
    except BeanstalkdNotFound as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true and no beanstalkd: {exc}")
        pytest.skip(str(exc))


@pytest.fixture
def server() -> Iterator[BeanstalkdServer]:
    """A beanstalkd of the test's own, to kill, stop and restart."""
    with BeanstalkdServer() as started:
        yield started


@pytest.fixture
def stopping() -> Iterator[list[Handler]]:
    """Handlers to stop and wait for after the test, whatever its outcome."""
    handlers: list[Handler] = []
    yield handlers
    for handler in handlers:
        if handler.running:
            handler.stop()
        assert handler.wait(10)


@pytest.fixture
def queues(backend_case: BackendCase, request: pytest.FixtureRequest) -> Iterator[QueueFactory]:
    """A QueueFactory on the backend of the test's contract class, closed after the test."""
    with factory(backend_case.url(request)) as made:
        yield made


@pytest.fixture
def tube() -> str:
    """A queue name no other test uses."""
    return f"test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def raw_put(
    backend_case: BackendCase, queues: QueueFactory, request: pytest.FixtureRequest
) -> RawPut:
    """Put a body as another client would, bypassing the library's codec."""
    return backend_case.raw_put(queues, request)


StartFake = Callable[[Mapping[bytes, Sequence[Reply]]], FakeBeanstalkd]


@pytest.fixture
def fake_beanstalkd() -> Iterator[StartFake]:
    """Start fake servers with ``fake_beanstalkd(replies)``; all stop after the test."""
    started: list[FakeBeanstalkd] = []

    def start(replies: Mapping[bytes, Sequence[Reply]]) -> FakeBeanstalkd:
        server = FakeBeanstalkd(replies)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()

"""factory(): URLs, options and their checks, the backend registry, connecting lazily.

What a factory's close and reprs do on every backend is in ``tests/contract/factory.py``.
"""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from urllib.parse import SplitResult

import pytest

from queue_beanstalk import (
    BeanstalkBackend,
    InvalidName,
    MemoryBackend,
    Message,
    QueueConnectionError,
    QueueError,
    QueueFactory,
    Timeout,
    factory,
    queue_factory,
    register_backend,
)
from queue_beanstalk.testing import free_port

from .support import ref

URL_VARIABLE = "QUEUE_BEANSTALK_URL"


def beanstalk_backend(queues: QueueFactory) -> BeanstalkBackend:
    backend = queues.backend
    assert isinstance(backend, BeanstalkBackend)
    return backend


def put_and_stats(queues: QueueFactory) -> tuple[int, int]:
    """Put a message with the factory's defaults; return its (priority, ttr)."""
    message = Message("x")
    queues.get("jobs").put(message)
    stats = queues.backend.stats_job(ref(message))
    return stats.priority, stats.ttr


def test_memory_url() -> None:
    with factory("memory://") as queues:
        assert isinstance(queues.backend, MemoryBackend)
        queue = queues.get("jobs")
        queue.put(Message("x", ["a"]))
        assert queue.get(timeout=0) == Message("x", ["a"])


def test_two_memory_factories_share_nothing() -> None:
    with factory("memory://") as first, factory("memory://") as second:
        first.get("jobs").put(Message("x"))
        assert second.backend.max_job_size() == first.backend.max_job_size()
        with pytest.raises(Timeout):
            second.get("jobs").get(timeout=0)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("beanstalk://host", "host:11300"),
        ("beanstalk://host:1234", "host:1234"),
        ("beanstalk://host/", "host:11300"),
        ("BEANSTALK://host", "host:11300"),
        ("beanstalk://10.0.0.1:11301", "10.0.0.1:11301"),
    ],
)
def test_beanstalk_url(url: str, address: str) -> None:
    with factory(url) as queues:
        assert beanstalk_backend(queues).address == address


def test_no_url_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VARIABLE, "beanstalk://from-env:1234")
    with factory() as queues:
        assert beanstalk_backend(queues).address == "from-env:1234"
    monkeypatch.setenv(URL_VARIABLE, "memory://")
    with factory() as queues:
        assert isinstance(queues.backend, MemoryBackend)


def test_an_explicit_url_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_VARIABLE, "beanstalk://from-env:1234")
    with factory("memory://") as queues:
        assert isinstance(queues.backend, MemoryBackend)


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_no_url_and_no_environment_means_local_beanstalkd(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv(URL_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(URL_VARIABLE, value)
    with factory() as queues:
        assert beanstalk_backend(queues).address == "127.0.0.1:11300"


def test_defaults_of_a_put_message() -> None:
    with factory("memory://") as queues:
        assert put_and_stats(queues) == (1024, 120)


@pytest.mark.parametrize(
    ("url", "options", "expected"),
    [
        ("memory://?ttr=60&priority=10", {}, (10, 60)),
        ("memory://", {"ttr": 60, "priority": 10}, (10, 60)),
        ("memory://?ttr=60&priority=10", {"priority": 5}, (5, 60)),
        ("memory://?ttr=60&priority=10", {"ttr": 30, "priority": 0}, (0, 30)),
        ("memory://?ttr=0.5", {}, (1024, 1)),
        ("memory://", {"ttr": 59.1}, (1024, 60)),
    ],
    ids=["query", "keywords", "keyword-wins", "keywords-win", "ttr-rounds-up", "float-ttr"],
)
def test_options_are_applied(
    url: str, options: Mapping[str, object], expected: tuple[int, int]
) -> None:
    with factory(url, **options) as queues:
        assert put_and_stats(queues) == expected


def test_backend_options_are_applied() -> None:
    with factory("memory://?max_job_size=100") as queues:
        assert queues.backend.max_job_size() == 100
    with factory("memory://?max_job_size=100", max_job_size=200) as queues:
        assert queues.backend.max_job_size() == 200


def test_beanstalk_options_are_accepted() -> None:
    url = "beanstalk://host?connect_timeout=1.5&timeout=2&max_idle=0"
    with factory(url) as queues:
        assert beanstalk_backend(queues).address == "host:11300"
    with factory("beanstalk://host", connect_timeout=1, timeout=0.5, max_idle=4) as queues:
        assert beanstalk_backend(queues).address == "host:11300"


@pytest.mark.parametrize("url", ["redis://host", "beanstalkd://host", "", "127.0.0.1:11300"])
def test_an_unknown_scheme_lists_the_known_ones(url: str) -> None:
    with pytest.raises(ValueError, match="unknown queue URL scheme") as excinfo:
        factory(url)
    assert "beanstalk://" in str(excinfo.value)
    assert "memory://" in str(excinfo.value)


@pytest.mark.parametrize(
    ("url", "options", "name"),
    [
        ("memory://?bogus=1", {}, "bogus"),
        ("memory://", {"bogus": 1}, "bogus"),
        ("memory://", {"timeout": 1}, "timeout"),
        ("beanstalk://host", {"max_job_size": 10}, "max_job_size"),
        ("beanstalk://host?delay=1", {}, "delay"),
    ],
)
def test_an_unknown_option_is_named(url: str, options: Mapping[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=f"unknown option.*{name}"):
        factory(url, **options)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("memory://", {"priority": -1}),
        ("memory://?priority=-1", {}),
        ("memory://", {"priority": 2**32}),
        ("memory://", {"priority": "x"}),
        ("memory://?priority=x", {}),
        ("memory://", {"priority": 1.5}),
        ("memory://", {"priority": True}),
        ("memory://", {"ttr": 0}),
        ("memory://?ttr=0", {}),
        ("memory://", {"ttr": -1}),
        ("memory://?ttr=-1", {}),
        ("memory://?ttr=", {}),
        ("memory://?ttr=nan", {}),
        ("memory://", {"ttr": "soon"}),
        ("memory://", {"max_job_size": 0}),
        ("beanstalk://host", {"timeout": 0}),
        ("beanstalk://host?timeout=0", {}),
        ("beanstalk://host", {"timeout": -1}),
        ("beanstalk://host", {"connect_timeout": 0}),
        ("beanstalk://host?max_idle=-1", {}),
        ("beanstalk://host:99999", {}),
        ("beanstalk://host/path", {}),
        ("memory://host", {}),
    ],
    ids=repr,
)
def test_a_bad_value_is_refused(url: str, options: Mapping[str, object]) -> None:
    with pytest.raises((ValueError, TypeError)):
        factory(url, **options)


def test_a_query_option_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'ttr' is given twice"):
        factory("memory://?ttr=1&ttr=2")


class CustomBackend(MemoryBackend):
    """A backend registered by a test."""

    built_from: SplitResult | None = None

    @classmethod
    def from_url(cls, url: SplitResult, options: Mapping[str, object]) -> MemoryBackend:
        backend = cls()
        backend.built_from = url
        return backend


def test_a_registered_backend_is_built_for_its_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    # The registry has no unregister: the test registers into a copy, put back
    # afterwards, so no later test sees the scheme among the known ones.
    monkeypatch.setattr(queue_factory, "_BACKENDS", dict(queue_factory._BACKENDS))
    scheme = f"custom{uuid.uuid4().hex[:8]}"
    register_backend(scheme, CustomBackend)
    with factory(f"{scheme}://anywhere/at-all") as queues:
        backend = queues.backend
        assert isinstance(backend, CustomBackend)
        assert backend.built_from is not None
        assert backend.built_from.netloc == "anywhere"
        queue = queues.get("jobs")
        queue.put(Message("x"))
        assert queue.get(timeout=0) == Message("x")
    with pytest.raises(ValueError, match="unknown queue URL scheme") as excinfo:
        factory("nosuchscheme://x")
    assert f"{scheme}://" in str(excinfo.value)


@pytest.mark.parametrize("backend", [int, Exception, object(), "memory", None], ids=repr)
def test_registering_a_non_backend_is_refused(backend: object) -> None:
    with pytest.raises(TypeError, match="Backend subclass"):
        register_backend(f"bad{uuid.uuid4().hex[:8]}", backend)  # type: ignore[arg-type]


def test_making_a_factory_and_a_queue_does_not_connect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with factory(f"beanstalk://127.0.0.1:{port}") as queues:
            queues.get("jobs")
            readable, _, _ = select.select([listener], [], [], 0.2)
            assert readable == [], "a connection was opened before the first command"


@pytest.mark.timeout(10)
def test_the_first_put_to_a_closed_port_raises_a_connection_error() -> None:
    port = free_port()
    with factory(f"beanstalk://127.0.0.1:{port}") as queues:
        queue = queues.get("jobs")
        started = time.monotonic()
        with pytest.raises(QueueConnectionError) as excinfo:
            queue.put(Message("x"))
        assert time.monotonic() - started < 2.0
    error = excinfo.value
    assert isinstance(error, ConnectionError)
    assert f"127.0.0.1:{port}" in str(error)
    assert error.address == f"127.0.0.1:{port}"
    assert error.__cause__ is not None


@pytest.mark.parametrize("name", ["", "-starts-with-dash", "has space", "é", "x" * 201])
def test_a_bad_queue_name_is_refused_before_connecting(name: str) -> None:
    with factory(f"beanstalk://127.0.0.1:{free_port()}") as queues, pytest.raises(InvalidName):
        queues.get(name)


def test_a_non_str_queue_name_is_refused() -> None:
    with factory("memory://") as queues, pytest.raises(InvalidName):
        queues.get(1)  # type: ignore[arg-type]


def test_after_close_a_put_to_a_closed_port_does_not_connect() -> None:
    queues = factory(f"beanstalk://127.0.0.1:{free_port()}")
    queues.close()
    with pytest.raises(QueueError, match="closed") as excinfo:
        queues.get("jobs").put(Message("x"))
    assert not isinstance(excinfo.value, QueueConnectionError)


def test_importing_the_library_imports_no_backend() -> None:
    code = (
        "import sys, queue_beanstalk\n"
        "loaded = [m for m in sys.modules if m.startswith('queue_beanstalk.backends.')]\n"
        "assert not loaded, loaded\n"
        "queue_beanstalk.factory('memory://')\n"
        "assert 'queue_beanstalk.backends.memory' in sys.modules\n"
        "assert 'queue_beanstalk.backends.beanstalk' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_backend_registered_by_name_is_imported_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queue_factory, "_BACKENDS", dict(queue_factory._BACKENDS))
    scheme = f"named{uuid.uuid4().hex[:8]}"
    register_backend(scheme, f"{__name__}:CustomBackend")
    with factory(f"{scheme}://host") as queues:
        assert isinstance(queues.backend, CustomBackend)
    register_backend(
        scheme, f"{__name__}:test_a_backend_registered_by_name_is_imported_on_first_use"
    )
    with pytest.raises(TypeError, match="not a Backend subclass"):
        factory(f"{scheme}://host")
    register_backend(scheme, "no_such_module_here:Backend")
    with pytest.raises(ValueError, match="cannot be had"):
        factory(f"{scheme}://host")

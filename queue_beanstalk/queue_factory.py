"""QueueFactory (tsuru's QFactory), the ``factory()`` URL entry point and the backend registry."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .backend import Backend
from .checks import (
    Seconds,
    check_count,
    check_handler_function,
    check_name,
    check_priority,
    check_ttr,
    from_text,
    positive_seconds,
    whole_seconds,
)
from .codec import Codec, JsonCodec
from .gob import AutoCodec, GobCodec
from .handler import Handler
from .message import Received
from .queues import Queue
from .retries import RetryDelay, exponential_backoff

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "DEFAULT_URL",
    "URL_ENVIRONMENT_VARIABLE",
    "QueueFactory",
    "factory",
    "register_backend",
]

#: The URL used when ``factory()`` gets none and the environment sets none.
DEFAULT_URL = "beanstalk://127.0.0.1:11300"
#: The environment variable ``factory()`` reads when it gets no URL.
URL_ENVIRONMENT_VARIABLE = "QUEUE_BEANSTALK_URL"
#: Default time-to-run of a put message, in seconds.
DEFAULT_TTR = 120
#: Default number of tries before a handler buries a failing message.
DEFAULT_MAX_ATTEMPTS = 5
#: Default priority of a put message: beanstalkd's first non-"urgent" value.
DEFAULT_PRIORITY = 1024

#: The most messages a handler worker may prefetch (``handler(prefetch=)``).
MAX_PREFETCH = 1000

# Codecs by name, for ``codec=`` as a string: each name makes a fresh codec.
_CODECS: dict[str, Callable[[], Codec]] = {
    "json": JsonCodec,
    "gob": GobCodec,
    "auto": AutoCodec,  # reads JSON and gob, writes JSON
    "auto:gob": lambda: AutoCodec(encode="gob"),  # reads JSON and gob, writes gob
}
_FACTORY_OPTIONS = frozenset({"codec", "priority", "ttr"})
# Backends by URL scheme: a class, or its "package.module:Class" name, imported
# when a URL of that scheme is first used, so that importing the library does
# not import every backend (kombu's transport registry).
_BACKENDS: dict[str, type[Backend] | str] = {
    "beanstalk": "queue_beanstalk.backends.beanstalk:BeanstalkBackend",
    "memory": "queue_beanstalk.backends.memory:MemoryBackend",
}
_registry_lock = threading.Lock()


class QueueFactory:
    """Gives queues and handlers that share one backend and its defaults.

    Thread-safe. Making a factory or a queue does not connect: connections open
    on first use, so both can be made while the server is still down. Close it
    (or use it as a context manager) to close its connections.

    :param backend: where the jobs live.
    :param codec: turns messages into bytes and back; JSON by default.
    :param priority: default priority of put messages (0 most urgent).
    :param ttr: default time-to-run of put messages, in seconds (rounded up).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        codec: Codec | None = None,
        priority: int = DEFAULT_PRIORITY,
        ttr: Seconds = DEFAULT_TTR,
    ) -> None:
        if codec is not None and not isinstance(codec, Codec):
            raise TypeError(f"codec must be a Codec, not {type(codec).__name__}")
        self._backend = backend
        self._codec = codec if codec is not None else JsonCodec()
        self._priority = check_priority(priority)
        self._ttr = check_ttr(ttr)

    @property
    def backend(self) -> Backend:
        """The backend the factory's queues use."""
        return self._backend

    @property
    def codec(self) -> Codec:
        """The codec the factory's queues use."""
        return self._codec

    def get(self, name: str) -> Queue:
        """Return the queue called ``name`` (no round trip).

        :raises InvalidName: when beanstalkd would refuse ``name`` as a tube name.
        """
        return Queue(
            check_name(name), self._backend, self._codec, priority=self._priority, ttr=self._ttr
        )

    def handler(
        self,
        func: Callable[[Received], object],
        *names: str,
        concurrency: int = 1,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delay: RetryDelay = exponential_backoff,
        burst: bool = False,
        time_limit: Seconds | None = None,
        prefetch: int = 1,
    ) -> Handler:
        """Return a handler calling ``func(message)`` for every message on the named queues.

        Nothing runs until :meth:`Handler.start`. See :mod:`queue_beanstalk.handler`
        for what happens to each message.

        :param func: called with each message, in a worker thread; ``message.queue``
            names the queue it came from.
        :param names: the queues to watch (at least one).
        :param concurrency: worker threads, each with its own connection: at most
            this many calls run at once, and no more messages are reserved.
        :param max_attempts: tries before a failing message is buried.
        :param retry_delay: seconds before a failed message is tried again, or a
            function of the attempt number (1, 2, ...) giving seconds; by default
            1, 2, 4 ... seconds, at most 300.
        :param time_limit: seconds a call may run before its message is given
            back to the server for another try (the call itself cannot be
            stopped: it runs on, and what it returns is ignored); None: no limit.
        :param burst: stop by itself, as if ``stop()`` were called, once no
            message is ready on the queues and none is in flight (a delayed
            message is not ready); ``wait()`` then returns.
        :param prefetch: messages each worker reserves at once, at most (1 to
            :data:`MAX_PREFETCH`): it takes up to this many that are ready in
            one round trip, runs them in order, and sends their deletes with its
            next reserves. Messages waiting their turn stay reserved (touched as
            needed), and are released at once by ``stop()``; those of a worker
            killed outright go back when the server sees its connection close
            (or, if its machine vanished, when their time-to-run ends). Worth
            it for many short calls; for long calls or few messages, keep 1, so
            that idle workers elsewhere get the messages.
        :raises TypeError: when ``func`` is not callable, or is an ``async def``
            function (handlers run functions in threads and await nothing).
        :raises InvalidName: for a queue name beanstalkd would refuse.
        :raises ValueError: for no names, or a count out of range.
        """
        if check_count(prefetch, "prefetch", 1) > MAX_PREFETCH:
            raise ValueError(f"prefetch must be at most {MAX_PREFETCH}, not {prefetch}")
        check_handler_function(func)
        if not names:
            raise ValueError("handler() needs at least one queue name")
        if not callable(retry_delay):
            whole_seconds(retry_delay, "retry_delay")
        return Handler(
            func,
            list(dict.fromkeys(check_name(name) for name in names)),
            self._backend,
            self._codec,
            priority=self._priority,
            concurrency=check_count(concurrency, "concurrency", 1),
            max_attempts=check_count(max_attempts, "max_attempts", 1),
            retry_delay=retry_delay,
            burst=burst,
            time_limit=None if time_limit is None else positive_seconds(time_limit, "time_limit"),
            prefetch=prefetch,
        )

    def queues(self) -> list[str]:
        """Return the names of the queues the server (or servers) have, sorted.

        beanstalkd keeps a queue while it holds messages or a connection uses
        or watches it, and always has ``default``.
        """
        return self._backend.tubes()

    def close(self) -> None:
        """Close the backend's connections; messages still held go back to the server."""
        self._backend.close()

    def __enter__(self) -> QueueFactory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"queue_beanstalk.QueueFactory(backend={self._backend!r})"


def register_backend(scheme: str, backend: type[Backend] | str) -> None:
    """Make ``factory()`` build ``backend`` for URLs of ``scheme`` (tsuru's Register).

    :param backend: a :class:`Backend` subclass, or its ``"package.module:Class"``
        name, imported when a URL of ``scheme`` is first used.
    :raises TypeError: when ``backend`` is neither.
    """
    if isinstance(backend, str):
        module, sep, name = backend.partition(":")
        if not (sep and module and name):
            raise TypeError(
                f"backend must be a Backend subclass or its 'package.module:Class' name, "
                f"not {backend!r}"
            )
    elif not (isinstance(backend, type) and issubclass(backend, Backend)):
        raise TypeError(f"backend must be a Backend subclass, not {backend!r}")
    with _registry_lock:
        _BACKENDS[scheme.lower()] = backend


def _backend_class(scheme: str) -> type[Backend] | None:
    """Return the backend registered for ``scheme``, importing it on first use."""
    with _registry_lock:
        entry = _BACKENDS.get(scheme)
    if not isinstance(entry, str):
        return entry
    module, _, name = entry.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"the backend of {scheme}://, {entry!r}, cannot be had: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise TypeError(f"{entry!r}, registered for {scheme}://, is not a Backend subclass")
    with _registry_lock:
        if _BACKENDS.get(scheme) == entry:  # unless registered anew meanwhile
            _BACKENDS[scheme] = found
    return found


def factory(url: str | None = None, **options: object) -> QueueFactory:
    """Return a QueueFactory for ``url``, without connecting.

    :param url: ``beanstalk://host[:port]`` (port 11300 by default) or
        ``memory://``, optionally with options as a query
        (``beanstalk://q:11300?ttr=60&priority=10``). When None, the
        ``QUEUE_BEANSTALK_URL`` environment variable, else ``beanstalk://127.0.0.1:11300``.
    :param options: ``ttr`` (seconds), ``priority`` and ``codec`` (a :class:`Codec`,
        or ``"json"``, ``"gob"``, ``"auto"`` or ``"auto:gob"``: see
        :class:`~queue_beanstalk.AutoCodec`), plus the backend's own: for
        beanstalk, ``connect_timeout``, ``timeout``, ``max_idle``,
        ``max_connections`` and ``retry_for`` (see
        :class:`~queue_beanstalk.BeanstalkBackend`); for memory, ``max_job_size``.
        Keywords win over the URL query.
    :raises ValueError: for an unknown scheme (the message lists the known ones),
        an unknown option, or a value out of range.
    """
    if url is None:
        url = os.environ.get(URL_ENVIRONMENT_VARIABLE) or DEFAULT_URL
    parts = urlsplit(url)
    backend_class = _backend_class(parts.scheme.lower())
    if backend_class is None:
        with _registry_lock:
            known = sorted(_BACKENDS)
        raise ValueError(
            f"unknown queue URL scheme {parts.scheme!r} in {url!r}; known schemes: "
            + ", ".join(f"{scheme}://" for scheme in known)
        )
    merged = {**_query_options(parts), **options}
    unknown = set(merged) - _FACTORY_OPTIONS - backend_class.options
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(unknown))} for {parts.scheme}://; known: "
            + ", ".join(sorted(_FACTORY_OPTIONS | backend_class.options))
        )
    backend_options = {k: v for k, v in merged.items() if k in backend_class.options}
    return QueueFactory(
        backend_class.from_url(parts, backend_options),
        codec=_codec(merged.get("codec")),
        priority=check_priority(
            from_text(merged.get("priority", DEFAULT_PRIORITY), int, "priority")
        ),
        ttr=check_ttr(from_text(merged.get("ttr", DEFAULT_TTR), float, "ttr")),
    )


def _query_options(parts: SplitResult) -> Mapping[str, object]:
    options: dict[str, object] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key in options:
            raise ValueError(f"option {key!r} is given twice in the URL")
        options[key] = value
    return options


def _codec(value: object) -> Codec | None:
    if value is None or isinstance(value, Codec):
        return value
    if isinstance(value, str) and value in _CODECS:
        return _CODECS[value]()
    raise ValueError(f"codec must be a Codec or one of {', '.join(sorted(_CODECS))}; got {value!r}")

"""queue_beanstalk: a small, thread-safe queue API for Python workers, on beanstalkd.

Example::

    queues = factory("beanstalk://127.0.0.1:11300")
    jobs = queues.get("jobs")
    jobs.put(Message("regenerate-apprc", ["myapp"]))
    message = jobs.get(timeout=5)
    jobs.delete(message)
"""

import typing

from .backend import Backend, Consumer, JobRef, JobStats, Lease, Reserved, TubeStats
from .codec import Codec, JsonCodec
from .errors import (
    CommandRefused,
    DecodeError,
    HandlerNotRunning,
    InvalidName,
    MessageTooBig,
    NotFound,
    PutManyError,
    PutOutcomeUnknown,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
)
from .gob import AutoCodec, GobCodec
from .handler import Handler
from .message import Message, Received
from .peeked import Peeked
from .queue_factory import QueueFactory, factory, register_backend
from .queues import Queue
from .retries import Bury, Retry, exponential_backoff

if typing.TYPE_CHECKING:
    from .backends.beanstalk import BeanstalkBackend
    from .backends.memory import MemoryBackend
    from .backends.servers import ServersBackend

__version__ = "0.1.0"

# The backends are imported when first named, as factory() imports them when a
# URL of theirs is first used: importing the library imports no backend.
_LAZY = {
    "BeanstalkBackend": "queue_beanstalk.backends.beanstalk",
    "MemoryBackend": "queue_beanstalk.backends.memory",
    "ServersBackend": "queue_beanstalk.backends.servers",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'queue_beanstalk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AutoCodec",
    "Backend",
    "BeanstalkBackend",
    "Bury",
    "Codec",
    "CommandRefused",
    "Consumer",
    "DecodeError",
    "GobCodec",
    "Handler",
    "HandlerNotRunning",
    "InvalidName",
    "JobRef",
    "JobStats",
    "JsonCodec",
    "Lease",
    "MemoryBackend",
    "Message",
    "MessageTooBig",
    "NotFound",
    "Peeked",
    "PutManyError",
    "PutOutcomeUnknown",
    "Queue",
    "QueueConnectionError",
    "QueueError",
    "QueueFactory",
    "Received",
    "Reserved",
    "Retry",
    "ServerError",
    "ServersBackend",
    "Timeout",
    "TubeStats",
    "exponential_backoff",
    "factory",
    "register_backend",
]

"""queue_beanstalk: a small, thread-safe queue API for Python workers, on beanstalkd.

Example::

    queues = factory("beanstalk://127.0.0.1:11300")
    jobs = queues.get("jobs")
    jobs.put(Message("regenerate-apprc", ["myapp"]))
    message = jobs.get(timeout=5)
    jobs.delete(message)
"""

from .backend import Backend, Consumer, JobStats, Lease, Reserved
from .backends.beanstalk import BeanstalkBackend
from .backends.memory import MemoryBackend
from .codec import Codec, JsonCodec
from .errors import (
    DecodeError,
    HandlerNotRunning,
    InvalidName,
    MessageTooBig,
    NotFound,
    PutManyError,
    QueueConnectionError,
    QueueError,
    ServerError,
    Timeout,
)
from .handler import Handler
from .message import Message
from .queue_factory import QueueFactory, factory, register_backend
from .queues import Queue
from .retries import Bury, Retry, exponential_backoff

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BeanstalkBackend",
    "Bury",
    "Codec",
    "Consumer",
    "DecodeError",
    "Handler",
    "HandlerNotRunning",
    "InvalidName",
    "JobStats",
    "JsonCodec",
    "Lease",
    "MemoryBackend",
    "Message",
    "MessageTooBig",
    "NotFound",
    "PutManyError",
    "Queue",
    "QueueConnectionError",
    "QueueError",
    "QueueFactory",
    "Reserved",
    "Retry",
    "ServerError",
    "Timeout",
    "exponential_backoff",
    "factory",
    "register_backend",
]

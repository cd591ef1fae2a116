"""The contract every backend honours: one test class per backend, every area's mixin in it.

The tests are in ``tests/contract/``, one mixin per area; what a backend brings,
and how it may differ, is its case in ``tests/contract/cases.py``. To add a
backend, write its case and one class here that inherits it and ``Contract``.
"""

from __future__ import annotations

from .contract.cases import BeanstalkdCase, MemoryCase, ServersCase
from .contract.codec import CodecContract
from .contract.factory import FactoryContract
from .contract.handler import HandlerContract
from .contract.operate import OperateContract
from .contract.pipelining import PipeliningContract
from .contract.prefetch import PrefetchContract
from .contract.queue_api import QueueContract
from .contract.settle_after_close import SettleAfterCloseContract
from .contract.stress import StressContract
from .contract.survival import SurvivalContract


class Contract(
    QueueContract,
    FactoryContract,
    CodecContract,
    HandlerContract,
    OperateContract,
    SurvivalContract,
    PipeliningContract,
    PrefetchContract,
    SettleAfterCloseContract,
    StressContract,
):
    """Every area of the contract; not collected itself, as its name does not start with Test."""


class TestMemory(MemoryCase, Contract):
    """The contract on memory://."""


class TestBeanstalkd(BeanstalkdCase, Contract):
    """The contract on a real beanstalkd."""


class TestServers(ServersCase, Contract):
    """The contract on three beanstalkd servers behind one URL."""

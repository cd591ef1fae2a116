"""The Handler's parts that need no backend; its contract is in ``tests/contract/handler.py``."""

from __future__ import annotations

from queue_beanstalk import exponential_backoff


def test_default_backoff_doubles_up_to_a_cap() -> None:
    assert [exponential_backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert exponential_backoff(100) == 300

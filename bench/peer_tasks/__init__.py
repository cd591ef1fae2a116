"""The no-op jobs the peers section runs, one module per framework that must declare them.

This package imports no framework and nothing of the benchmark, so that a
worker process starts as it would in a user's project. Every job takes one
argument, a path: empty for most, so that every framework carries the same
argument; the first and last jobs of a run name a file, and :func:`mark`
appends the time to it, from which the drain's rate is read.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from queue_beanstalk import Received

__all__ = ["handle", "mark", "noop"]


def mark(path: str) -> None:
    """Append ``time.monotonic()``, one clock for every process, to ``path`` (unless empty)."""
    if path:
        with open(path, "a", encoding="ascii") as marks:
            marks.write(f"{time.monotonic()!r}\n")


def noop(path: str) -> None:
    """The job RQ runs: :func:`mark`, nothing else."""
    mark(path)


def handle(message: Received) -> None:
    """The function ``queue-beanstalk worker`` runs: :func:`mark` the message's one argument."""
    mark(message.args[0])

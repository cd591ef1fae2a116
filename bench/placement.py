"""CPU placement: which CPU beanstalkd runs on and which the benchmark runs on.

On a two-CPU machine, "split" gives the server and the benchmark a CPU each, the
way a worker and its server usually live on different machines; "same" puts both
on one CPU, where every context switch and every CPU-second of the server is
paid by the client too.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

__all__ = ["PLACEMENTS", "Placement", "pin_process"]


@dataclass(frozen=True)
class Placement:
    """Where the server and the benchmark run.

    :param name: ``"split"`` or ``"same"``.
    :param server: the server's CPUs.
    :param bench: the benchmark process's CPUs.
    """

    name: str
    server: frozenset[int]
    bench: frozenset[int]

    def describe(self) -> str:
        """Return a one-line description, e.g. "split: beanstalkd on CPU 0, benchmark on CPU 1"."""
        return f"{self.name}: beanstalkd on {_cpus(self.server)}, benchmark on {_cpus(self.bench)}"

    def available(self) -> bool:
        """Whether this process may run on every CPU the placement names."""
        return (self.server | self.bench) <= os.sched_getaffinity(0)


PLACEMENTS = {
    "split": Placement("split", frozenset({0}), frozenset({1})),
    "same": Placement("same", frozenset({1}), frozenset({1})),
}


def pin_process(cpus: frozenset[int], pid: int | None = None) -> None:
    """Pin every thread of a process to ``cpus``; threads started later inherit it.

    ``sched_setaffinity(0, ...)`` sets the calling thread only, so each thread
    listed in /proc/<pid>/task is set.

    :param pid: the process, e.g. a beanstalkd; this one when None.
    """
    for tid in os.listdir(f"/proc/{'self' if pid is None else pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


def _cpus(cpus: frozenset[int]) -> str:
    return ("CPU " if len(cpus) == 1 else "CPUs ") + ",".join(str(cpu) for cpu in sorted(cpus))

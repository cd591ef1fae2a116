"""What the demo prints, and how the handler's logs of its scripted failures look.

``_Output`` prints each line to the stream it is given and remembers whether anything went
unexpectedly; ``_summary`` prints the closing table; ``_times`` and ``_span`` put counts and
seconds into words; and a logging filter shortens the handler's reports of the demo's scripted
failures to one line, since their tracebacks would say nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from .script import CONCURRENCY, FAILED, GIVEN_UP, HANDLED, LATER, _ScriptedFailure

if TYPE_CHECKING:
    from .mission import _Mission


class _Output:
    """Prints the demo's lines and remembers whether anything went unexpectedly."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.as_expected = True

    def step(self, title: str) -> None:
        print(f"\n{title}", file=self.out, flush=True)

    def say(self, line: str) -> None:
        # Flushed: the progress lines must show while the handler runs, also through a pipe.
        print(f"   {line}", file=self.out, flush=True)

    def unexpected(self, what: str) -> None:
        self.as_expected = False
        self.say(f"UNEXPECTED: {what}")


def _summary(show: _Output, mission: _Mission, messages: int, rate: float, elapsed: float) -> None:
    counts = mission.counts
    settled = counts[HANDLED] + counts[GIVEN_UP]
    rows = [
        ("messages put", f"{mission.put} on 2 queues"),
        ("handled", f"{counts[HANDLED]}"),
        ("retried", f"{counts[FAILED] + counts[LATER]} ({counts[FAILED]} failed calls, "
                    f"{counts[LATER]} Retry)"),
        ("buried", f"{counts[GIVEN_UP]}"),
        ("elapsed", f"{mission.elapsed:.2f}s, {settled / max(mission.elapsed, 1e-9):.1f} "
                    "messages/s (mostly waiting out delays and retries)"),
        ("in flight", f"at most {mission.peak} at once (concurrency={CONCURRENCY})"),
        ("throughput", f"{rate:,.0f} messages/s ({messages} no-op messages)"),
        ("demo", f"{elapsed:.2f}s in all"),
    ]  # fmt: skip
    print("\nsummary", file=show.out)
    for label, value in rows:
        print(f"   {label:<14}{value}", file=show.out)
    if not show.as_expected:
        print("some steps did not go as expected: see the UNEXPECTED lines", file=show.out)


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def _span(seconds: list[float]) -> str:
    """Return ``1.00s``, or ``1.00-2.01s`` for a range; ``?`` when there is nothing to show."""
    if not seconds:
        return "?"
    low, high = min(seconds), max(seconds)
    return f"{low:.2f}s" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f}s"


@contextlib.contextmanager
def _scripted_failures_in_one_line() -> Iterator[None]:
    """While the demo runs, log the handler's reports of scripted failures without a traceback."""
    logger = logging.getLogger("queue_beanstalk")
    logger.addFilter(_shorten_scripted_failure)
    try:
        yield
    finally:
        logger.removeFilter(_shorten_scripted_failure)


def _shorten_scripted_failure(record: logging.LogRecord) -> bool:
    failure = record.exc_info[1] if record.exc_info else None
    if isinstance(failure, _ScriptedFailure):
        record.msg = f"{record.getMessage()}: {failure}"
        record.args = ()
        record.exc_info = None
    return True

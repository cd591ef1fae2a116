"""What becomes of a message once its callback is over: the outcomes and the retry policy.

* the function returns: the message is deleted;
* it raises :class:`Retry`: released with the delay asked for;
* it raises :class:`Bury`: buried at once;
* it raises anything else: released with ``retry_delay(attempt)``, or buried
  once it has been tried ``max_attempts`` times (:class:`RetryPolicy`). Tries
  are the server's ``reserves`` count, so they survive a worker's restart, and
  every hand-out counts: a :class:`Retry`, a time-to-run expiry or a worker's
  death uses one up too. Each kick starts a fresh set (:meth:`RetryPolicy.attempt`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from .checks import Seconds, whole_seconds

__all__ = ["Bury", "Outcome", "Retry", "RetryDelay", "RetryPolicy", "exponential_backoff"]

logger = logging.getLogger("queue_beanstalk")

#: ``retry_delay``: seconds, or a function of the attempt number (1, 2, ...) giving seconds.
RetryDelay = Seconds | Callable[[int], Seconds]


class Outcome(enum.Enum):
    """What is done with a message once its callback is over."""

    DELETE = "delete"
    RELEASE = "release"
    BURY = "bury"

    @property
    def done(self) -> str:
        """The outcome as a past participle, for the log: "deleted", "released", "buried"."""
        return {"delete": "deleted", "release": "released", "bury": "buried"}[self.value]


class Retry(Exception):
    """Raise from a handler function to release the message, to be tried again after ``delay``.

    It is not an error: it is logged at DEBUG only, and no backoff applies. The call still
    counts as one of the message's ``max_attempts`` tries (the server counts
    every reserve), so a message that keeps asking for retries is eventually
    buried by its next failure.

    :param delay: seconds before the message can be got again (rounded up).
    :raises ValueError: for a negative delay, or one over beanstalkd's bound.
    :raises TypeError: for a delay that is not seconds.
    """

    def __init__(self, delay: Seconds = 0) -> None:
        #: Whole seconds (rounded up) before the message can be got again.
        self.delay = whole_seconds(delay, "Retry delay")
        super().__init__(f"retry in {self.delay}s")


class Bury(Exception):
    """Raise from a handler function to bury the message at once (kept, not retried)."""


def exponential_backoff(attempt: int, *, base: float = 1.0, cap: float = 300.0) -> float:
    """Return the default retry delay: 1, 2, 4, 8 ... seconds, at most ``cap``.

    :param attempt: how many times the message has been tried (1 after the first).
    """
    return float(min(cap, base * 2 ** min(attempt - 1, 64)))


class RetryPolicy:
    """The attempt rule: after a failed call, release with a delay, or bury after ``max_attempts``.

    :param max_attempts: tries before a failing message is buried.
    :param retry_delay: seconds before a failed message is tried again, or a
        function of the attempt number giving seconds. A function that fails,
        or gives no valid delay, is logged and :func:`exponential_backoff` used.
    """

    def __init__(self, max_attempts: int, retry_delay: RetryDelay) -> None:
        self.max_attempts = max_attempts
        self._retry_delay = retry_delay

    def attempt(self, reserves: int, kicks: int) -> int:
        """Return which try of its current set a message's call is, from the server's counts.

        Each kick (an operator's ``kick``, say after fixing a bug) starts a
        fresh set of ``max_attempts`` tries. The server counts reserves and
        kicks but not the reserves before each kick; a message kicked after it
        was buried for running out of tries had ``max_attempts`` reserves per
        set, which is subtracted. One buried early (``Bury``, an undecodable
        body) or kicked while delayed gets at least ``max_attempts`` tries after
        a kick, never fewer.
        """
        return max(1, reserves - kicks * self.max_attempts)

    def after_failure(self, attempts: int) -> tuple[Outcome, int]:
        """Return what to do with a message whose call failed, tried ``attempts`` times.

        :returns: :attr:`Outcome.BURY` once the attempts are spent, else
            :attr:`Outcome.RELEASE`; and the release's delay, in whole seconds.
        """
        if attempts >= self.max_attempts:
            return Outcome.BURY, 0
        return Outcome.RELEASE, self.delay_for(attempts)

    def delay_for(self, attempt: int) -> int:
        """Return the delay before try ``attempt + 1``, in whole seconds."""
        delay = self._retry_delay
        try:
            return whole_seconds(delay(attempt) if callable(delay) else delay, "retry_delay")
        except Exception:
            logger.exception("retry_delay failed for attempt %d; using the default", attempt)
            return whole_seconds(exponential_backoff(attempt), "retry_delay")

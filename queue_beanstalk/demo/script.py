"""The mission's script: the handler's settings, what the producer puts, what each call does.

``_plan`` lists the messages the producer puts, in order, on which queue and with what delay;
``_script`` says what each call of the handler function does for an app (handled, failed, given
up, or Retry), and ``_expected_calls`` how many calls that takes, for the checks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..message import Message

#: Worker threads of each handler.
CONCURRENCY = 4
#: Calls before a failing message is buried.
MAX_ATTEMPTS = 3
#: Seconds before a failed message is tried again.
RETRY_DELAY = 1
#: Seconds the busy app asks for when it raises Retry.
RETRY_LATER = 1
#: The simulated work of one call: between these many seconds.
WORK = (0.01, 0.05)
#: The producer puts this many messages at once, then pauses this many seconds.
BATCH = 6
BATCH_PAUSE = 0.16

#: Apps whose messages fail this many times, then are handled.
FLAKY = {"flaky-app": 1, "flakier-app": 2}
#: The app whose messages always fail, so they end buried.
BROKEN = "broken-app"
#: The app that asks, once, for its message to come back later.
BUSY = "busy-app"

# What one call of the handler function does.
HANDLED = "handled"
FAILED = "failed"  # raises; the handler releases the message for another try
GIVEN_UP = "given up"  # raises on the last attempt; the handler buries the message
LATER = "later"  # raises Retry


@dataclass(frozen=True)
class _Put:
    """One message the producer puts: which queue, for which app, with what delay."""

    queue: str
    app: str
    delay: int = 0

    def message(self) -> Message:
        if self.queue == "apps":
            return Message("regenerate-apprc", [self.app])
        return Message("add-units", [self.app, "2"])


def _plan() -> list[_Put]:
    """Return what the producer puts, in order; the slow stories first, so the demo ends sooner."""
    plan = [
        _Put("apps", "flaky-app"),
        _Put("units", "flakier-app"),
        _Put("apps", BROKEN),
        _Put("units", BUSY),
        _Put("apps", "app-01", delay=1),
        _Put("units", "app-02", delay=1),
        _Put("apps", "app-03", delay=2),
        _Put("units", "app-04", delay=2),
    ]
    plan += [_Put("apps" if number % 2 else "units", f"app-{number:02}") for number in range(5, 29)]
    return plan


def _script(app: str, attempt: int) -> str:
    """Return what call number ``attempt`` (1, 2, ...) of the handler function does for ``app``."""
    if app == BUSY and attempt == 1:
        return LATER
    if app == BROKEN or attempt <= FLAKY.get(app, 0):
        return FAILED if attempt < MAX_ATTEMPTS else GIVEN_UP
    return HANDLED


def _expected_calls(app: str) -> int:
    if app == BROKEN:
        return MAX_ATTEMPTS
    return 1 + FLAKY.get(app, 0) + (app == BUSY)


class _ScriptedFailure(Exception):
    """What the demo's handler function raises for a message scripted to fail."""

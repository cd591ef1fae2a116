"""The demo's threads and their deadlines.

``_running`` starts a handler and, also on error or Ctrl-C, stops it and waits for its workers;
``_stop`` stops one and reports workers that outlive ``STOP_TIMEOUT``; ``_Producer`` runs the
mission's producer in a thread and hands what it raised back to the main thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

from ..handler import Handler
from .output import _Output

#: Seconds to wait for every message to be settled, and for stopped workers to end.
SETTLE_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


class _Producer:
    """Runs ``target(stop)`` in a thread; on leaving, sets ``stop`` and joins the thread."""

    def __init__(self, target: Callable[[threading.Event], None]) -> None:
        self._target = target
        self._stop = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, name="queue-beanstalk-demo-producer", daemon=True
        )

    def check(self) -> None:
        """Raise, in the calling thread, what the producer raised."""
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._target(self._stop)
        except Exception as exc:  # noqa: BLE001 - check() raises it in the main thread
            self._error = exc

    def __enter__(self) -> _Producer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(STOP_TIMEOUT)


@contextlib.contextmanager
def _running(handler: Handler) -> Iterator[Handler]:
    """Start ``handler``; on leaving, also on error or Ctrl-C, stop it and wait for its workers."""
    handler.start()
    try:
        yield handler
    finally:
        if handler.running:
            handler.stop()
        handler.wait(STOP_TIMEOUT)


def _stop(show: _Output, handler: Handler) -> None:
    handler.stop()
    if not handler.wait(STOP_TIMEOUT):
        show.unexpected(f"the handler's workers did not end within {STOP_TIMEOUT:g}s of stop()")

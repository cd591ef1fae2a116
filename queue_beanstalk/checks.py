"""Checks and conversions for what beanstalkd accepts: names, seconds, priorities.

Everything here runs before a command is built, so bad input never reaches the
wire. beanstalkd counts time in whole seconds; the conversions below round *up*
so that a positive delay never becomes zero and a timeout never ends early.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from datetime import timedelta
from typing import Any

from .errors import InvalidName

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_UINT32",
    "Seconds",
    "check_count",
    "check_handler_function",
    "check_name",
    "check_priority",
    "check_ttr",
    "from_text",
    "positive_seconds",
    "to_seconds",
    "whole_seconds",
]

#: A duration in seconds: a number, or a ``datetime.timedelta``.
Seconds = float | int | timedelta

#: beanstalkd's limit on a tube name, in bytes.
MAX_NAME_BYTES = 200
#: beanstalkd's bound on priorities, delays and time-to-run.
MAX_UINT32 = 2**32 - 1

_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]*")


def check_name(name: object) -> str:
    """Return ``name`` if beanstalkd accepts it as a tube name, else raise InvalidName.

    :param name: 1 to 200 characters of ``A-Z a-z 0-9 - + / ; . $ _ ( )``,
        not starting with ``-``.
    """
    if not isinstance(name, str):
        raise InvalidName(f"queue name must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidName("queue name must not be empty")
    if len(name) > MAX_NAME_BYTES:
        raise InvalidName(
            f"queue name is {len(name)} characters long; beanstalkd accepts at most "
            f"{MAX_NAME_BYTES}"
        )
    if not _NAME.fullmatch(name):
        raise InvalidName(
            f"queue name {name!r} is refused by beanstalkd: use only A-Z a-z 0-9 and "
            "- + / ; . $ _ ( ), and do not start with -"
        )
    return name


def to_seconds(value: object, what: str) -> float:
    """Return ``value`` as a finite, non-negative number of seconds.

    :param value: a number or a ``datetime.timedelta``.
    :param what: the parameter's name, for the error message.
    :raises TypeError: for anything else (``bool`` included).
    :raises ValueError: for a negative, infinite or NaN value.
    """
    if type(value) is int and value >= 0:
        return value  # the common case, kept cheap
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{what} must be seconds (int, float or timedelta), not {type(value).__name__}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return seconds


def positive_seconds(value: object, what: str) -> float:
    """Return ``value`` as a number of seconds greater than zero."""
    seconds = to_seconds(value, what)
    if seconds == 0:
        raise ValueError(f"{what} must be more than 0 seconds")
    return seconds


def whole_seconds(value: object, what: str) -> int:
    """Return ``value`` in whole seconds, rounded up, within beanstalkd's bound.

    ``0.2`` becomes ``1``: a positive delay never becomes "now".

    :raises ValueError: when negative or above ``2**32 - 1``.
    """
    if type(value) is int and 0 <= value <= MAX_UINT32:
        return value  # the common case, kept cheap
    seconds = math.ceil(to_seconds(value, what))
    if seconds > MAX_UINT32:
        raise ValueError(f"{what} must be at most {MAX_UINT32} seconds, not {value!r}")
    return seconds


def check_ttr(ttr: object) -> int:
    """Return a time-to-run in whole seconds (rounded up), from 1 to ``2**32 - 1``."""
    seconds = whole_seconds(ttr, "ttr")
    if seconds < 1:
        raise ValueError(f"ttr must be more than 0 seconds, not {ttr!r}")
    return seconds


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is an int from 0 (most urgent) to ``2**32 - 1``."""
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {type(priority).__name__}")
    if not 0 <= priority <= MAX_UINT32:
        raise ValueError(f"priority must be between 0 and {MAX_UINT32}, not {priority}")
    return priority


def from_text(value: object, kind: type[int] | type[float] | type[str], name: str) -> object:
    """Convert an option that came as URL query text to ``kind``; pass other values through.

    The value is checked afterwards by whatever takes the option.
    """
    if not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise ValueError(f"option {name} must be {noun}, not {value!r}") from None


def check_count(value: object, name: str, minimum: int) -> int:
    """Return ``value`` if it is an int of at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def check_handler_function(func: object) -> None:
    """Raise TypeError unless ``func`` can be called, synchronously, with a message.

    An ``async def`` function (or a partial of one, or an object whose
    ``__call__`` is one) would return a coroutine that nothing awaits: the
    message would be deleted unhandled. Handlers run functions in threads.
    """
    if not callable(func):
        raise TypeError(f"func must be callable, not {type(func).__name__}")
    inner: Any = func
    while isinstance(inner, functools.partial):
        inner = inner.func
    if inspect.iscoroutinefunction(inner) or inspect.iscoroutinefunction(
        getattr(inner, "__call__", None)  # noqa: B004 - the method itself is what is checked
    ):
        raise TypeError(
            f"{func!r} is an async function: a handler calls functions in threads and "
            "awaits nothing, so each message would be deleted unhandled; use a plain def"
        )

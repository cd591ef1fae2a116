"""The Message: an action and its string arguments, plus where it came from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import Lease

__all__ = ["Message", "Received"]


class Message:
    """An action to perform and its arguments, e.g. ``Message("regenerate-apprc", ["myapp"])``.

    Two messages are equal when their action and arguments are equal; ``id``,
    ``server`` and ``queue`` take no part. A message got from a queue carries its reservation
    until it is deleted or released; it may be settled from any thread.

    :param action: a non-empty string naming what to do.
    :param args: the action's arguments, each a string.
    :raises TypeError: when the action or an argument is not a ``str``, or
        ``args`` is itself a string or bytes, or has no order (a mapping, a set).
    :raises ValueError: when the action is empty.
    """

    __slots__ = ("_action", "_args", "_id", "_lease", "_queue", "_server")

    def __init__(self, action: str, args: Iterable[str] = ()) -> None:
        if not isinstance(action, str):
            raise TypeError(f"action must be a str, not {type(action).__name__}")
        if not action:
            raise ValueError("action must not be empty")
        if type(args) is not list and type(args) is not tuple:  # the usual two, checked fast
            _check_ordered(args)
        args = tuple(args)
        for index, arg in enumerate(args):
            if not isinstance(arg, str):
                raise TypeError(f"args[{index}] must be a str, not {type(arg).__name__}")
        self._action = action
        self._args: tuple[str, ...] = args
        self._id: int | None = None
        self._server: str | None = None
        self._queue: str | None = None
        self._lease: Lease | None = None

    @property
    def action(self) -> str:
        """What to do."""
        return self._action

    @property
    def args(self) -> tuple[str, ...]:
        """The action's arguments."""
        return self._args

    @property
    def id(self) -> int | None:
        """The server's job id: None until the message was put or got."""
        return self._id

    @property
    def server(self) -> str | None:
        """The server holding the message, as configured (``host:port``); None until put or got.

        Job ids are per server: ``(id, server)`` names one job among several servers.
        """
        return self._server

    @property
    def queue(self) -> str | None:
        """The name of the queue the message was last put on or got from."""
        return self._queue

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._action == other._action and self._args == other._args

    def __hash__(self) -> int:
        return hash((self._action, self._args))

    def __repr__(self) -> str:
        return (
            f"queue_beanstalk.Message(action={self._action!r}, args={self._args!r}, "
            f"id={self._id!r}, server={self._server!r}, queue={self._queue!r})"
        )


class Received(Message):
    """A message got from a queue (or handed to a handler's function): it has an id and a server.

    Only its types differ from :class:`Message`: ``id``, ``server`` and
    ``queue`` are set, so they are typed without ``None``.
    """

    __slots__ = ()

    @property
    def id(self) -> int:
        """The server's job id."""
        return self._id  # type: ignore[return-value]  # set before the class is

    @property
    def server(self) -> str:
        """The server holding the message, as configured (``host:port``)."""
        return self._server  # type: ignore[return-value]

    @property
    def queue(self) -> str:
        """The name of the queue the message was got from."""
        return self._queue  # type: ignore[return-value]


def _check_ordered(args: object) -> None:
    """Raise TypeError for args that are one string, or have no order of their own."""
    if isinstance(args, (str, bytes, bytearray)):
        raise TypeError("args must be a sequence of str, not a single string")
    if isinstance(args, (Mapping, AbstractSet)):
        # A dict would give only its keys, a set an arbitrary order.
        raise TypeError(f"args must be an ordered sequence of str, not a {type(args).__name__}")

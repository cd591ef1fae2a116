"""Codecs turn a Message into the bytes of a job body and back.

Backends move bytes only; the codec is chosen per factory. The default,
:class:`JsonCodec`, writes compact UTF-8 JSON that any client can produce and
read::

    {"action":"regenerate-apprc","args":["myapp"]}

Nothing here uses pickle: a job body is data, never code.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from json.scanner import make_scanner

from .message import Message

__all__ = ["Codec", "JsonCodec"]

# A str as a JSON string literal; non-ASCII stays as is (UTF-8 on the wire, not
# \u escapes): shorter bodies, readable by any client.
_string = json.encoder.encode_basestring

# json.loads without its Python wrapper: the C scanner alone reads a body that
# is exactly one JSON value, as our own bodies are, at a quarter of the cost.
# Anything else (surrounding whitespace, trailing data, no value at all) goes
# through json.loads, which reads or rejects it with its usual message.
# (typeshed declares make_scanner's argument as a make_scanner, not a decoder.)
_scan: Callable[[str, int], tuple[object, int]] = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


class Codec(ABC):
    """Turns messages into job bodies and back; implementations must be thread-safe."""

    @abstractmethod
    def encode(self, message: Message) -> bytes:
        """Return the job body for ``message``.

        :raises ValueError: when the message cannot be represented.
        """

    @abstractmethod
    def decode(self, body: bytes) -> Message:
        """Return the message a job body holds.

        :raises ValueError: with a specific reason when the body cannot be read;
            the queue then buries the job and raises ``DecodeError``. (Any other
            ``Exception`` is taken as a bug in the codec, and the job is buried too.)
        """


class JsonCodec(Codec):
    """Compact UTF-8 JSON: ``{"action": str, "args": [str, ...]}``.

    On decoding, ``args`` may be absent (no arguments) and other keys are
    ignored, so producers may add fields without breaking older consumers.
    """

    def encode(self, message: Message) -> bytes:
        """Return ``message`` as compact UTF-8 JSON."""
        # Assembled by hand around the C string encoder: the same bytes as
        # json.dumps(..., ensure_ascii=False, separators=(",", ":")), at a fifth of
        # the cost. The slots are read directly: this runs for every put.
        action, args = message._action, message._args
        text = f'{{"action":{_string(action)},"args":[{",".join(map(_string, args))}]}}'
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"message is not valid Unicode text ({exc.reason})") from exc

    def decode(self, body: bytes) -> Message:
        """Return the message in ``body``; raise ValueError naming what is wrong."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"body is not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        try:
            document = _loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not JSON ({exc.msg} at position {exc.pos})") from exc
        except RecursionError as exc:
            # The C scanner recurses once per nested list or object.
            raise ValueError("body is nested too deeply") from exc
        except ValueError as exc:
            # int()'s digit limit (sys.get_int_max_str_digits()), for a number
            # anywhere in the body: json's own refusals are JSONDecodeError.
            raise ValueError(f"body has a number too long to read ({exc})") from exc
        if not isinstance(document, dict):
            raise ValueError(f"body is a JSON {type(document).__name__}, not an object")
        action = document.get("action")
        if not isinstance(action, str) or not action:
            raise ValueError('body has no "action" string')
        args = document.get("args", [])
        if not isinstance(args, list):
            raise ValueError('body\'s "args" is not a list of strings')
        try:
            return Message(action, args)  # checks each argument is a str
        except TypeError as exc:
            raise ValueError(f'body\'s "args" is not a list of strings ({exc})') from None

    def __repr__(self) -> str:
        return "queue_beanstalk.JsonCodec()"


def _loads(text: str) -> object:
    """Return ``json.loads(text)``, quicker for a body that is one value and nothing else."""
    try:
        document, end = _scan(text, 0)
    except (StopIteration, json.JSONDecodeError):
        end = -1
    if end != len(text):
        return json.loads(text)
    return document

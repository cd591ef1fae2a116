"""Fuzzing JsonCodec: whatever the bytes, decode returns a Message or raises ValueError.

A job body comes from any client, so nothing in it may make decode raise
anything else (a worker would take that for a bug, not a bad job).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_beanstalk import JsonCodec, Message

codec = JsonCodec()

T = TypeVar("T")
R = TypeVar("R")

fuzz = settings(max_examples=200, deadline=None)

_with_surrogate = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=5),
    st.characters(categories=["Cs"]),
    st.text(max_size=5),
)
#: Any str, a lone surrogate included often (st.text() alone never draws one).
_any_text = st.text(max_size=8) | _with_surrogate


def _decode(body: bytes) -> Message | None:
    """Decode ``body``: its Message, or None when refused with a reason.

    Any exception but ValueError escapes and fails the test.
    """
    outcome = _outcome(codec.decode, body)
    if isinstance(outcome, Message):
        return outcome
    assert type(outcome) is ValueError, f"{type(outcome).__name__} leaked: {outcome}"
    assert str(outcome).startswith("body"), str(outcome)
    return None


def _reencodes(message: Message) -> None:
    """A decoded message encodes back to itself, unless it holds a lone surrogate.

    JSON's ``\\ud800`` escapes can spell a lone surrogate, which decode accepts
    but UTF-8 cannot carry: encode refuses it with a plain ValueError.
    """
    body = _outcome(codec.encode, message)
    if isinstance(body, bytes):
        assert codec.decode(body) == message
        return
    assert type(body) is ValueError
    assert any(_has_surrogate(text) for text in (message.action, *message.args))


def _outcome(function: Callable[[T], R], argument: T) -> R | ValueError:
    """``function(argument)``, or the ValueError it raised."""
    try:
        return function(argument)
    except ValueError as exc:
        return exc


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


# Bytes -------------------------------------------------------------------


@fuzz
@given(body=st.binary(max_size=200))
def test_any_bytes(body: bytes) -> None:
    _decode(body)


_tokens = st.sampled_from(
    ["{", "}", "[", "]", ":", ",", '"', '"action"', '"args"', '"x"', "\\", "\\u", "\\ud800",
     "\\udc00", "d800", "0", "-", "1e999", "9" * 5000, ".", "true", "null", "NaN",
     "Infinity", " ", "\n", "\ufeff", "\x00", "é"]
)  # fmt: skip


@fuzz
@given(tokens=st.lists(_tokens, max_size=40))
def test_any_json_ish_text(tokens: list[str]) -> None:
    _decode("".join(tokens).encode())


# Well-formed JSON from other clients --------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_any_text, inner, max_size=4),
    max_leaves=20,
)


@fuzz
@given(
    document=st.one_of(
        _json,
        st.fixed_dictionaries(
            {"action": _json, "args": st.lists(_json, max_size=4) | _json},
            optional={"extra": _json},
        ),
    ),
    ensure_ascii=st.booleans(),
    indent=st.none() | st.integers(0, 2),
)
def test_any_json_document(document: object, ensure_ascii: bool, indent: int | None) -> None:
    text = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent)
    message = _decode(text.encode("utf-8", "surrogatepass"))
    if message is not None:
        _reencodes(message)


@fuzz
@given(
    action=st.text(min_size=1) | _with_surrogate,
    args=st.lists(_any_text, max_size=4),
    extra=st.dictionaries(_any_text, _json, max_size=3),
    ensure_ascii=st.booleans(),
)
def test_a_valid_document_from_any_client_is_read(
    action: str, args: list[str], extra: dict[str, object], ensure_ascii: bool
) -> None:
    document = {**extra, "action": action, "args": args}
    text = json.dumps(document, ensure_ascii=ensure_ascii)
    message = _decode(text.encode("utf-8", "surrogatepass"))
    if _has_surrogate(text):
        assert message is None  # written raw, not as a \u escape: not UTF-8
        return
    assert message == Message(action, args)
    _reencodes(message)


# Nesting ------------------------------------------------------------------

# Each opening of a nested value, and what closes it.
_CLOSERS = {"[": "]", '["x",': "]", '{"a":': "}", '{"action":"x","args":': "}", '{"":[': "]}"}
_openers = st.lists(st.sampled_from(sorted(_CLOSERS)), min_size=1, max_size=4)
_prefixes = st.sampled_from(["", " ", '{"action":"x","args":[],"extra":', '{"action":"x","args":'])


def _nested(openers: list[str], depth: int, prefix: str, closed: bool) -> bytes:
    """``depth`` levels of ``openers`` in turn around a 1, after ``prefix``, closed or not."""
    opened = [openers[level % len(openers)] for level in range(depth)]
    text = prefix + "".join(opened) + "1"
    if closed:
        text += "".join(_CLOSERS[opener] for opener in reversed(opened))
        text += "}" if prefix.startswith("{") else ""
    return text.encode()


@fuzz
@given(openers=_openers, depth=st.integers(0, 3000), prefix=_prefixes, closed=st.booleans())
def test_any_nesting(openers: list[str], depth: int, prefix: str, closed: bool) -> None:
    body = _nested(openers, depth, prefix, closed)
    message = _decode(body)
    if message is not None:
        assert closed
    elif depth < 100:
        assert "nested too deeply" not in str(_outcome(codec.decode, body))


@fuzz
@given(
    openers=_openers,
    depth=st.integers(sys.getrecursionlimit(), 60_000),
    prefix=_prefixes,
    closed=st.booleans(),
)
def test_nesting_json_cannot_read_is_refused(
    openers: list[str], depth: int, prefix: str, closed: bool
) -> None:
    body = _nested(openers, depth, prefix, closed)
    # Near the limit, whether the codec runs out of stack depends on how deep
    # its caller's stack already is: any outcome but a ValueError is wrong.
    _decode(body)
    if depth >= FAR_TOO_DEEP and _too_deep_for_json(body):
        with pytest.raises(ValueError, match="body is nested too deeply") as excinfo:
            codec.decode(body)
        assert type(excinfo.value) is ValueError


# Far past any interpreter's recursion limit: no stack is shallow enough to read it.
FAR_TOO_DEEP = 20_000


def _too_deep_for_json(body: bytes) -> bool:
    """Whether json.loads gives up on ``body`` with RecursionError.

    How deep json reads depends on the Python version (from 3.12 its C code has
    a recursion limit of its own), so json itself is the reference.
    """
    try:
        json.loads(body)
    except RecursionError:
        return True
    except ValueError:
        return False
    return False


# Mutations of a valid body ------------------------------------------------

_messages = st.builds(
    Message,
    st.text(min_size=1, max_size=10),
    st.lists(st.text(max_size=10), max_size=4),
)


@fuzz
@given(message=_messages, data=st.data())
def test_any_mutation_of_a_valid_body(message: Message, data: st.DataObject) -> None:
    body = bytearray(codec.encode(message))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(body)), label="at")
        kind = data.draw(st.sampled_from(["delete", "insert", "replace", "flip"]), label="kind")
        if kind == "delete":
            del body[at : at + data.draw(st.integers(1, 8), label="length")]
        elif kind == "insert":
            body[at:at] = data.draw(st.binary(min_size=1, max_size=8) | _tokens.map(str.encode))
        elif at < len(body):
            if kind == "replace":
                body[at] = data.draw(st.integers(0, 255), label="byte")
            else:
                body[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    decoded = _decode(bytes(body))
    if decoded is not None:
        _reencodes(decoded)


# Round trips --------------------------------------------------------------


@fuzz
@given(action=st.text(min_size=1) | _with_surrogate, args=st.lists(_any_text, max_size=4))
def test_encode_round_trips_or_refuses_a_lone_surrogate_with_a_plain_value_error(
    action: str, args: list[str]
) -> None:
    message = Message(action, args)
    if not any(_has_surrogate(text) for text in (action, *args)):
        assert codec.decode(codec.encode(message)) == message
        return
    with pytest.raises(ValueError, match="not valid Unicode") as excinfo:
        codec.encode(message)
    assert type(excinfo.value) is ValueError

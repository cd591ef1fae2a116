"""JsonCodec's wire format and its refusals, and a factory's custom codec.

What every backend does with a body its codec refuses is in ``tests/contract/codec.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queue_beanstalk import Codec, DecodeError, JsonCodec, Message, factory
from queue_beanstalk.codec import _loads

from .support import eventually, put_job

codec = JsonCodec()


def test_encode_is_compact_json() -> None:
    assert codec.encode(Message("x", ["a", "b"])) == b'{"action":"x","args":["a","b"]}'


def test_encode_writes_an_empty_args_list() -> None:
    assert codec.encode(Message("ping")) == b'{"action":"ping","args":[]}'


def test_encode_keeps_non_ascii_as_utf8() -> None:
    body = codec.encode(Message("café", ["ü", "日本"]))
    assert body == '{"action":"café","args":["ü","日本"]}'.encode()
    assert b"\\u" not in body


def test_encode_escapes_what_json_requires() -> None:
    body = codec.encode(Message('say "hi"', ["back\\slash", "new\nline"]))
    assert body == b'{"action":"say \\"hi\\"","args":["back\\\\slash","new\\nline"]}'
    assert codec.decode(body) == Message('say "hi"', ["back\\slash", "new\nline"])


@pytest.mark.parametrize(
    "message",
    [Message("\ud800"), Message("x", ["\udfff"]), Message("x", ["ok", "a\ud800b"])],
    ids=["action", "arg", "inner-arg"],
)
def test_encode_refuses_a_lone_surrogate(message: Message) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        codec.encode(message)


def test_decode_reads_what_encode_wrote() -> None:
    assert codec.decode(b'{"action":"x","args":["a","b"]}') == Message("x", ["a", "b"])


def test_decode_accepts_spaces_and_any_key_order() -> None:
    body = b'{ "args" : [ "a" ] , "action" : "x" }'
    assert codec.decode(body) == Message("x", ["a"])


def test_decode_accepts_whitespace_around_the_object() -> None:
    assert codec.decode(b' \n{"action":"x"}\r\n ') == Message("x")


def test_decode_accepts_a_missing_args() -> None:
    message = codec.decode(b'{"action":"x"}')
    assert message == Message("x")
    assert message.args == ()


def test_decode_ignores_extra_keys() -> None:
    body = b'{"action":"x","args":["a"],"sent_by":"other-client","attempt":3}'
    assert codec.decode(body) == Message("x", ["a"])


def test_decode_gives_a_fresh_message() -> None:
    message = codec.decode(b'{"action":"x"}')
    assert message.id is None
    assert message.queue is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b'{"action":"caf\xe9"}', "not UTF-8"),
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"action=x", "not JSON"),
        (b'{"action":"x"} {}', "not JSON (Extra data at position 15)"),
        (b'{"action":"x', "not JSON (Unterminated string"),
        (b'["x", "a"]', "JSON list, not an object"),
        (b"42", "JSON int, not an object"),
        (b"4.2", "JSON float, not an object"),
        (b'"x"', "JSON str, not an object"),
        (b"null", "JSON NoneType, not an object"),
        (b'{"args":["a"]}', 'no "action" string'),
        (b'{"action":""}', 'no "action" string'),
        (b'{"action":1}', 'no "action" string'),
        (b'{"action":null}', 'no "action" string'),
        (b'{"action":["x"]}', 'no "action" string'),
        (b'{"action":"x","args":"a"}', '"args" is not a list of strings'),
        (b'{"action":"x","args":{"a":"b"}}', '"args" is not a list of strings'),
        (b'{"action":"x","args":null}', '"args" is not a list of strings'),
        (b'{"action":"x","args":["a",1]}', '"args" is not a list of strings'),
        (b'{"action":"x","args":[["a"]]}', '"args" is not a list of strings'),
        (b'{"action":"x","args":[null]}', '"args" is not a list of strings'),
    ],
    ids=repr,
)
def test_decode_refuses_with_a_specific_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as excinfo:
        codec.decode(body)
    assert str(excinfo.value).startswith("body")


@pytest.mark.parametrize(
    "body",
    [b'{"action":"x","n":' + b"1" * 5000 + b"}", b" -" + b"9" * 5000],
    ids=["in-extra-key", "padded"],
)
def test_decode_refuses_an_integer_too_long_to_read(body: bytes) -> None:
    with pytest.raises(ValueError, match="body has a number too long to read"):
        codec.decode(body)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000,
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 50_000,
        b'{"action":"x","args":' + b"[" * 50_000,
        b'{"action":"x","args":[],"extra":' + b'{"a":[' * 20_000 + b"1" + b"]}" * 20_000 + b"}",
        b" " + b"[" * 50_000 + b" ",
    ],
    ids=["open-lists", "closed-lists", "objects", "in-args", "in-extra-key", "padded"],
)
def test_decode_refuses_a_body_nested_too_deeply(body: bytes) -> None:
    with pytest.raises(ValueError, match="body is nested too deeply"):
        codec.decode(body)


@given(action=st.text(min_size=1), args=st.lists(st.text()))
def test_encoding_is_exactly_compact_json(action: str, args: list[str]) -> None:
    expected = json.dumps(
        {"action": action, "args": args}, ensure_ascii=False, separators=(",", ":")
    )
    assert JsonCodec().encode(Message(action, args)) == expected.encode("utf-8")


@given(action=st.text(min_size=1), args=st.lists(st.text()))
def test_decode_inverts_encode(action: str, args: list[str]) -> None:
    message = Message(action, args)
    assert codec.decode(codec.encode(message)) == message


def test_repr_names_the_package() -> None:
    assert repr(codec).startswith("queue_beanstalk.JsonCodec(")


class ReversedJson(Codec):
    """JSON written backwards: a body no other codec reads."""

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, message: Message) -> bytes:
        self.encoded += 1
        return JsonCodec().encode(message)[::-1]

    def decode(self, body: bytes) -> Message:
        self.decoded += 1
        return JsonCodec().decode(body[::-1])


def test_a_custom_codec_writes_the_bodies() -> None:
    custom = ReversedJson()
    with factory("memory://", codec=custom) as queues:
        assert queues.codec is custom
        message = Message("x", ["a", "b"])
        queues.get("jobs").put(message)
        reserved = queues.backend.reserve(("jobs",), 0)
        assert reserved.body == b'{"action":"x","args":["a","b"]}'[::-1]
        assert custom.encoded == 1


def test_a_custom_codec_reads_the_bodies() -> None:
    custom = ReversedJson()
    with factory("memory://", codec=custom) as queues:
        queue = queues.get("jobs")
        queues.backend.put(
            "jobs", b'{"action":"y","args":["c"]}'[::-1], priority=0, delay=0, ttr=60
        )
        assert queue.get(timeout=0) == Message("y", ["c"])
        assert custom.decoded == 1
        queue.put(Message("x", ["a"]))
        assert queue.get(timeout=0) == Message("x", ["a"])
        assert custom.decoded == 2


def test_a_body_the_custom_codec_refuses_is_a_decode_error() -> None:
    with factory("memory://", codec=ReversedJson()) as queues:
        queues.backend.put("jobs", b'{"action":"x","args":[]}', priority=0, delay=0, ttr=60)
        with pytest.raises(DecodeError, match="not JSON"):
            queues.get("jobs").get(timeout=0)


class Failing(Codec):
    """A codec whose decode raises ``error``: a bug in someone else's codec."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def encode(self, message: Message) -> bytes:
        return JsonCodec().encode(message)

    def decode(self, body: bytes) -> Message:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [KeyError("action"), TypeError("bad operand"), RecursionError("too deep"), ZeroDivisionError()],
    ids=repr,
)
def test_a_custom_codec_raising_anything_is_a_decode_error(error: Exception) -> None:
    with factory("memory://", codec=Failing(error)) as queues:
        queue = queues.get("jobs")
        job = put_job(queue, Message("x"))
        with pytest.raises(DecodeError, match=type(error).__name__) as excinfo:
            queue.get(timeout=0)
        assert str(error) in str(excinfo.value)
        assert excinfo.value.__cause__ is error
        assert (excinfo.value.job_id, excinfo.value.server) == job
        assert queues.backend.stats_job(job).state == "buried"


class RefusesBad(Codec):
    """JSON, except that a message whose action is "bad" makes decode raise KeyError."""

    def encode(self, message: Message) -> bytes:
        return JsonCodec().encode(message)

    def decode(self, body: bytes) -> Message:
        message = JsonCodec().decode(body)
        if message.action == "bad":
            raise KeyError("bad")
        return message


def test_a_handler_survives_a_custom_codec_raising() -> None:
    with factory("memory://", codec=RefusesBad()) as queues:
        handled: list[Message] = []
        handler = queues.handler(handled.append, "jobs")
        queue = queues.get("jobs")
        bad_id = put_job(queue, Message("bad"))
        queue.put(Message("good"))
        handler.start()
        try:
            eventually(lambda: len(handled) == 1)
            assert handler.running
            assert queues.backend.stats_job(bad_id).state == "buried"
        finally:
            handler.stop()
            assert handler.wait(10)
        assert handled == [Message("good")]


def test_codec_json_by_name() -> None:
    with factory("memory://", codec="json") as queues:
        assert isinstance(queues.codec, JsonCodec)
    with factory("memory://?codec=json") as queues:
        assert isinstance(queues.codec, JsonCodec)


@pytest.mark.parametrize("value", ["pickle", 1, JsonCodec], ids=repr)
def test_an_unknown_codec_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="codec must be a Codec"):
        factory("memory://", codec=value)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)
_padding = st.sampled_from(["", " ", "\n", " \t\r\n"])


@given(
    value=_json_values, before=_padding, after=_padding, garbage=st.sampled_from(["", "x", "{}"])
)
def test_json_is_read_as_json_loads_reads_it(
    value: object, before: str, after: str, garbage: str
) -> None:
    text = before + json.dumps(value) + after + garbage
    assert _outcome(_loads, text) == _outcome(json.loads, text)


def _outcome(loads: Callable[[str], object], text: str) -> tuple[str, object]:
    """What ``loads`` makes of ``text``: its value, or its error's message and position."""
    try:
        return "value", loads(text)
    except json.JSONDecodeError as exc:
        return "error", (exc.msg, exc.pos)

"""GobCodec against Go's own output, its refusals, AutoCodec, and both through factories.

The golden vectors come from a real Go program (``tests/gob/generate/main.go``;
its comment says how to regenerate them with Debian's ``golang-go``). That Go
reads what GobCodec writes, and that the vectors are still what Go writes, is
in ``tests/test_gob_live.py``, which needs ``go``.
"""

from __future__ import annotations

import re

import greenstalk
import pytest
from hypothesis import given
from hypothesis import strategies as st

from queue_beanstalk import AutoCodec, DecodeError, GobCodec, JsonCodec, Message, factory
from queue_beanstalk.gob import _DEFINITIONS, _MESSAGE_TYPES, MAX_DEPTH, MAX_TYPES, _is_gob, _Reader

from .gob_support import (
    BOOL,
    BYTES,
    COMPLEX,
    FLOAT,
    INT,
    INTERFACE,
    MESSAGE_TYPES,
    PYTHON_WRITES,
    STRING,
    UINT,
    Vector,
    check_vector,
    define_array,
    define_map,
    define_opaque,
    define_slice,
    define_struct,
    load_vectors,
    message_body,
    part,
    sint,
    slice_type,
    strings,
    struct,
    struct_type,
    text,
    uint,
    value,
)
from .support import put_job

codec = GobCodec()
VECTORS = load_vectors()
BY_NAME = {vector.name: vector for vector in VECTORS}


# Go's output --------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=repr)
def test_reads_what_go_writes_as_go_reads_it(vector: Vector) -> None:
    check_vector(vector, codec)


@pytest.mark.parametrize("name", sorted(PYTHON_WRITES))
def test_writes_what_go_writes(name: str) -> None:
    vector = BY_NAME[name]
    assert vector.action is not None
    assert codec.encode(Message(vector.action, vector.args)) == vector.body


def test_the_vectors_cover_the_issue() -> None:
    """The cases issue 14 names are all among the vectors (and the generator still writes them)."""
    assert {
        "no-args-nil", "no-args-empty", "other-name", "reordered", "extended",
        "extended-zero-extras", "empty-strings", "utf8", "many-args", "max-job-size",
    } <= set(BY_NAME)  # fmt: skip
    assert len(BY_NAME["max-job-size"].body) == 65535


def test_an_extended_struct_is_read_whatever_its_extra_fields() -> None:
    assert codec.decode(BY_NAME["extended"].body) == Message("x", ["a", "b"])


def test_the_definitions_read_once_are_those_in_every_tsuru_body() -> None:
    """The decoder's shortcut for the usual definitions gives what reading them gives."""
    reader = _Reader(_DEFINITIONS)
    while reader.pos < len(_DEFINITIONS):
        reader.part()
        reader.define(-reader.signed())
    assert reader.types == _MESSAGE_TYPES
    assert _DEFINITIONS == MESSAGE_TYPES  # as the tests' own writer writes them


# Encoding ----------------------------------------------------------------


def test_encode_leaves_out_empty_args_as_go_does() -> None:
    assert codec.encode(Message("x")) == BY_NAME["no-args-nil"].body


@pytest.mark.parametrize(
    "message",
    [Message("\ud800"), Message("x", ["\udfff"]), Message("x", ["ok", "a\ud800b"])],
    ids=["action", "arg", "inner-arg"],
)
def test_encode_refuses_a_lone_surrogate(message: Message) -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        codec.encode(message)


@given(action=st.text(min_size=1), args=st.lists(st.text()))
def test_decode_inverts_encode(action: str, args: list[str]) -> None:
    message = Message(action, args)
    assert codec.decode(codec.encode(message)) == message


def test_decode_gives_a_fresh_message() -> None:
    message = codec.decode(codec.encode(Message("x")))
    assert (message.id, message.queue, message.server) == (None, None, None)


def test_repr_names_the_package() -> None:
    assert repr(codec) == "queue_beanstalk.GobCodec()"


# Bodies Go may write that the vectors do not show --------------------------

EXTRA = 67  # the id of the first extra type in the crafted bodies below


def _with_extra_field(definitions: bytes, field_type: int, encoded: bytes) -> bytes:
    """A Message with one more field, X, of ``field_type`` (defined by ``definitions``)."""
    types = define_struct(65, "M", [("Action", STRING), ("X", field_type), ("Args", 66)])
    types += define_slice(66, STRING)
    fields = struct((0, text("x")), (1, encoded), (2, strings(["a"])))
    return types + definitions + value(65, fields)


@pytest.mark.parametrize(
    ("definitions", "field_type", "encoded"),
    [
        (b"", BOOL, uint(1)),
        (b"", INT, sint(-(2**63))),
        (b"", UINT, uint(2**64 - 1)),
        (b"", FLOAT, uint(0x3140)),
        (b"", BYTES, text(b"\x00\xff")),
        (b"", STRING, text("ignored")),
        (b"", COMPLEX, uint(1) + uint(2)),
        (b"", INTERFACE, uint(0)),  # nil
        (define_slice(EXTRA, INT), EXTRA, uint(3) + sint(1) + sint(0) + sint(-1)),
        (define_array(EXTRA, BOOL, 2), EXTRA, uint(2) + uint(0) + uint(1)),
        (define_map(EXTRA, STRING, FLOAT), EXTRA, uint(2) + text("a") + uint(1) + text("") + b"\0"),
        (define_struct(EXTRA, "P", [("X", INT), ("Y", INT)]), EXTRA, struct((1, sint(5)))),
        (define_struct(EXTRA, "Empty", []), EXTRA, struct()),
        (define_opaque(EXTRA, 4, "Time"), EXTRA, text(b"\x01\x02\x03")),
        (define_opaque(EXTRA, 5, "URL"), EXTRA, text(b"https://x")),
        (define_opaque(EXTRA, 6, "IP"), EXTRA, text(b"192.0.2.1")),
        # A recursive type, three deep.
        (
            define_struct(EXTRA, "Node", [("V", INT), ("Next", EXTRA)]),
            EXTRA,
            struct((0, sint(1)), (1, struct((0, sint(2)), (1, struct((0, sint(3))))))),
        ),
        # A slice of maps of slices of structs.
        (
            define_slice(EXTRA, EXTRA + 1)
            + define_map(EXTRA + 1, INT, EXTRA + 2)
            + define_slice(EXTRA + 2, EXTRA + 3)
            + define_struct(EXTRA + 3, "P", [("X", INT)]),
            EXTRA,
            uint(2) + uint(1) + sint(7) + uint(2) + struct((0, sint(1))) + struct() + uint(0),
        ),
    ],
    ids=[
        "bool", "int", "uint", "float", "bytes", "string", "complex", "nil-interface",
        "slice", "array", "map", "struct", "empty-struct", "gob-encoder", "binary-marshaler",
        "text-marshaler", "recursive", "nested",
    ],
)  # fmt: skip
def test_extra_fields_of_any_type_are_skipped(
    definitions: bytes, field_type: int, encoded: bytes
) -> None:
    body = _with_extra_field(definitions, field_type, encoded)
    assert codec.decode(body) == Message("x", ["a"])


def test_an_interface_whose_type_is_defined_inside_it_is_skipped() -> None:
    # As Go's encoder writes it: the part ends after the definition, and the
    # value goes on in the next part.
    types = define_struct(65, "M", [("Action", STRING), ("Any", INTERFACE), ("Args", 66)])
    types += define_slice(66, STRING)
    point = sint(-EXTRA) + struct_type(EXTRA, "Point", [("X", INT)])
    first = sint(65) + uint(1) + text("x") + uint(1) + text("main.Point") + point
    rest = sint(EXTRA) + text(struct((0, sint(5)))) + uint(1) + strings(["a"]) + b"\x00"
    assert codec.decode(types + part(first) + part(rest)) == Message("x", ["a"])


def test_an_interface_with_a_definition_and_a_count_in_one_part_is_skipped() -> None:
    # As Go's encoder writes an interface nested in another: a count follows
    # the definition in the same part, which Go's decoder reads past.
    types = define_struct(65, "M", [("Action", STRING), ("Any", INTERFACE)])
    ints = sint(-EXTRA) + slice_type(EXTRA, INT)
    held = ints + uint(4) + sint(EXTRA) + text(uint(0) + uint(1) + sint(9))
    body = types + value(65, struct((0, text("x")), (1, text("[]int") + held)))
    assert codec.decode(body) == Message("x")


def test_values_nested_as_deep_as_allowed_are_read() -> None:
    types = define_struct(65, "M", [("Action", STRING), ("List", EXTRA)])
    types += define_struct(EXTRA, "Node", [("Next", EXTRA)])
    nested = b"\x00"
    for _ in range(MAX_DEPTH - 1):  # the field of the message is the first level
        nested = struct((0, nested))
    assert codec.decode(types + value(65, struct((0, text("x")), (1, nested)))) == Message("x")
    with pytest.raises(ValueError, match=f"values nested more than {MAX_DEPTH} deep"):
        codec.decode(types + value(65, struct((0, text("x")), (1, struct((0, nested))))))


def test_as_many_type_definitions_as_allowed_are_read() -> None:
    many = b"".join(define_slice(EXTRA + i, INT) for i in range(MAX_TYPES - 2))
    assert codec.decode(MESSAGE_TYPES + many + value(65, struct((0, text("x"))))) == Message("x")
    one_more = many + define_slice(EXTRA + MAX_TYPES, INT)
    with pytest.raises(ValueError, match=f"more than {MAX_TYPES} type definitions"):
        codec.decode(MESSAGE_TYPES + one_more + value(65, struct((0, text("x")))))


# Refusals -------------------------------------------------------------------

_ACTION_X = struct((0, text("x")))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is empty"),
        (b"\x00", "an empty part"),
        (b"\x05ab", "a part of 5 bytes, with 2 bytes left"),
        (b"\xf8" + b"\xff" * 8, "a part of 18446744073709551615 bytes"),
        (b"\x80", "a number 128 bytes long (at most 8)"),
        (b"\xf7" + b"\x01" * 9, "a number 9 bytes long (at most 8)"),
        (b"\x02\xfe\x01", "a number is cut off"),
        (MESSAGE_TYPES, "the body ends before its value"),
        (part(sint(-5) + b"\x00"), "a definition of type 5, one of gob's own"),
        (part(sint(-64) + b"\x00"), "a definition of type 64, one of gob's own"),
        (part(sint(-(2**31)) + b"\x00"), "a definition of type 2147483648, out of range"),
        (define_slice(70, INT) * 2, "type 70 defined twice"),
        (part(sint(-70) + b"\x00"), "type 70 defined as nothing"),
        (part(sint(-70) + uint(8) + b"\x00"), "field 7 of a type definition, which has 7"),
        (
            part(sint(-70) + struct((1, struct((1, sint(2)))), (2, struct()))),
            "a type definition of more than one kind",
        ),
        (part(sint(-70) + slice_type(70, INT) + b"\x07"), "1 byte after a type definition"),
        (part(sint(-70) + slice_type(70, INT) + b"\x07\x07"), "2 bytes after a type definition"),
        (define_slice(70, 0), "type id 0 out of range"),
        (define_slice(70, -3), "type id -3 out of range"),
        (define_struct(65, "M", [("", STRING)]), "a field with no name in struct type 'M'"),
        (value(70, b"\x00"), "a value of type 70, which the body does not define"),
        (value(STRING, b"\x00" + text("x")), "a value of type string, not a struct"),
        (define_slice(70, STRING) + value(70, b"\x00"), "a value of type []string, not a struct"),
        (
            define_struct(65, "M", [("Action", STRING), ("X", 99)]) + value(65, _ACTION_X),
            "type 99, used by type 65, is not defined",
        ),
        (
            define_struct(65, "M", [("Action", STRING), ("X", 20)]) + value(65, _ACTION_X),
            "type 20, used by type 65, is not defined",  # one of gob's own, not for values
        ),
        (
            define_struct(65, "M", [("Action", STRING), ("X", 67)])
            + define_slice(67, 68)
            + value(65, _ACTION_X),
            "type 68, used by type 67, is not defined",
        ),
        (MESSAGE_TYPES + value(65, _ACTION_X + b"\x00"), "1 byte after the value in its part"),
        (MESSAGE_TYPES + value(65, _ACTION_X) + part(b"\x00"), "2 bytes after the value"),
        (MESSAGE_TYPES + value(65, uint(3) + text("x") + b"\x00"), "field 2 of 'Message'"),
        (MESSAGE_TYPES + value(65, uint(1) + uint(50) + b"x"), "the Action of 50 bytes"),
        (MESSAGE_TYPES + value(65, uint(1) + text("x")), "a number is cut off"),
        (message_body("x", ["a"])[:-3], "a part of 10 bytes, with 7 bytes left"),
        (
            MESSAGE_TYPES + value(65, struct((0, text("x")), (1, uint(1000) + text("a")))),
            "1000 arguments, with 3 bytes left",
        ),
        (
            MESSAGE_TYPES + value(65, struct((0, text("x")), (1, uint(2**63) + text("a")))),
            "9223372036854775808 arguments",
        ),
        (message_body(b"\xff"), "the Action is not UTF-8"),
        (message_body("x", ["ok", b"caf\xe9"]), "an argument is not UTF-8"),
        (
            define_struct(65, "M", [("Action", INT)]) + value(65, struct((0, sint(1)))),
            "body's gob field Action is of type int, not string",
        ),
        (
            define_struct(65, "M", [("Action", STRING), ("Args", 66)])
            + define_map(66, STRING, STRING)
            + value(65, _ACTION_X),
            "body's gob field Args is of type map[string]string, not []string",
        ),
        (
            define_struct(65, "M", [("Action", STRING), ("Args", 66)])
            + define_slice(66, BYTES)
            + value(65, _ACTION_X),
            "body's gob field Args is of type [][]byte, not []string",
        ),
        (MESSAGE_TYPES + value(65, struct()), "body's gob Message has no Action"),
        (
            define_struct(65, "M", [("Verb", STRING)]) + value(65, _ACTION_X),
            "body's gob Message has no Action",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_decode_refuses_with_a_specific_reason(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as excinfo:
        codec.decode(body)
    assert type(excinfo.value) is ValueError
    assert str(excinfo.value).startswith("body")


@pytest.mark.parametrize(
    ("definitions", "field_type", "encoded", "reason"),
    [
        (define_array(EXTRA, INT, 3), EXTRA, uint(2) + sint(1) + sint(2), "2 elements in an array"),
        (define_slice(EXTRA, INT), EXTRA, uint(10**6), "1000000 elements, with"),
        (define_map(EXTRA, INT, INT), EXTRA, uint(10) + sint(1) + sint(1), "10 map entries"),
        (b"", STRING, uint(40) + b"abc", "a string of 40 bytes"),
        (define_opaque(EXTRA, 4), EXTRA, uint(40), "a GobEncoder value of 40 bytes"),
        (b"", INTERFACE, uint(200), "an interface's type name of 200 bytes"),
        (b"", INTERFACE, text("T") + sint(99) + text(b"\x00"), "holding type 99, which is not"),
        (b"", INTERFACE, text("T") + sint(5) + uint(90), "an interface's value of 90 bytes"),
        (b"", INTERFACE, text("T") + sint(-3) + b"\x00", "a definition of type 3, one of gob's"),
        (define_struct(EXTRA, "P", [("X", INT)]), EXTRA, uint(2) + sint(1), "field 1 of 'P'"),
        (b"", INT, b"\xf6\x01", "a number 10 bytes long (at most 8)"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_bad_extra_field_is_refused(
    definitions: bytes, field_type: int, encoded: bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        codec.decode(_with_extra_field(definitions, field_type, encoded))


def test_a_refusal_says_at_which_byte() -> None:
    body = message_body("x", ["ok", b"caf\xe9"])
    with pytest.raises(ValueError, match=r"at byte (\d+):") as excinfo:
        codec.decode(body)
    at = int(re.search(r"at byte (\d+)", str(excinfo.value)).group(1))  # type: ignore[union-attr]
    assert body[at] == 0xE9


# AutoCodec --------------------------------------------------------------------


def test_auto_reads_both_and_writes_json_by_default() -> None:
    auto = AutoCodec()
    message = Message("x", ["a"])
    assert auto.writes == "json"
    assert auto.encode(message) == JsonCodec().encode(message)
    assert auto.decode(JsonCodec().encode(message)) == message
    assert auto.decode(GobCodec().encode(message)) == message
    assert repr(auto) == "queue_beanstalk.AutoCodec(encode='json')"


def test_auto_writes_gob_when_told() -> None:
    auto = AutoCodec(encode="gob")
    assert auto.writes == "gob"
    assert auto.encode(Message("x")) == GobCodec().encode(Message("x"))
    assert repr(auto) == "queue_beanstalk.AutoCodec(encode='gob')"


@pytest.mark.parametrize("encode", ["JSON", "pickle", ""])
def test_auto_refuses_another_encoding(encode: str) -> None:
    with pytest.raises(ValueError, match='encode must be "json" or "gob"'):
        AutoCodec(encode=encode)


@pytest.mark.parametrize("vector", VECTORS, ids=repr)
def test_auto_reads_every_go_body_as_gob_reads_it(vector: Vector) -> None:
    if _is_gob(vector.body):
        check_vector(vector, AutoCodec())
        return
    # Only a value of one of gob's own types starts with two ASCII bytes:
    # neither codec reads it.
    assert vector.name == "top-level-string"
    with pytest.raises(ValueError, match="body is not JSON"):
        AutoCodec().decode(vector.body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "body is not JSON"),
        (b"x", "body is not JSON"),
        (b'{"action":', "body is not JSON"),
        (b' \n{"args":[]}', 'body has no "action" string'),
        (b"\xff", "body is not a gob Message"),
        (b"{\xff", "body is not a gob Message"),
        (b"\x2a\xff\x81", "body is not a gob Message"),
        (b"\xef\xbb\xbf{}", "body is not a gob Message"),  # a UTF-8 byte order mark
    ],
    ids=repr,
)
def test_auto_refuses_with_the_reason_of_the_format_it_resembles(body: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        AutoCodec().decode(body)


@given(action=st.text(min_size=1), args=st.lists(st.text()))
def test_json_and_gob_bodies_are_told_apart(action: str, args: list[str]) -> None:
    message = Message(action, args)
    assert not _is_gob(JsonCodec().encode(message))
    assert _is_gob(GobCodec().encode(message))


# Through factories --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "writes"),
    [("gob", GobCodec, None), ("auto", AutoCodec, "json"), ("auto:gob", AutoCodec, "gob")],
)
def test_codecs_by_name(name: str, kind: type, writes: str | None) -> None:
    for made in (factory("memory://", codec=name), factory(f"memory://?codec={name}")):
        with made as queues:
            assert type(queues.codec) is kind
            if writes is not None:
                assert queues.codec.writes == writes  # type: ignore[attr-defined]


def test_an_unknown_codec_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=re.escape("one of auto, auto:gob, gob, json; got 'go'")):
        factory("memory://", codec="go")


@pytest.mark.parametrize("name", ["gob", "auto:gob"])
def test_gob_through_memory(name: str) -> None:
    with factory("memory://", codec=name) as queues:
        queue = queues.get("jobs")
        message = Message("regenerate-apprc", ["myapp", "ü"])
        queue.put(message)
        reserved = queues.backend.reserve(("jobs",), 0)
        assert reserved.body == GobCodec().encode(message)
        queues.backend.release(reserved.lease, priority=0, delay=0)
        got = queue.get(timeout=0)
        assert got == message
        queue.delete(got)


def test_a_go_body_is_read_and_a_bad_one_buried_through_memory() -> None:
    with factory("memory://?codec=gob") as queues:
        queue = queues.get("jobs")
        queues.backend.put("jobs", BY_NAME["extended"].body, priority=1, delay=0, ttr=180)
        assert queue.get(timeout=0) == Message("x", ["a", "b"])
        spoilt = BY_NAME["extended"].body[:-5]
        job = queues.backend.put("jobs", spoilt, priority=1, delay=0, ttr=180)
        with pytest.raises(DecodeError, match="body is not a gob Message") as excinfo:
            queue.get(timeout=0)
        assert (excinfo.value.job_id, excinfo.value.body) == (job.id, spoilt)
        assert queues.backend.stats_job(job).state == "buried"
        assert queues.backend.stats_job(job).priority == 1


def test_auto_reads_json_and_gob_in_one_queue_through_memory() -> None:
    with factory("memory://?codec=auto") as queues:
        queue = queues.get("jobs")
        queue.put(Message("from-python", ["json"]))
        queues.backend.put("jobs", BY_NAME["message"].body, priority=2048, delay=0, ttr=180)
        got = [queue.get(timeout=0), queue.get(timeout=0)]
        assert got == [Message("from-python", ["json"]), Message("regenerate-apprc", ["myapp"])]


def _raw_body(url: str, tube: str) -> bytes:
    host, port = url.removeprefix("beanstalk://").split(":")
    with greenstalk.Client((host, int(port)), encoding=None, use=tube) as client:
        body = client.peek_ready().body
    assert isinstance(body, bytes)
    return body


def test_gob_through_beanstalkd(beanstalkd_url: str, tube: str) -> None:
    message = Message("regenerate-apprc", ["myapp"])
    with factory(f"{beanstalkd_url}?codec=gob") as queues:
        queue = queues.get(tube)
        queue.put(message)
        assert _raw_body(beanstalkd_url, tube) == BY_NAME["message"].body
        got = queue.get(timeout=1)
        assert got == message
        queue.delete(got)


def test_a_json_worker_buries_a_gob_body_and_an_auto_one_reads_it(
    beanstalkd_url: str, tube: str
) -> None:
    with (
        factory(beanstalkd_url) as json_queues,
        factory(beanstalkd_url, codec="auto") as auto,
        factory(beanstalkd_url, codec="gob") as gob,
    ):
        put_job(auto.get(tube), Message("first"))  # JSON, as auto writes
        gob_job = put_job(gob.get(tube), Message("second"))
        assert json_queues.get(tube).get(timeout=1) == Message("first")
        with pytest.raises(DecodeError, match="not UTF-8"):
            json_queues.get(tube).get(timeout=1)
        assert json_queues.backend.stats_job(gob_job).state == "buried"
        json_queues.backend.kick_job(gob_job)
        got = auto.get(tube).get(timeout=1)
        assert got == Message("second")
        auto.get(tube).delete(got)

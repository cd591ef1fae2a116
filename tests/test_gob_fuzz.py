"""Fuzzing GobCodec: whatever the bytes, decode returns a Message or raises ValueError, quickly.

A job body comes from any client, so nothing in it may make decode raise
anything else, run long or take much memory. Besides random and mutated bytes,
bodies are built from random Go types (any of gob's kinds, nested): well
formed, where the message must come out whatever the extra fields hold, and
ill formed, with type ids that are gob's own, undefined, or recursive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queue_beanstalk import AutoCodec, GobCodec, JsonCodec, Message
from queue_beanstalk.gob import MAX_DEPTH, MAX_TYPES, _is_gob

from .gob_support import (
    BOOL,
    BYTES,
    COMPLEX,
    FLOAT,
    INT,
    INTERFACE,
    MESSAGE_TYPES,
    STRING,
    UINT,
    array_type,
    define,
    define_map,
    define_slice,
    define_struct,
    load_vectors,
    map_type,
    opaque_type,
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

codec = GobCodec()
fuzz = settings(max_examples=300, deadline=None)

GO_BODIES = [vector.body for vector in load_vectors() if len(vector.body) < 2000]


def _decode(body: bytes, decode: Callable[[bytes], Message] = codec.decode) -> Message | None:
    """Decode ``body``: its Message, or None when refused with a reason.

    Any exception but ValueError escapes and fails the test.
    """
    try:
        return decode(body)
    except ValueError as exc:
        refusal = exc
    assert type(refusal) is ValueError, f"{type(refusal).__name__} leaked: {refusal}"
    assert str(refusal).startswith("body"), str(refusal)
    return None


# Bytes -------------------------------------------------------------------------


@fuzz
@given(body=st.binary(max_size=300))
def test_any_bytes(body: bytes) -> None:
    _decode(body)


@fuzz
@given(prefix=st.sampled_from([b"", MESSAGE_TYPES, *GO_BODIES[:3]]), rest=st.binary(max_size=200))
def test_any_bytes_after_definitions(prefix: bytes, rest: bytes) -> None:
    _decode(prefix + rest)


# Numbers, lengths and counts the way gob writes them, at random: closer to
# what the decoder parses than random bytes.
_tokens = st.one_of(
    st.integers(0, 2**64 - 1).map(uint),
    st.integers(-(2**63), 2**63 - 1).map(sint),
    st.sampled_from([sint(-65), sint(65), sint(-66), sint(66), sint(-67), sint(67)]),
    st.binary(max_size=6).map(text),
    st.sampled_from([b"\x00", b"\x01", b"\x02", b"\x03", b"\x04", b"\x80", b"\xf7", b"\xff"]),
)


@fuzz
@given(parts=st.lists(st.lists(_tokens, max_size=12).map(b"".join), min_size=1, max_size=5))
def test_any_parts_of_gob_tokens(parts: list[bytes]) -> None:
    _decode(b"".join(part(data) for data in parts))


@fuzz
@given(body=st.sampled_from(GO_BODIES) | st.builds(codec.encode, st.builds(
    Message, st.text(min_size=1, max_size=8), st.lists(st.text(max_size=8), max_size=3))),
    data=st.data())  # fmt: skip
def test_any_mutation_of_a_valid_body(body: bytes, data: st.DataObject) -> None:
    mutated = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        at = data.draw(st.integers(0, len(mutated)), label="at")
        kind = data.draw(st.sampled_from(["delete", "insert", "replace", "flip"]), label="kind")
        if kind == "delete":
            del mutated[at : at + data.draw(st.integers(1, 8), label="length")]
        elif kind == "insert":
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=8) | _tokens, label="bytes")
        elif at < len(mutated):
            if kind == "replace":
                mutated[at] = data.draw(st.integers(0, 255), label="byte")
            else:
                mutated[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    decoded = _decode(bytes(mutated))
    if decoded is not None:
        assert codec.decode(codec.encode(decoded)) == decoded


# Random Go types ------------------------------------------------------------------

_LEAVES = {
    "bool": BOOL, "int": INT, "uint": UINT, "float": FLOAT, "bytes": BYTES, "string": STRING,
    "complex": COMPLEX, "interface": INTERFACE,
}  # fmt: skip


# The wireType fields of the types that encode themselves.
_OPAQUE_KINDS = {"GobEncoder": 4, "BinaryMarshaler": 5, "TextMarshaler": 6}


@dataclass(frozen=True)
class GoType:
    """A Go type, as gob sends it: a leaf, an opaque (self-encoding) type, or a composite."""

    kind: str
    children: tuple[GoType, ...] = ()
    length: int = 0  # of an array
    names: tuple[str, ...] = ()  # of a struct's fields


_field_names = st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=6)

go_types = st.recursive(
    st.sampled_from([*_LEAVES, *_OPAQUE_KINDS]).map(GoType),
    lambda inner: st.one_of(
        st.builds(lambda elem: GoType("slice", (elem,)), inner),
        st.builds(lambda elem, n: GoType("array", (elem,), n), inner, st.integers(0, 3)),
        st.builds(lambda key, elem: GoType("map", (key, elem)), inner, inner),
        st.lists(st.tuples(_field_names, inner), max_size=4, unique_by=lambda f: f[0]).map(
            lambda fields: GoType(
                "struct", tuple(t for _, t in fields), names=tuple(n for n, _ in fields)
            )
        ),
    ),
    max_leaves=12,
)


@dataclass
class Definitions:
    """Type ids given to composite types, and the parts that define them."""

    next_id: int = 67  # 65 is the message, 66 its []string
    parts: list[bytes] = field(default_factory=list)

    def id_of(self, go_type: GoType) -> int:
        if go_type.kind in _LEAVES:
            return _LEAVES[go_type.kind]
        type_id = self.next_id
        self.next_id += 1
        children = [self.id_of(child) for child in go_type.children]
        if go_type.kind == "slice":
            wire = slice_type(type_id, children[0])
        elif go_type.kind == "array":
            wire = array_type(type_id, children[0], go_type.length)
        elif go_type.kind == "map":
            wire = map_type(type_id, children[0], children[1])
        elif go_type.kind == "struct":
            wire = struct_type(type_id, f"S{type_id}", zip(go_type.names, children, strict=True))
        else:
            wire = opaque_type(type_id, _OPAQUE_KINDS[go_type.kind])
        self.parts.append(define(type_id, wire))
        return type_id


def draw_value(data: st.DataObject, go_type: GoType) -> bytes:
    """Draw a value of ``go_type`` and return it as gob writes it (zero fields left out)."""
    kind = go_type.kind
    if kind == "bool":
        return uint(data.draw(st.integers(0, 1)))
    if kind == "int":
        return sint(data.draw(st.integers(-(2**63), 2**63 - 1)))
    if kind in ("uint", "float"):
        return uint(data.draw(st.integers(0, 2**64 - 1)))
    if kind == "complex":
        return uint(data.draw(st.integers(0, 2**64 - 1))) + uint(data.draw(st.integers(0, 255)))
    if kind == "interface":
        return uint(0)  # nil: a concrete value needs a registered name (see test_gob_codec)
    if kind in ("bytes", "string", "GobEncoder", "BinaryMarshaler", "TextMarshaler"):
        return text(data.draw(st.binary(max_size=8)))
    if kind == "slice":
        count = data.draw(st.integers(0, 3))
        return uint(count) + b"".join(draw_value(data, go_type.children[0]) for _ in range(count))
    if kind == "array":
        elems = (draw_value(data, go_type.children[0]) for _ in range(go_type.length))
        return uint(go_type.length) + b"".join(elems)
    if kind == "map":
        count = data.draw(st.integers(0, 3))
        pairs = (draw_value(data, child) for _ in range(count) for child in go_type.children)
        return uint(count) + b"".join(pairs)
    present = data.draw(st.lists(st.booleans(), min_size=len(go_type.children)))
    return struct(
        *(
            (number, draw_value(data, child))
            for number, child in enumerate(go_type.children)
            if present[number]
        )
    )


@fuzz
@given(
    extras=st.lists(st.tuples(_field_names.map("X".__add__), go_types), max_size=4),
    action=st.text(min_size=1, max_size=8),
    args=st.lists(st.text(max_size=8), max_size=3),
    data=st.data(),
)
def test_a_message_is_read_whatever_extra_fields_it_has(
    extras: list[tuple[str, GoType]], action: str, args: list[str], data: st.DataObject
) -> None:
    definitions = Definitions()
    fields = [("Action", STRING), ("Args", 66)]
    fields += [(name, definitions.id_of(go_type)) for name, go_type in extras]
    order = data.draw(st.permutations(range(len(fields))), label="field order")
    values = [text(action), strings(args) if args else b"", *(
        draw_value(data, go_type) for _, go_type in extras)]  # fmt: skip
    present = [
        (number, values[index])
        for number, index in enumerate(order)
        if values[index] and (index < 2 or data.draw(st.booleans(), label="sent"))
    ]
    types = [define_struct(65, "Message", [fields[index] for index in order])]
    types += [define_slice(66, STRING), *definitions.parts]
    # Definitions may come in any order, as long as all come before the value.
    shuffled = data.draw(st.permutations(types), label="definition order")
    body = b"".join(shuffled) + value(65, struct(*present))
    assert codec.decode(body) == Message(action, args)
    assert AutoCodec().decode(body) == Message(action, args)


# Ids for fields and elements: gob's own, defined below, or not.
_ids = st.sampled_from([0, 1, 2, 6, 8, 9, 20, 64, 65, 66, 67, 68, 69, 70, 71, 2**31, 2**40])
_kinds = st.sampled_from(["slice", "array", "map", "struct", "GobEncoder", "empty"])
# Field deltas, counts and lengths small enough to reach into the types.
_small = st.integers(0, 3).map(uint)


def _wire(type_id: int, kind: str, used: list[int]) -> bytes:
    if kind == "slice":
        return slice_type(type_id, used[0])
    if kind == "array":
        return array_type(type_id, used[0], used[1] % 4)
    if kind == "map":
        return map_type(type_id, used[0], used[1])
    if kind == "struct":
        return struct_type(type_id, "S", [(f"F{n}", used_id) for n, used_id in enumerate(used)])
    if kind == "GobEncoder":
        return opaque_type(type_id, 4)
    return b"\x00"  # no kind at all


@fuzz
@given(
    fields=st.lists(_ids, min_size=1, max_size=4),
    wires=st.lists(
        st.tuples(st.integers(66, 71), _kinds, st.lists(_ids, min_size=2, max_size=4)),
        max_size=5,
        unique_by=lambda wire: wire[0],
    ),
    bad=st.none() | st.tuples(st.sampled_from([0, 8, 20, 64, 65, 66, 2**31]), _kinds),
    data=st.data(),
)
def test_ill_formed_types(
    fields: list[int],
    wires: list[tuple[int, str, list[int]]],
    bad: tuple[int, str] | None,
    data: st.DataObject,
) -> None:
    parts = [define(65, _wire(65, "struct", fields))]
    parts += [define(type_id, _wire(type_id, kind, used)) for type_id, kind, used in wires]
    if bad is not None:  # gob's own id, out of range, or defined twice
        at = data.draw(st.integers(0, len(parts)), label="bad at")
        parts.insert(at, define(bad[0], _wire(bad[0], bad[1], fields + fields)))
    top = data.draw(st.just(65) | _ids, label="top")
    tokens = data.draw(st.lists(_small | _small | _tokens, max_size=20), label="tokens")
    _decode(b"".join(parts) + value(top, b"".join(tokens)))


# Round trips and telling JSON from gob ------------------------------------------------

_with_surrogate = st.builds(
    lambda before, surrogate, after: before + surrogate + after,
    st.text(max_size=5),
    st.characters(categories=["Cs"]),
    st.text(max_size=5),
)


@fuzz
@given(
    action=st.text(min_size=1) | _with_surrogate,
    args=st.lists(st.text() | _with_surrogate, max_size=4),
)
def test_encode_round_trips_or_refuses_a_lone_surrogate(action: str, args: list[str]) -> None:
    message = Message(action, args)
    if not any("\ud800" <= char <= "\udfff" for char in action + "".join(args)):
        assert codec.decode(codec.encode(message)) == message
        return
    with pytest.raises(ValueError, match="not valid Unicode") as excinfo:
        codec.encode(message)
    assert type(excinfo.value) is ValueError


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_space = st.sampled_from(["", " ", "\n", "\t", "\r\n "])


@fuzz
@given(
    document=st.fixed_dictionaries(
        {"action": st.text(min_size=1, max_size=5)}, optional={"args": st.lists(st.text())}
    )
    | _json,
    before=_space,
    indent=st.none() | st.integers(0, 2),
    ensure_ascii=st.booleans(),
)
def test_no_json_body_is_taken_for_gob(
    document: object, before: str, indent: int | None, ensure_ascii: bool
) -> None:
    body = (before + json.dumps(document, indent=indent, ensure_ascii=ensure_ascii)).encode()
    as_json = _decode(body, JsonCodec().decode)
    if as_json is not None:
        assert not _is_gob(body)
        assert AutoCodec().decode(body) == as_json
    assert _decode(body) is None  # and gob never reads it


@fuzz
@given(body=st.binary(max_size=40) | st.sampled_from(GO_BODIES), cut=st.integers(0, 40))
def test_what_either_codec_reads_is_routed_to_it(body: bytes, cut: int) -> None:
    for candidate in (body, body[:cut], body[cut:]):
        as_gob = _decode(candidate)
        as_json = _decode(candidate, JsonCodec().decode)
        assert as_gob is None or as_json is None
        if as_gob is not None:
            assert _is_gob(candidate)
        if as_json is not None:
            assert not _is_gob(candidate)
        assert _decode(candidate, AutoCodec().decode) == (as_gob or as_json)


# Bounded work ------------------------------------------------------------------------

JOB_SIZE = 65535  # beanstalkd's default max-job-size


def _with_field(definitions: bytes, field_type: int, encoded: bytes) -> bytes:
    types = define_struct(65, "M", [("Action", STRING), ("X", field_type)]) + definitions
    return types + value(65, struct((0, text("x")), (1, encoded)))


def _deep_structs(count: int) -> bytes:
    """A slice of ``count`` values each nested as deep as allowed."""
    nested = b"\x00"
    for _ in range(MAX_DEPTH - 3):
        nested = struct((0, nested))
    types = define_slice(67, 68) + define_struct(68, "Node", [("Next", 68)])
    return _with_field(types, 67, uint(count) + nested * count)


def _many_types() -> bytes:
    """As many type definitions as allowed, each a struct of others: a large graph to check."""
    count = MAX_TYPES - 2  # the message's struct and this field's struct are the others
    types = b"".join(
        define_struct(67 + i, "S", [(f"F{k}", 67 + (i + k) % count) for k in range(1, 4)])
        for i in range(count)
    )
    return _with_field(types, 67, struct())


_MANY = JOB_SIZE - 100
WORST_CASES = {
    "many-bools": _with_field(define_slice(67, BOOL), 67, uint(_MANY) + b"\x01" * _MANY),
    "many-empty-structs": _with_field(
        define_map(67, BOOL, 68) + define_struct(68, "E", []),
        67,
        uint(_MANY // 2) + b"\x00\x00" * (_MANY // 2),
    ),
    "deep-values": _deep_structs(JOB_SIZE // (2 * MAX_DEPTH)),
    "many-types": _many_types(),
    "many-nil-interfaces": _with_field(
        define_slice(67, INTERFACE), 67, uint(_MANY) + b"\0" * _MANY
    ),
}


@pytest.mark.parametrize("name", sorted(WORST_CASES))
def test_the_worst_bodies_decode_quickly(name: str) -> None:
    body = WORST_CASES[name]
    started = time.monotonic()
    assert codec.decode(body) == Message("x")
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("name", sorted(WORST_CASES))
def test_the_worst_bodies_cut_anywhere_are_refused_quickly(name: str) -> None:
    body = WORST_CASES[name]
    started = time.monotonic()
    for cut in range(len(body) - 1, 0, -max(1, len(body) // 20)):
        _decode(body[:cut])
    assert time.monotonic() - started < 10.0

"""The gob test vectors Go wrote, what GobCodec must make of each, and a writer of crafted bodies.

The vectors (``tests/gob/vectors.jsonl``) are written by ``tests/gob/generate/main.go``;
its comment says how to regenerate them with Debian's ``golang-go``.

The writer here is the tests' own, written apart from the codec's, from
``encoding/gob/doc.go``: bodies Go would not write (hostile ones included) are
made with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from queue_beanstalk import Codec, Message

VECTORS = Path(__file__).parent / "gob" / "vectors.jsonl"

#: Vectors whose body GobCodec.encode writes, byte for byte, from the message Go decoded.
PYTHON_WRITES = frozenset(
    {"message", "no-args-nil", "no-args-empty", "empty-strings", "utf8", "many-args",
     "long-strings", "max-job-size"}
)  # fmt: skip
#: Vectors Go's decoder reads and GobCodec refuses on purpose, with the reason it gives.
GOB_CODEC_REFUSES = {
    "two-values": "bytes after the value",
    "invalid-utf8": "is not UTF-8",
    "deeper-than-max-depth": "nested more than 100 deep",
}


@dataclass(frozen=True)
class Vector:
    """One body Go's encoder wrote, and what Go's decoder made of it as tsuru's Message."""

    name: str
    body: bytes
    action: str | None  # None when Go's decoder refused the body
    args: tuple[str, ...]
    error: str | None

    def __repr__(self) -> str:
        return self.name


def load_vectors(path: Path = VECTORS) -> list[Vector]:
    """Return the vectors in a file the generator wrote."""
    vectors = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        vectors.append(
            Vector(
                record["name"],
                bytes.fromhex(record["body"]),
                record.get("action"),
                tuple(record.get("args") or ()),
                record.get("error"),
            )
        )
    return vectors


def check_vector(vector: Vector, codec: Codec) -> None:
    """Assert that ``codec`` reads ``vector`` as Go's decoder did, or refuses it as it should.

    Go gives an empty Action where the body has none; GobCodec refuses that,
    as JsonCodec refuses a body without an action.
    """
    if vector.name in GOB_CODEC_REFUSES:
        with pytest.raises(ValueError, match=re.escape(GOB_CODEC_REFUSES[vector.name])):
            codec.decode(vector.body)
    elif vector.error is not None:
        with pytest.raises(ValueError, match=r"^body"):
            codec.decode(vector.body)
    elif not vector.action:
        with pytest.raises(ValueError, match="body's gob Message has no Action"):
            codec.decode(vector.body)
    else:
        assert codec.decode(vector.body) == Message(vector.action, vector.args)


# A writer of crafted bodies ---------------------------------------------------

BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE = range(1, 9)


def uint(value: int) -> bytes:
    """gob's unsigned integer: one byte below 128, else its length negated and big-endian bytes."""
    if value < 128:
        return bytes([value])
    size = (value.bit_length() + 7) // 8
    return bytes([256 - size]) + value.to_bytes(size, "big")


def sint(value: int) -> bytes:
    """gob's signed integer: the low bit says whether the rest is complemented."""
    return uint((~value << 1) | 1 if value < 0 else value << 1)


def text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return uint(len(data)) + data


def struct(*fields: tuple[int, bytes]) -> bytes:
    """A struct value: (field number, encoded value) pairs in increasing order, then its end."""
    out, previous = b"", -1
    for number, value in fields:
        out += uint(number - previous) + value
        previous = number
    return out + b"\x00"


def part(data: bytes) -> bytes:
    return uint(len(data)) + data


def common(name: str, type_id: int) -> bytes:
    return struct((0, text(name)), (1, sint(type_id)))


def struct_type(type_id: int, name: str, fields: Iterable[tuple[str, int]]) -> bytes:
    """The wireType of a struct type: its name and (field name, type id) pairs."""
    listed = list(fields)
    field_list = uint(len(listed)) + b"".join(
        struct((0, text(field)), (1, sint(field_type))) for field, field_type in listed
    )
    return struct((2, struct((0, common(name, type_id)), (1, field_list))))


def slice_type(type_id: int, elem: int, name: str = "") -> bytes:
    return struct((1, struct((0, common(name, type_id)), (1, sint(elem)))))


def array_type(type_id: int, elem: int, length: int, name: str = "") -> bytes:
    return struct((0, struct((0, common(name, type_id)), (1, sint(elem)), (2, sint(length)))))


def map_type(type_id: int, key: int, elem: int, name: str = "") -> bytes:
    return struct((3, struct((0, common(name, type_id)), (1, sint(key)), (2, sint(elem)))))


def opaque_type(type_id: int, kind: int, name: str = "T") -> bytes:
    """A type that encodes itself: ``kind`` 4 GobEncoder, 5 BinaryMarshaler, 6 TextMarshaler."""
    return struct((kind, struct((0, common(name, type_id)))))


def define(type_id: int, wire_type: bytes) -> bytes:
    """The part that defines type ``type_id`` as ``wire_type``."""
    return part(sint(-type_id) + wire_type)


def define_struct(type_id: int, name: str, fields: Iterable[tuple[str, int]]) -> bytes:
    return define(type_id, struct_type(type_id, name, fields))


def define_slice(type_id: int, elem: int, name: str = "") -> bytes:
    return define(type_id, slice_type(type_id, elem, name))


def define_array(type_id: int, elem: int, length: int, name: str = "") -> bytes:
    return define(type_id, array_type(type_id, elem, length, name))


def define_map(type_id: int, key: int, elem: int, name: str = "") -> bytes:
    return define(type_id, map_type(type_id, key, elem, name))


def define_opaque(type_id: int, kind: int, name: str = "T") -> bytes:
    return define(type_id, opaque_type(type_id, kind, name))


def value(type_id: int, encoded: bytes) -> bytes:
    return part(sint(type_id) + encoded)


def strings(items: Iterable[str | bytes]) -> bytes:
    listed = list(items)
    return uint(len(listed)) + b"".join(text(item) for item in listed)


#: Message{Action string; Args []string} as ids 65 and 66, as Go's encoder defines it.
MESSAGE_TYPES = define_struct(65, "Message", [("Action", STRING), ("Args", 66)]) + define_slice(
    66, STRING, "[]string"
)


def message_body(action: str | bytes, args: Iterable[str | bytes] = ()) -> bytes:
    """A body as Go's encoder writes it for tsuru's Message."""
    listed = list(args)
    fields = [(0, text(action))] if action else []
    if listed:
        fields.append((1, strings(listed)))
    return MESSAGE_TYPES + value(65, struct(*fields))

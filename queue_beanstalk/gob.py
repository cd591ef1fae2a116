"""Go's gob wire format, as tsuru's Go ``queue`` package put it in job bodies.

tsuru encoded each message with a fresh ``gob.Encoder``, so every job body is
one self-contained gob stream: the definitions of the types it uses, then one
value of ``struct Message { Action string; Args []string }``. This module reads
and writes that stream in pure Python, without Go, following the wire
specification in Go's ``encoding/gob/doc.go``:

- An unsigned integer below 128 is one byte; a larger one is a byte holding
  its length negated (``0xff`` for one byte ... ``0xf8`` for eight) and then
  the value, big-endian. A signed integer is an unsigned one whose low bit says
  whether the rest is complemented.
- A stream is a series of parts, each prefixed by its length in bytes. A part
  starts with a type id: negative, it defines the type ``-id`` (ids from 65 up
  are the stream's own, below are gob's); positive, a value of that type follows.
- A struct value is a series of (field number delta, field value) pairs closed
  by a zero delta; fields holding their zero value are left out. Strings are a
  length and the bytes; slices, arrays and maps a count and the elements.

:class:`GobCodec` reads what Go's encoder writes for such a struct, whatever
the struct's name, the order of its fields, or the fields a Go program added
beside ``Action`` and ``Args`` (skipped, as Go's decoder skips fields its target
lacks); and it writes what Go's decoder reads into ``Message``. :class:`AutoCodec`
reads both gob and JSON bodies, for a migration.

The decoder trusts nothing in a body: every count and length is checked against
the bytes that are left before anything is read or allocated, every value takes
at least one byte (so no count can make it loop longer than the body is long),
values nest at most :data:`MAX_DEPTH` deep and a body defines at most
:data:`MAX_TYPES` types. Work and memory are linear in the body's length, and
every refusal is a ``ValueError`` naming what is wrong and at which byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from .codec import Codec, JsonCodec
from .message import Message

__all__ = ["MAX_DEPTH", "MAX_TYPES", "AutoCodec", "GobCodec"]

#: The deepest a value may nest in a body (a struct in a slice in a map ...).
MAX_DEPTH = 100
#: The most types one body may define.
MAX_TYPES = 1024

# gob's own type ids: the predefined types a stream may use without defining them.
_BOOL, _INT, _UINT, _FLOAT, _BYTES, _STRING, _COMPLEX, _INTERFACE = range(1, 9)
_BUILTIN_NAMES = {
    _BOOL: "bool",
    _INT: "int",
    _UINT: "uint",
    _FLOAT: "float",
    _BYTES: "[]byte",
    _STRING: "string",
    _COMPLEX: "complex",
    _INTERFACE: "interface",
}
# Ids from here up belong to the types a stream defines: doc.go reserves 0 to 64
# (Go's decoder takes 64 too, which its encoder never gives; refusing it keeps
# every gob body's second byte non-ASCII, which AutoCodec relies on).
_FIRST_USER_ID = 65
# gob's type ids are int32s.
_MAX_TYPE_ID = 2**31 - 1
# The fields of gob's wireType, in order: at most one is set in a definition.
_WIRE_TYPE_KINDS = (
    "array",
    "slice",
    "struct",
    "map",
    "GobEncoder",
    "BinaryMarshaler",
    "TextMarshaler",
)


class _Struct(NamedTuple):
    name: str
    fields: tuple[tuple[str, int], ...]  # (name, type id), by field number


class _Slice(NamedTuple):
    name: str
    elem: int


class _Array(NamedTuple):
    name: str
    elem: int
    length: int


class _Map(NamedTuple):
    name: str
    key: int
    elem: int


class _Opaque(NamedTuple):
    """A type that encodes itself (GobEncoder, BinaryMarshaler, TextMarshaler): bytes."""

    name: str
    kind: str


_Type = _Struct | _Slice | _Array | _Map | _Opaque


class _Reader:
    """Reads one gob body, with the type definitions it has met so far.

    ``end`` is the end of the part being read: nothing may be read past it.
    """

    __slots__ = ("data", "end", "pos", "types")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.types: dict[int, _Type] = {}

    def fail(self, reason: str) -> ValueError:
        return ValueError(f"body is not a gob Message (at byte {self.pos}: {reason})")

    # Numbers, lengths and counts ----------------------------------------

    def unsigned(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise self.fail("a number is cut off")
        first = self.data[pos]
        if first < 0x80:
            self.pos = pos + 1
            return first
        size = 256 - first
        if size > 8:
            raise self.fail(f"a number {size} bytes long (at most 8)")
        stop = pos + 1 + size
        if stop > self.end:
            raise self.fail("a number is cut off")
        self.pos = stop
        return int.from_bytes(self.data[pos + 1 : stop], "big")

    def signed(self) -> int:
        value = self.unsigned()
        return ~(value >> 1) if value & 1 else value >> 1

    def length(self, what: str) -> int:
        """Read the length of ``what`` (bytes), checked against what the part has left."""
        length = self.unsigned()
        if length > self.end - self.pos:
            raise self.fail(f"{what} of {_bytes(length)}, with {_bytes(self.end - self.pos)} left")
        return length

    def count(self, what: str, smallest: int) -> int:
        """Read how many ``what`` follow, each at least ``smallest`` bytes long.

        Checked against the whole body, not the part: elements may run on into
        the next part (see :meth:`skip_interface`).
        """
        count = self.unsigned()
        left = len(self.data) - self.pos
        if count * smallest > left:
            raise self.fail(f"{count} {what}, with {_bytes(left)} left")
        return count

    def text(self, what: str) -> str:
        """Read a string as UTF-8; ``what`` names it in the error."""
        length = self.length(what)
        start = self.pos
        self.pos = start + length
        try:
            return self.data[start : self.pos].decode("utf-8")
        except UnicodeDecodeError as exc:
            self.pos = start + exc.start
            raise self.fail(f"{what} is not UTF-8 ({exc.reason})") from None

    def skip_bytes(self, what: str) -> None:
        length = self.length(what)  # first: it moves pos
        self.pos += length

    def fields(self, count: int, type_name: str) -> Iterator[int]:
        """Yield the numbers of the fields a struct value of ``count`` fields sends.

        Each field is sent as the difference from the previous field's number
        (-1 at the start); a difference of zero ends the struct.
        """
        number = -1
        while True:
            delta = self.unsigned()
            if delta == 0:
                return
            number += delta
            if number >= count:
                raise self.fail(f"field {number} of {type_name}, which has {count}")
            yield number

    # Type definitions -----------------------------------------------------

    def type_id(self) -> int:
        type_id = self.signed()
        if not 0 < type_id <= _MAX_TYPE_ID:
            raise self.fail(f"type id {type_id} out of range")
        return type_id

    def define(self, type_id: int) -> None:
        """Read the definition of type ``type_id`` (a gob ``wireType``) and keep it."""
        if type_id < _FIRST_USER_ID:
            raise self.fail(f"a definition of type {type_id}, one of gob's own")
        if type_id > _MAX_TYPE_ID:
            raise self.fail(f"a definition of type {type_id}, out of range")
        if type_id in self.types:
            raise self.fail(f"type {type_id} defined twice")
        if len(self.types) >= MAX_TYPES:
            raise self.fail(f"more than {MAX_TYPES} type definitions")
        defined: _Type | None = None
        for kind in self.fields(len(_WIRE_TYPE_KINDS), "a type definition"):
            if defined is not None:
                raise self.fail("a type definition of more than one kind")
            if kind == 0:
                defined = self.array_type()
            elif kind == 1:
                defined = self.slice_type()
            elif kind == 2:
                defined = self.struct_type()
            elif kind == 3:
                defined = self.map_type()
            else:
                defined = self.opaque_type(_WIRE_TYPE_KINDS[kind])
        if defined is None:
            raise self.fail(f"type {type_id} defined as nothing")
        self.types[type_id] = defined

    def common_type(self) -> str:
        """Read a ``CommonType`` and return its name (its id repeats the definition's)."""
        name = ""
        for field in self.fields(2, "a type's name and id"):
            if field == 0:
                # Only ever shown in an error message: any bytes will do.
                length = self.length("a type name")
                self.pos += length
                name = self.data[self.pos - length : self.pos].decode("utf-8", "replace")
            else:
                self.signed()
        return name

    def array_type(self) -> _Array:
        name, elem, length = "", 0, 0
        for field in self.fields(3, "an array type"):
            if field == 0:
                name = self.common_type()
            elif field == 1:
                elem = self.type_id()
            else:
                length = self.signed()
        return _Array(name, elem, length)

    def slice_type(self) -> _Slice:
        name, elem = "", 0
        for field in self.fields(2, "a slice type"):
            if field == 0:
                name = self.common_type()
            else:
                elem = self.type_id()
        return _Slice(name, elem)

    def map_type(self) -> _Map:
        name, key, elem = "", 0, 0
        for field in self.fields(3, "a map type"):
            if field == 0:
                name = self.common_type()
            elif field == 1:
                key = self.type_id()
            else:
                elem = self.type_id()
        return _Map(name, key, elem)

    def opaque_type(self, kind: str) -> _Opaque:
        name = ""
        for _ in self.fields(1, f"a {kind} type"):
            name = self.common_type()
        return _Opaque(name, kind)

    def struct_type(self) -> _Struct:
        name = ""
        fields: tuple[tuple[str, int], ...] = ()
        for field in self.fields(2, "a struct type"):
            if field == 0:
                name = self.common_type()
            else:
                # Each field's definition is a struct value: at least its end mark.
                fields = tuple(self.field_type(name) for _ in range(self.count("fields", 1)))
        return _Struct(name, fields)

    def field_type(self, struct_name: str) -> tuple[str, int]:
        name, type_id = "", 0
        for field in self.fields(2, "a struct field's definition"):
            if field == 0:
                name = self.text("a field name")
            else:
                type_id = self.type_id()
        if not name:
            raise self.fail(f"a field with no name in struct type {struct_name!r}")
        return name, type_id

    def check_defined(self, type_id: int) -> None:
        """Refuse the value's type unless every type it uses is defined, as Go's decoder does."""
        seen = {type_id}
        pending = [(type_id, 0)]
        while pending:
            current, used_by = pending.pop()
            if _BOOL <= current <= _INTERFACE:
                continue
            defined = self.types.get(current)
            if defined is None:
                raise self.fail(f"type {current}, used by type {used_by}, is not defined")
            if isinstance(defined, _Struct):
                uses = [elem for _, elem in defined.fields]
            elif isinstance(defined, _Map):
                uses = [defined.key, defined.elem]
            elif isinstance(defined, _Opaque):
                uses = []
            else:
                uses = [defined.elem]
            for used in uses:
                if used not in seen:
                    seen.add(used)
                    pending.append((used, current))

    def type_name(self, type_id: int, depth: int = 0) -> str:
        """Describe a type for an error message, in Go's notation where it has no name."""
        if type_id in _BUILTIN_NAMES:
            return _BUILTIN_NAMES[type_id]
        defined = self.types.get(type_id)
        if defined is None:
            return f"type {type_id}"
        if defined.name or isinstance(defined, (_Struct, _Opaque)):
            return defined.name or "struct"
        if depth == 3:  # a description, not a proof: the type may be recursive
            return "..."
        if isinstance(defined, _Slice):
            return f"[]{self.type_name(defined.elem, depth + 1)}"
        if isinstance(defined, _Array):
            return f"[{defined.length}]{self.type_name(defined.elem, depth + 1)}"
        key, elem = (self.type_name(used, depth + 1) for used in (defined.key, defined.elem))
        return f"map[{key}]{elem}"

    # Values -----------------------------------------------------------------

    def skip(self, type_id: int, depth: int) -> None:
        """Read past a value of type ``type_id``, nested ``depth`` deep, keeping nothing."""
        if depth > MAX_DEPTH:
            raise self.fail(f"values nested more than {MAX_DEPTH} deep")
        if type_id <= _FLOAT:  # bool, int, uint and float are all one number
            self.unsigned()
        elif type_id <= _STRING:
            self.skip_bytes("a string")
        elif type_id == _COMPLEX:
            self.unsigned()
            self.unsigned()
        elif type_id == _INTERFACE:
            self.skip_interface()
        else:
            self.skip_defined(self.types[type_id], depth)

    def skip_defined(self, defined: _Type, depth: int) -> None:
        # Every value takes at least one byte, so a count is checked against
        # the bytes left before any element is read.
        if isinstance(defined, _Struct):
            for number in self.fields(len(defined.fields), repr(defined.name)):
                self.skip(defined.fields[number][1], depth + 1)
        elif isinstance(defined, _Slice):
            for _ in range(self.count("elements", 1)):
                self.skip(defined.elem, depth + 1)
        elif isinstance(defined, _Array):
            count = self.count("elements", 1)
            if count != defined.length:
                raise self.fail(f"{count} elements in an array of {defined.length}")
            for _ in range(count):
                self.skip(defined.elem, depth + 1)
        elif isinstance(defined, _Map):
            for _ in range(self.count("map entries", 2)):
                self.skip(defined.key, depth + 1)
                self.skip(defined.elem, depth + 1)
        else:
            self.skip_bytes(f"a {defined.kind} value")

    def skip_interface(self) -> None:
        """Read past an interface value: a type name, its types, and a value skipped by length."""
        length = self.length("an interface's type name")
        if length == 0:
            return  # a nil interface
        self.pos += length
        while True:
            # Go's encoder ends the part after each definition it sends here,
            # and the value goes on in the next part; or, nested in another
            # interface, it writes a count there, which its decoder reads past.
            if self.pos == self.end:
                self.part()
            type_id = self.signed()
            if type_id >= 0:
                break
            self.define(-type_id)
            if self.pos < self.end:
                self.unsigned()
        if not (_BOOL <= type_id <= _INTERFACE or type_id in self.types):
            raise self.fail(f"an interface holding type {type_id}, which is not defined")
        self.skip_bytes("an interface's value")

    # The message ------------------------------------------------------------

    def part(self) -> None:
        """Start reading the next length-prefixed part of the body."""
        self.end = len(self.data)
        length = self.length("a part")
        if length == 0:
            raise self.fail("an empty part")
        self.end = self.pos + length

    def message(self) -> Message:
        """Read the whole body: type definitions, then one message, then nothing."""
        if not self.data:
            raise ValueError("body is empty, not a gob Message")
        if self.data.startswith(_DEFINITIONS):
            # What Go's encoder (and GobCodec's) sends for tsuru's Message: read
            # already, once (it is most of the body, and most of the work).
            self.types.update(_MESSAGE_TYPES)
            self.pos = len(_DEFINITIONS)
        while True:
            if self.pos == len(self.data):
                raise self.fail("the body ends before its value")
            self.part()
            type_id = self.signed()
            if type_id >= 0:
                break
            self.define(-type_id)
            if self.pos != self.end:
                raise self.fail(f"{_bytes(self.end - self.pos)} after a type definition")
        action, args = self.message_value(type_id)
        if self.pos != self.end:
            raise self.fail(f"{_bytes(self.end - self.pos)} after the value in its part")
        if self.end != len(self.data):
            self.pos = self.end
            raise self.fail(f"{_bytes(len(self.data) - self.end)} after the value")
        if not action:
            raise ValueError("body's gob Message has no Action")
        return Message(action, args)

    def message_value(self, type_id: int) -> tuple[str, list[str]]:
        """Read a struct value with ``Action`` and ``Args`` fields; skip its other fields."""
        if type_id in _BUILTIN_NAMES:
            raise self.fail(f"a value of type {_BUILTIN_NAMES[type_id]}, not a struct")
        defined = self.types.get(type_id)
        if defined is None:
            raise self.fail(f"a value of type {type_id}, which the body does not define")
        if not isinstance(defined, _Struct):
            raise self.fail(f"a value of type {self.type_name(type_id)}, not a struct")
        self.check_defined(type_id)
        for name, field_type in defined.fields:
            if name == "Action" and field_type != _STRING:
                raise ValueError(
                    f"body's gob field Action is of type {self.type_name(field_type)}, not string"
                )
            if name == "Args" and not self.is_strings(field_type):
                raise ValueError(
                    f"body's gob field Args is of type {self.type_name(field_type)}, not []string"
                )
        action = ""
        args: list[str] = []
        for number in self.fields(len(defined.fields), repr(defined.name)):
            name, field_type = defined.fields[number]
            if name == "Action":
                action = self.text("the Action")
            elif name == "Args":
                args = [self.text("an argument") for _ in range(self.count("arguments", 1))]
            else:
                self.skip(field_type, 1)
        return action, args

    def is_strings(self, type_id: int) -> bool:
        defined = self.types.get(type_id)
        return isinstance(defined, _Slice) and defined.elem == _STRING


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"


# Writing ----------------------------------------------------------------------


def _uint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    data = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes((256 - len(data),)) + data


def _int(value: int) -> bytes:
    return _uint(~value << 1 | 1 if value < 0 else value << 1)


def _string(value: bytes) -> bytes:
    return _uint(len(value)) + value


def _part(data: bytes) -> bytes:
    return _uint(len(data)) + data


def _common_type(name: str, type_id: int) -> bytes:
    # Field 0 (delta 1) the name, field 1 (delta 1) the id, end of struct.
    return b"\x01" + _string(name.encode()) + b"\x01" + _int(type_id) + b"\x00"


# The types Go's encoder defines for tsuru's Message, with the ids it gives
# them: struct Message {Action string; Args []string} is 65, []string is 66.
_MESSAGE_ID = 65
_ARGS_ID = 66
_DEFINITIONS = _part(
    _int(-_MESSAGE_ID)
    + b"\x03"  # wireType field 2: a struct type
    + b"\x01"  # its field 0: the CommonType
    + _common_type("Message", _MESSAGE_ID)
    + b"\x01"  # its field 1: the fields
    + _uint(2)
    + (b"\x01" + _string(b"Action") + b"\x01" + _int(_STRING) + b"\x00")
    + (b"\x01" + _string(b"Args") + b"\x01" + _int(_ARGS_ID) + b"\x00")
    + b"\x00\x00"  # end of the struct type, end of the wireType
) + _part(
    _int(-_ARGS_ID)
    + b"\x02"  # wireType field 1: a slice type
    + b"\x01"  # its field 0: the CommonType
    + _common_type("[]string", _ARGS_ID)
    + b"\x01"  # its field 1: the element type
    + _int(_STRING)
    + b"\x00\x00"  # end of the slice type, end of the wireType
)
_MESSAGE_TYPES: dict[int, _Type] = {
    _MESSAGE_ID: _Struct("Message", (("Action", _STRING), ("Args", _ARGS_ID))),
    _ARGS_ID: _Slice("[]string", _STRING),
}
_VALUE_START = _int(_MESSAGE_ID)


class GobCodec(Codec):
    """Go's ``encoding/gob``, as tsuru's Go queue wrote job bodies: one gob stream each.

    ``encode`` writes exactly what a fresh Go ``gob.Encoder`` writes for
    ``Message{Action: ..., Args: ...}`` (type definitions, then the value), so a
    Go program decodes it into its ``Message`` struct.

    ``decode`` reads what Go's encoder writes for any struct with an ``Action``
    string and an ``Args`` []string, as Go's decoder would into ``Message``:
    under any type name, with the fields in any order, either left out when
    empty, and with fields of any other gob type beside them, skipped.

    A body is refused with a ``ValueError`` saying why (and the queue buries
    it): bytes that are not gob, a truncated body, lengths or counts past its
    end, types used and not defined, a value that is not a struct, ``Action``
    or ``Args`` of another type, and no ``Action`` (Go's encoder leaves an
    empty one out; Go's decoder would give ``""``). It is stricter than Go's
    decoder where a body is odd or hostile: strings must be UTF-8 (Go's may be
    any bytes), values may nest at most :data:`MAX_DEPTH` deep and a body
    define at most :data:`MAX_TYPES` types; and, which Go's encoder never
    writes otherwise, the body must hold one value and nothing after it (Go
    reads the first and ignores the rest), every struct value must end with its
    end mark, no type may have id 64, and an interface's type must be defined.

    Stateless, so thread-safe.
    """

    def encode(self, message: Message) -> bytes:
        """Return ``message`` as one gob stream of Go's ``Message{Action, Args}``."""
        action, args = message._action, message._args
        try:
            value = _VALUE_START + b"\x01" + _string(action.encode("utf-8"))
            if args:  # Go's encoder leaves out an empty slice
                value += b"\x01" + _uint(len(args))
                value += b"".join([_string(arg.encode("utf-8")) for arg in args])
        except UnicodeEncodeError as exc:
            raise ValueError(f"message is not valid Unicode text ({exc.reason})") from exc
        return _DEFINITIONS + _part(value + b"\x00")

    def decode(self, body: bytes) -> Message:
        """Return the message in a gob ``body``; raise ValueError naming what is wrong."""
        reader = _Reader(bytes(body))
        try:
            return reader.message()
        except RecursionError as exc:
            # Only when the caller's own stack is already nearly full: the
            # decoder's recursion is bounded by MAX_DEPTH.
            raise ValueError("body is nested too deeply") from exc

    def __repr__(self) -> str:
        return "queue_beanstalk.GobCodec()"


class AutoCodec(Codec):
    """Reads JSON and gob bodies alike, and writes one of them: for moving off gob.

    A body is read as JSON when its first two bytes are ASCII and as gob
    otherwise; the two cannot be confused. A JSON body (``{``, after any
    whitespace, and then whitespace, ``"`` or ``}``) starts with two ASCII
    bytes. A gob body's first byte is the length of its first part: either
    that is 128 or more, and the byte is not ASCII, or the next byte starts
    the part's type id, which for the types a body defines (ids 65 and up) is
    an integer of two bytes or more, whose first byte is not ASCII. So no body
    :class:`JsonCodec` reads is taken for gob, nor one :class:`GobCodec` reads
    for JSON, and a body neither reads is refused by the one it resembles.

    :param encode: ``"json"`` (the default) or ``"gob"``: how messages are
        written. Write gob while Go programs still consume the queues, JSON
        once none does.
    :raises ValueError: for another ``encode``.
    """

    def __init__(self, encode: str = "json") -> None:
        if encode not in ("json", "gob"):
            raise ValueError(f'encode must be "json" or "gob", not {encode!r}')
        self._json = JsonCodec()
        self._gob = GobCodec()
        self._writes = encode
        self._writer: Codec = self._gob if encode == "gob" else self._json

    @property
    def writes(self) -> str:
        """How messages are encoded: ``"json"`` or ``"gob"``."""
        return self._writes

    def encode(self, message: Message) -> bytes:
        """Return ``message`` as JSON or gob, as the codec was made to write."""
        return self._writer.encode(message)

    def decode(self, body: bytes) -> Message:
        """Return the message in a JSON or gob ``body``; raise ValueError naming what is wrong."""
        if _is_gob(body):
            return self._gob.decode(body)
        return self._json.decode(body)

    def __repr__(self) -> str:
        return f"queue_beanstalk.AutoCodec(encode={self._writes!r})"


def _is_gob(body: bytes) -> bool:
    """Return whether ``body`` is taken for gob rather than JSON (see :class:`AutoCodec`)."""
    return any(byte >= 0x80 for byte in body[:2])

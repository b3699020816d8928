"""Thrift binary protocol at the byte level: find a message's end and its location strings.

The metastore proxy never decodes a message into objects. It walks the encoding once, guided
by a *location schema* (which fields lead to storage locations), and returns

* where the message ends — TBinaryProtocol over a plain socket has no length prefix, so the
  only way to know is to walk the whole structure;
* the byte span of every location string found on the way.

Everything else is skipped by type without being interpreted, so fields and methods that no
IDL known here describes pass through untouched. The walk never trusts a length it has not
checked against the buffer and the configured maximum: a truncated message raises
:class:`Incomplete` (read more bytes), a malformed one raises :class:`Malformed`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

# TType codes
STOP, VOID, BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST, UUID = (
    0,
    1,
    2,
    3,
    4,
    6,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
)
FIXED_SIZE = {BOOL: 1, BYTE: 1, DOUBLE: 8, I16: 2, I32: 4, I64: 8, UUID: 16}
VALID_TYPES = frozenset({BOOL, BYTE, DOUBLE, I16, I32, I64, STRING, STRUCT, MAP, SET, LIST, UUID})

# message types
CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
VERSION_1 = 0x80010000
VERSION_MASK = 0xFFFF0000

MAX_DEPTH = 64

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")


class WireError(Exception):
    """Base class of wire-level problems."""


class Incomplete(WireError):  # noqa: N818 - it is a state, not a failure
    """The buffer ends before the message does: read more bytes."""


class Malformed(WireError):
    """The bytes are not a valid Thrift binary message."""


# A location schema node. For a struct: {field id: (expected ttype, child)}; child is
#   a str          — the field itself is a location string; the str says which kind
#                    (LOC: a table/partition storage location, DB_LOC: a database or catalog
#                    location, ROOT_LOC: a partition spec's root path);
#   StructSchema   — descend into the struct;
#   ("list", elem) — a list/set whose elements are LOC or StructSchema;
#   ("map", val)   — a map whose *values* are LOC or StructSchema (keys are skipped).
LOC = "loc"
DB_LOC = "db"
ROOT_LOC = "root"
Child = Union[str, "StructSchema", tuple]
#: (offset of the 4-byte length prefix, length, kind)
Span = tuple[int, int, str]


class StructSchema(dict[int, tuple[int, "Child"]]):
    """Field id → (ttype, child) for the fields of one struct that lead to locations."""

    __slots__ = ("name",)

    def __init__(self, name: str = "") -> None:
        super().__init__()
        self.name = name

    def __hash__(self) -> int:  # type: ignore[override]  # identity: schemas are shared, possibly recursive
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


@dataclass(frozen=True)
class MessageHeader:
    name: str
    mtype: int
    seqid: int
    body_start: int
    strict: bool


def parse_header(buf: bytes | bytearray | memoryview, max_name: int = 1024) -> MessageHeader:
    """Parse the message header (strict or old-style) at the start of ``buf``."""
    if len(buf) < 4:
        raise Incomplete
    (first,) = _I32.unpack_from(buf, 0)
    if first < 0:
        version = first & 0xFFFFFFFF
        if version & VERSION_MASK != VERSION_1:
            raise Malformed(f"bad Thrift version 0x{version:08x} (is this a Thrift binary client?)")
        mtype = version & 0xFF
        if len(buf) < 8:
            raise Incomplete
        (n,) = _I32.unpack_from(buf, 4)
        if n < 0 or n > max_name:
            raise Malformed(f"bad method name length {n}")
        if len(buf) < 8 + n + 4:
            raise Incomplete
        name_bytes = bytes(buf[8 : 8 + n])
        (seqid,) = _I32.unpack_from(buf, 8 + n)
        body = 12 + n
        strict = True
    else:
        # old-style (non-strict): name length, name, type byte, seqid
        n = first
        if n > max_name:
            raise Malformed(f"not a Thrift binary message (first word {first})")
        if len(buf) < 4 + n + 5:
            raise Incomplete
        name_bytes = bytes(buf[4 : 4 + n])
        mtype = buf[4 + n]
        (seqid,) = _I32.unpack_from(buf, 5 + n)
        body = 9 + n
        strict = False
    if mtype not in (CALL, REPLY, EXCEPTION, ONEWAY):
        raise Malformed(f"bad message type {mtype}")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("method name is not UTF-8") from None
    return MessageHeader(name, mtype, seqid, body, strict)


def encode_header(name: str, mtype: int, seqid: int) -> bytes:
    nb = name.encode("utf-8")
    return _U32.pack(VERSION_1 | mtype) + _I32.pack(len(nb)) + nb + _I32.pack(seqid)


class Walker:
    """Walks one struct value; collects ``(offset of the length prefix, length)`` of locations.

    ``limit`` bounds every length and count read from the wire, so a hostile "list of 2^31
    elements" fails fast instead of allocating or waiting for bytes that never come.
    """

    __slots__ = ("buf", "end", "limit", "spans")

    def __init__(self, buf: bytes | bytearray | memoryview, limit: int) -> None:
        self.buf = buf
        self.end = len(buf)
        self.limit = limit
        self.spans: list[Span] = []

    # -- generic skipping -----------------------------------------------------------------

    def skip(self, pos: int, ttype: int, depth: int) -> int:
        buf, end = self.buf, self.end
        size = FIXED_SIZE.get(ttype)
        if size is not None:
            pos += size
            if pos > end:
                raise Incomplete
            return pos
        if ttype == STRING:
            if pos + 4 > end:
                raise Incomplete
            (n,) = _I32.unpack_from(buf, pos)
            if n < 0 or n > self.limit:
                raise Malformed(f"bad string length {n} at byte {pos}")
            pos += 4 + n
            if pos > end:
                raise Incomplete
            return pos
        if depth > MAX_DEPTH:
            raise Malformed("nesting too deep")
        if ttype == STRUCT:
            while True:
                if pos >= end:
                    raise Incomplete
                ft = buf[pos]
                if ft == STOP:
                    return pos + 1
                if ft not in VALID_TYPES:
                    raise Malformed(f"bad field type {ft} at byte {pos}")
                pos = self.skip(pos + 3, ft, depth + 1)
        if ttype in (LIST, SET):
            if pos + 5 > end:
                raise Incomplete
            et = buf[pos]
            (n,) = _I32.unpack_from(buf, pos + 1)
            pos += 5
            if et not in VALID_TYPES or n < 0 or n > self.limit:
                raise Malformed(f"bad list header (type {et}, size {n}) at byte {pos - 5}")
            esize = FIXED_SIZE.get(et)
            if esize is not None:
                pos += n * esize
                if pos > end:
                    raise Incomplete
                return pos
            skip = self.skip
            for _ in range(n):
                pos = skip(pos, et, depth + 1)
            return pos
        if ttype == MAP:
            if pos + 6 > end:
                raise Incomplete
            kt, vt = buf[pos], buf[pos + 1]
            (n,) = _I32.unpack_from(buf, pos + 2)
            pos += 6
            if n < 0 or n > self.limit or (n and (kt not in VALID_TYPES or vt not in VALID_TYPES)):
                raise Malformed(f"bad map header at byte {pos - 6}")
            skip = self.skip
            for _ in range(n):
                pos = skip(pos, kt, depth + 1)
                pos = skip(pos, vt, depth + 1)
            return pos
        raise Malformed(f"bad type {ttype} at byte {pos}")

    # -- schema-guided walking ------------------------------------------------------------

    def value(self, pos: int, ttype: int, child: Child | None, depth: int) -> int:
        if child is None:
            return self.skip(pos, ttype, depth)
        if isinstance(child, str):
            if ttype != STRING:
                return self.skip(pos, ttype, depth)
            if pos + 4 > self.end:
                raise Incomplete
            (n,) = _I32.unpack_from(self.buf, pos)
            if n < 0 or n > self.limit:
                raise Malformed(f"bad string length {n} at byte {pos}")
            if pos + 4 + n > self.end:
                raise Incomplete
            self.spans.append((pos, n, child))
            return pos + 4 + n
        if isinstance(child, StructSchema):
            if ttype != STRUCT:
                return self.skip(pos, ttype, depth)
            return self.struct(pos, child, depth + 1)
        assert isinstance(child, tuple)
        kind, sub = child
        buf, end = self.buf, self.end
        if kind == "list" and ttype in (LIST, SET):
            if pos + 5 > end:
                raise Incomplete
            et = buf[pos]
            (n,) = _I32.unpack_from(buf, pos + 1)
            pos += 5
            if et not in VALID_TYPES or n < 0 or n > self.limit:
                raise Malformed(f"bad list header (type {et}, size {n}) at byte {pos - 5}")
            for _ in range(n):
                pos = self.value(pos, et, sub, depth + 1)
            return pos
        if kind == "map" and ttype == MAP:
            if pos + 6 > end:
                raise Incomplete
            kt, vt = buf[pos], buf[pos + 1]
            (n,) = _I32.unpack_from(buf, pos + 2)
            pos += 6
            if n < 0 or n > self.limit or (n and (kt not in VALID_TYPES or vt not in VALID_TYPES)):
                raise Malformed(f"bad map header at byte {pos - 6}")
            for _ in range(n):
                pos = self.skip(pos, kt, depth + 1)
                pos = self.value(pos, vt, sub, depth + 1)
            return pos
        return self.skip(pos, ttype, depth)

    def struct(self, pos: int, schema: StructSchema | None, depth: int = 0) -> int:
        if depth > MAX_DEPTH:
            raise Malformed("nesting too deep")
        if not schema:
            return self.skip(pos, STRUCT, depth)
        buf, end = self.buf, self.end
        get = schema.get
        while True:
            if pos >= end:
                raise Incomplete
            ft = buf[pos]
            if ft == STOP:
                return pos + 1
            if ft not in VALID_TYPES:
                raise Malformed(f"bad field type {ft} at byte {pos}")
            if pos + 3 > end:
                raise Incomplete
            (fid,) = _I16.unpack_from(buf, pos + 1)
            entry = get(fid)
            if entry is None or entry[0] != ft:
                pos = self.skip(pos + 3, ft, depth + 1)
            else:
                pos = self.value(pos + 3, ft, entry[1], depth + 1)


@dataclass(frozen=True)
class Scanned:
    """One complete message found at the start of a buffer."""

    header: MessageHeader
    end: int
    spans: list[Span]


def walk_python(
    buf: bytes | bytearray | memoryview, start: int, schema: StructSchema | None, limit: int
) -> tuple[int, list[Span]]:
    """The reference walker: ``(end, spans)``; raises Incomplete / Malformed."""
    walker = Walker(buf, limit)
    end = walker.struct(start, schema)
    return end, walker.spans


def walk_c(
    buf: bytes | bytearray | memoryview, start: int, schema: StructSchema | None, limit: int
) -> tuple[int, list[Span]]:
    """The C walker with the reference walker's contract."""
    try:
        end, spans = _walk.walk(buf, start, schema, limit)
    except ValueError as e:
        raise Malformed(str(e)) from None
    if end < 0:
        raise Incomplete
    return end, spans


def value_python(
    buf: bytes | bytearray | memoryview, start: int, ttype: int, child: Child | None, limit: int
) -> tuple[int, list[Span]]:
    """Walk one value of type ``ttype``: ``(end, spans)``; raises Incomplete / Malformed."""
    if ttype not in VALID_TYPES:
        raise Malformed(f"bad type {ttype} at byte {start}")
    walker = Walker(buf, limit)
    end = walker.value(start, ttype, child, 1)
    return end, walker.spans


def value_c(
    buf: bytes | bytearray | memoryview, start: int, ttype: int, child: Child | None, limit: int
) -> tuple[int, list[Span]]:
    try:
        end, spans = _walk.walk_value(buf, start, ttype, child, limit)
    except ValueError as e:
        raise Malformed(str(e)) from None
    if end < 0:
        raise Incomplete
    return end, spans


try:
    if os.environ.get("METAPROXY_PURE_PYTHON"):
        raise ImportError("pure Python requested")
    from metaproxy.wire import _walk  # type: ignore[attr-defined]

    walk = walk_c
    walk_value = value_c
    ACCELERATED = True
except ImportError:
    walk = walk_python
    walk_value = value_python
    ACCELERATED = False


class IncrementalScanner:
    """Scans one message as its bytes arrive, never walking the same bytes twice (much).

    A reply like ``get_partitions_by_names`` is one list of thousands of partitions and can
    arrive in hundreds of TCP segments. Walking it from the start after each segment would be
    quadratic; this scanner keeps its place at the granularity of struct fields and list
    elements (down to ``RESUME_DEPTH`` levels) and walks whole only what lies below that.
    """

    RESUME_DEPTH = 4

    def __init__(self, schema_for: Callable[[MessageHeader], StructSchema | None], limit: int) -> None:
        self.schema_for = schema_for
        self.limit = limit
        self.header: MessageHeader | None = None
        self.spans: list[Span] = []
        # frames: ["struct", pos, schema] or ["list", pos, remaining, etype, child]
        self.frames: list[list[Any]] = []
        self.pos = 0

    def feed(self, buf: bytes | bytearray | memoryview) -> Scanned | None:
        """The complete message if ``buf`` now holds it, else None (call again with more)."""
        if self.header is None:
            try:
                self.header = parse_header(buf)
            except Incomplete:
                return None
            h = self.header
            schema = self.schema_for(h) if h.mtype in (CALL, ONEWAY, REPLY) else None
            self.frames = [["struct", schema]]
            self.pos = h.body_start
        end = len(buf)
        frames, limit = self.frames, self.limit
        while frames:
            frame = frames[-1]
            pos = self.pos
            if frame[0] == "list":
                if frame[1] == 0:
                    frames.pop()
                    continue
                try:
                    new, spans = walk_value(buf, pos, frame[2], frame[3], limit)
                except Incomplete:
                    return None
                self.spans.extend(spans)
                self.pos = new
                frame[1] -= 1
                continue
            # a struct: the next field header, or STOP
            if pos >= end:
                return None
            ft = buf[pos]
            if ft == STOP:
                self.pos = pos + 1
                frames.pop()
                continue
            if ft not in VALID_TYPES:
                raise Malformed(f"bad field type {ft} at byte {pos}")
            if pos + 3 > end:
                return None
            (fid,) = _I16.unpack_from(buf, pos + 1)
            schema = frame[1]
            entry = schema.get(fid) if schema else None
            child = entry[1] if entry is not None and entry[0] == ft else None
            deep = len(frames) >= self.RESUME_DEPTH
            if not deep and ft == STRUCT and isinstance(child, StructSchema):
                frames.append(["struct", child])
                self.pos = pos + 3
                continue
            if (
                not deep
                and ft in (LIST, SET)
                and (child is None or (isinstance(child, tuple) and child[0] == "list"))
            ):
                if pos + 8 > end:
                    return None
                et = buf[pos + 3]
                (n,) = _I32.unpack_from(buf, pos + 4)
                if et not in VALID_TYPES or n < 0 or n > limit:
                    raise Malformed(f"bad list header (type {et}, size {n}) at byte {pos + 3}")
                frames.append(["list", n, et, child[1] if child is not None else None])
                self.pos = pos + 8
                continue
            try:
                new, spans = walk_value(buf, pos + 3, ft, child, limit)
            except Incomplete:
                return None
            self.spans.extend(spans)
            self.pos = new
        assert self.header is not None
        return Scanned(self.header, self.pos, self.spans)


def scan(
    buf: bytes | bytearray | memoryview,
    schema_for: Callable[[MessageHeader], StructSchema | None],
    limit: int,
) -> Scanned:
    """Find the message at the start of ``buf``: its header, its end, its location spans."""
    header = parse_header(buf)
    schema = schema_for(header) if header.mtype in (CALL, ONEWAY, REPLY) else None
    end, spans = walk(buf, header.body_start, schema, limit)
    return Scanned(header, end, spans)


def read_string(buf: bytes | bytearray | memoryview, span: Span) -> str:
    pos, n, _ = span
    return bytes(buf[pos + 4 : pos + 4 + n]).decode("utf-8", "surrogateescape")


def splice(
    buf: bytes | bytearray | memoryview,
    end: int,
    spans: list[Span],
    transform: Callable[[str, str], str | None],
) -> bytes | None:
    """``buf[:end]`` with every location string passed through ``transform(location, kind)``.

    Returns None when nothing changed (the caller forwards the original bytes).
    """
    return splice_range(buf, 0, end, spans, transform, none_if_unchanged=True)


def splice_range(
    buf: bytes | bytearray | memoryview,
    start: int,
    end: int,
    spans: list[Span],
    transform: Callable[[str, str], str | None],
    *,
    none_if_unchanged: bool = False,
) -> bytes | None:
    """``buf[start:end]`` with the location strings among ``spans`` (all inside the range)
    passed through ``transform``; None instead of a copy if asked and nothing changed."""
    pieces: list[bytes | bytearray | memoryview] = []
    prev = start
    for pos, n, kind in spans:
        old = bytes(buf[pos + 4 : pos + 4 + n]).decode("utf-8", "surrogateescape")
        new = transform(old, kind)
        if new is None or new == old:
            continue
        nb = new.encode("utf-8", "surrogateescape")
        pieces.append(buf[prev:pos])
        pieces.append(_I32.pack(len(nb)))
        pieces.append(nb)
        prev = pos + 4 + n
    if not pieces and none_if_unchanged:
        return None
    pieces.append(buf[prev:end])
    return b"".join(pieces)


# --------------------------------------------------------------------------------------------
# encoding the few replies the proxy makes itself


def encode_string_field(fid: int, value: str) -> bytes:
    b = value.encode("utf-8")
    return bytes([STRING]) + _I16.pack(fid) + _I32.pack(len(b)) + b


def encode_exception_reply(name: str, seqid: int, result_fid: int, message: str) -> bytes:
    """A REPLY whose result struct carries a declared exception (MetaException: {1: message})."""
    exc = encode_string_field(1, message) + bytes([STOP])
    return encode_header(name, REPLY, seqid) + bytes([STRUCT]) + _I16.pack(result_fid) + exc + bytes([STOP])


# TApplicationException types
UNKNOWN_METHOD, INVALID_MESSAGE_TYPE, INTERNAL_ERROR, PROTOCOL_ERROR = 1, 2, 6, 7


def encode_application_exception(name: str, seqid: int, kind: int, message: str) -> bytes:
    body = encode_string_field(1, message) + bytes([I32]) + _I16.pack(2) + _I32.pack(kind) + bytes([STOP])
    return encode_header(name, EXCEPTION, seqid) + body

"""Thrift structs as lists of their top-level fields, still as bytes: cut one apart, build one.

A dialect translation (:mod:`metaproxy.proxy.dialect`) moves whole field values from one
message into another of a different shape — a ``Table`` out of a ``GetTableResult`` into the
``success`` field of ``get_table``'s result — without decoding them: every byte of a moved value
is carried over as it is, fields no IDL here knows included.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from metaproxy.wire.binary import I32, STOP, STRING, STRUCT, Incomplete, Malformed, walk_value

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


@dataclass(frozen=True)
class Field:
    """One field of a struct: its id and type, and the bytes of its value."""

    fid: int
    ttype: int
    value: bytes

    def encode(self, fid: int | None = None) -> bytes:
        """The field with its header (under another id when ``fid`` is given)."""
        return field_header(self.ttype, self.fid if fid is None else fid) + self.value

    def string(self) -> str:
        if self.ttype != STRING:
            raise Malformed(f"field {self.fid} is not a string (type {self.ttype})")
        (n,) = _I32.unpack_from(self.value, 0)
        return self.value[4 : 4 + n].decode("utf-8", "surrogateescape")


def split(buf: bytes | bytearray | memoryview, start: int, limit: int) -> tuple[dict[int, Field], int]:
    """The top-level fields of the struct at ``buf[start:]`` by id, and where the struct ends."""
    out: dict[int, Field] = {}
    pos = start
    while True:
        if pos >= len(buf):
            raise Malformed("a struct ends before its STOP")
        ttype = buf[pos]
        if ttype == STOP:
            return out, pos + 1
        if pos + 3 > len(buf):
            raise Malformed("a field header is cut short")
        (fid,) = _I16.unpack_from(buf, pos + 1)
        try:  # the walker skips the value (in C where it is built: a Table is many fields)
            end, _ = walk_value(buf, pos + 3, ttype, None, limit)
        except Incomplete:
            raise Malformed(f"field {fid} is cut short") from None
        out[fid] = Field(fid, ttype, bytes(buf[pos + 3 : end]))
        pos = end


def field_header(ttype: int, fid: int) -> bytes:
    return bytes([ttype]) + _I16.pack(fid)


def string_value(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return _I32.pack(len(b)) + b


def i32_value(n: int) -> bytes:
    return _I32.pack(n)


def struct_value(*fields: bytes) -> bytes:
    """A struct value of already encoded fields."""
    return b"".join(fields) + bytes([STOP])


__all__ = [
    "I32",
    "STRING",
    "STRUCT",
    "Field",
    "field_header",
    "i32_value",
    "split",
    "string_value",
    "struct_value",
]

"""Dialect bridging: calls a client speaks that its upstream metastore does not serve.

Hive 4's metastore no longer serves ``get_table`` and ``get_table_objects_by_name``, which
every client built on the Hive 2 or 3 IDL still sends (Spark's built-in client, Presto,
``hmsclient``); older metastores lack some of the ``_req`` calls Hive 4 clients send. Each row
of :data:`TRANSLATIONS` turns a client's call into one the upstream serves and the answer back
into what the client's own IDL expects: declared exceptions keep their field and type
(``NoSuchObjectException`` stays that), a ``TApplicationException`` stays one, and every byte of
a moved value — a ``Table``, a list of partitions — is carried over as it is, after the usual
location rewrite.

What an upstream serves is learned, not configured. The first time a connection to an upstream
is used for a call that has a translation, the proxy asks the upstream its version
(``getVersion``, one cheap call per upstream and process) and takes the translations its
release line needs from then on. And a call the upstream answers with "unknown method"
(``TApplicationException`` ``UNKNOWN_METHOD``, which means it did nothing) is remembered for that
upstream and retried translated at once — so no client sees the error when a translation
exists, whatever the version said. Every other method is never touched.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from metaproxy.wire.binary import LIST, STRING, STRUCT
from metaproxy.wire.fields import Field, field_header, split, struct_value

#: the catalog every Hive 2 call means
DEFAULT_CATALOG = "hive"


class Untranslatable(ValueError):
    """This call cannot be expressed in the upstream's dialect (the message says why)."""


def _wrap(fid: int, f: Field) -> bytes:
    """``f`` as the only field ``fid`` of a new struct, itself a field under ``f``'s id."""
    return field_header(STRUCT, f.fid) + struct_value(field_header(f.ttype, fid) + f.value)


def _unwrap(fid: int, f: Field, limit: int) -> bytes:
    """Field ``fid`` of the struct ``f`` holds, moved up under ``f``'s own id."""
    inner, _ = split(f.value, 0, limit)
    if fid not in inner:
        raise Untranslatable(f"the upstream's answer lacks field {fid}")
    return field_header(inner[fid].ttype, f.fid) + inner[fid].value


def wrap_success(fid: int) -> Callable[[dict[int, Field], int], bytes]:
    """Reply: the client's ``success`` is a struct whose field ``fid`` is the upstream's
    ``success``; every declared exception keeps its field id."""

    def reply(fields: dict[int, Field], limit: int) -> bytes:
        return struct_value(*(_wrap(fid, f) if f.fid == 0 else f.encode() for f in fields.values()))

    return reply


def unwrap_success(fid: int) -> Callable[[dict[int, Field], int], bytes]:
    """Reply: the client's ``success`` is field ``fid`` of the upstream's ``success`` struct."""

    def reply(fields: dict[int, Field], limit: int) -> bytes:
        return struct_value(*(_unwrap(fid, f, limit) if f.fid == 0 else f.encode() for f in fields.values()))

    return reply


def into_request(*moves: tuple[int, int, int]) -> Callable[[dict[int, Field], int], bytes]:
    """Request: the client's arguments ``(client fid, request fid, type)`` become the fields of
    one request struct, the upstream call's argument 1."""

    def request(args: dict[int, Field], limit: int) -> bytes:
        inner = []
        for src, dst, ttype in moves:
            f = args.get(src)
            if f is None:
                raise Untranslatable(f"argument {src} is missing")
            if f.ttype != ttype:
                raise Untranslatable(f"argument {src} has type {f.ttype}, not {ttype}")
            inner.append(field_header(ttype, dst) + f.value)
        return struct_value(field_header(STRUCT, 1) + struct_value(*inner))

    return request


def out_of_request(
    *moves: tuple[int, int, int], catalog_fid: int
) -> Callable[[dict[int, Field], int], bytes]:
    """Request: fields of the client's request struct (argument 1) become the upstream call's
    arguments ``(request fid, argument fid, type)``. A request for another catalog than the
    default cannot be made in a dialect without catalogs."""

    def request(args: dict[int, Field], limit: int) -> bytes:
        req = args.get(1)
        if req is None or req.ttype != STRUCT:
            raise Untranslatable("the request struct is missing")
        fields, _ = split(req.value, 0, limit)
        cat = fields.get(catalog_fid)
        if cat is not None and cat.string().lower() != DEFAULT_CATALOG:
            raise Untranslatable(f"catalog {cat.string()!r}: the upstream knows only the default catalog")
        out = []
        for src, dst, ttype in moves:
            f = fields.get(src)
            if f is None:
                raise Untranslatable(f"field {src} of the request is missing")
            if f.ttype != ttype:
                raise Untranslatable(f"field {src} of the request has type {f.ttype}, not {ttype}")
            out.append(field_header(ttype, dst) + f.value)
        return struct_value(*out)

    return request


@dataclass(frozen=True)
class Translation:
    """``client`` sent to an upstream that lacks it goes as ``upstream``."""

    client: str
    upstream: str
    #: builds the upstream call's argument struct from the client's (fields by id)
    request: Callable[[dict[int, Field], int], bytes]
    #: builds the client's result struct from the upstream's
    reply: Callable[[dict[int, Field], int], bytes]
    #: the release lines that lack ``client`` (version prefixes, as ``getVersion`` answers)
    missing_in: tuple[str, ...]
    #: the exceptions (result field ids) the client's IDL declares for ``client``; an upstream
    #: exception outside them is answered as a TApplicationException, as an old server would
    client_exceptions: frozenset[int] = frozenset({1, 2, 3})

    def undeclared(self, result: dict[int, Field], limit: int) -> str | None:
        """If the upstream answered with an exception the client cannot receive as declared:
        its type and message, for a TApplicationException."""
        for fid, f in result.items():
            if fid != 0 and fid not in self.client_exceptions:
                exc, _ = split(f.value, 0, limit)
                message = exc[1].string() if 1 in exc and exc[1].ttype == STRING else ""
                return f"{exception_name(self.upstream, fid)}: {message}"
        return None


def exception_name(method: str, fid: int) -> str:
    """The type of exception ``fid`` of ``method``'s result, from Hive's IDL."""
    from hive_metastore import ThriftHiveMetastore

    spec = getattr(ThriftHiveMetastore, f"{method}_result", None)
    for entry in getattr(spec, "thrift_spec", None) or ():
        if entry and entry[0] == fid and isinstance(entry[3], list | tuple):
            return str(entry[3][0].__name__)
    return "MetaException"


TRANSLATIONS: dict[str, Translation] = {
    t.client: t
    for t in (
        # Hive 2/3 clients → Hive 4, which no longer serves these
        Translation(
            "get_table",
            "get_table_req",
            into_request((1, 1, STRING), (2, 2, STRING)),  # dbname, tbl_name → GetTableRequest
            unwrap_success(1),  # GetTableResult.table
            ("4.",),
            client_exceptions=frozenset({1, 2}),
        ),
        Translation(
            "get_table_objects_by_name",
            "get_table_objects_by_name_req",
            into_request((1, 1, STRING), (2, 2, LIST)),  # dbname, tbl_names → GetTablesRequest
            unwrap_success(1),  # GetTablesResult.tables
            ("4.",),
            client_exceptions=frozenset(),  # the Hive 2 IDL declares none for this call
        ),
        # Hive 4 clients → Hive 2.3 and 3.1, which do not serve these yet
        Translation(
            "get_partitions_by_names_req",
            "get_partitions_by_names",
            out_of_request((1, 1, STRING), (2, 2, STRING), (3, 3, LIST), catalog_fid=-1),
            wrap_success(1),  # → GetPartitionsByNamesResult.partitions
            ("2.", "3."),
            client_exceptions=frozenset({1, 2}),
        ),
    )
}


class Dialects:
    """What each upstream (by URI) is known not to serve — from its version, and from its
    "unknown method" answers — for the life of the process (an upstream replaced by one that
    serves more still answers the translated calls)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lacks: dict[str, set[str]] = {}
        self._versions: dict[str, str] = {}

    def version(self, upstream: str) -> str | None:
        """The version ``upstream`` reported ('' if it could not say), or None: not asked yet."""
        with self._lock:
            return self._versions.get(upstream)

    def probed(self, upstream: str, version: str) -> None:
        """``upstream`` says it is ``version``: expect it to lack what its release line lacks."""
        lacking = {t.client for t in TRANSLATIONS.values() if version and version.startswith(t.missing_in)}
        with self._lock:
            self._versions[upstream] = version
            self._lacks.setdefault(upstream, set()).update(lacking)

    def translation(self, upstream: str, method: str) -> Translation | None:
        """The translation to use for ``method`` on ``upstream``, if it is known to lack it."""
        t = TRANSLATIONS.get(method)
        if t is None:
            return None
        with self._lock:
            return t if method in self._lacks.get(upstream, ()) else None

    def learn(self, upstream: str, method: str) -> Translation | None:
        """``upstream`` answered "unknown method" to ``method``: remember it; the translation
        to retry with, if there is one."""
        with self._lock:
            self._lacks.setdefault(upstream, set()).add(method)
        return TRANSLATIONS.get(method)

    def lacking(self) -> dict[str, list[str]]:
        """Upstream → the methods it is known not to serve (for health and tests)."""
        with self._lock:
            return {u: sorted(m) for u, m in self._lacks.items() if m}

    def versions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._versions)

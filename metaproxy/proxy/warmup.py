"""Metadata warm-up: after a change on-prem, the answers engines will ask for are fetched
before they ask.

An event of the notification log drops every cached answer about its table
(:mod:`metaproxy.proxy.metacache`), so the next query on that table pays the link for each of
its metastore calls. Engines ask the same few calls over and over (Trino: the table, the
partition names for the query's values, the partitions by name), so the proxy remembers, per
listener profile and table, the last call of each method it answered, and when an event has
dropped them it asks them again itself. For an ``ADD_PARTITION`` it also asks the calls that name
one partition — as the last one asked named another — for each new partition: the first query on
a partition added on-prem (and pre-fetched into the gateway by a ``cacheLoad`` policy) then finds
its metadata local too.

A warm-up call goes through the same path as an engine's, in a session of its own
(:class:`~metaproxy.proxy.session.Session` over a socket pair): rewritten for its listener, kept
by the cache under the same key an engine's call has. Only calls made without connection state
(no ``set_ugi``) are remembered; the work is done by one background thread, a bounded queue in
front of it (what does not fit is dropped: an engine asks it then).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import Counter

from metaproxy.events import Event
from metaproxy.wire import binary
from metaproxy.wire.binary import LIST, STRING, Malformed
from metaproxy.wire.fields import Field, split, string_value

log = logging.getLogger("metaproxy.proxy")

WARMED = Counter(
    "metaproxy_proxy_warmup_calls",
    "Metastore calls the proxy asked itself after an event dropped their answers",
    ["outcome"],
)

#: calls that name partitions: the argument that names them (its field id) and how (``values``:
#: a list of partition values; ``names``: a list of partition names; ``name``: one name)
PARTITION_ARGS: dict[str, tuple[int, str]] = {
    "get_partition": (3, "values"),
    "get_partition_names_ps": (3, "values"),
    "get_partitions_ps": (3, "values"),
    "get_partitions_ps_with_auth": (3, "values"),
    "get_partitions_by_names": (3, "names"),
    "get_partition_by_name": (3, "name"),
}
#: remembered calls, at most (one per profile, table and method)
EXAMPLES = 1024
#: warm-up calls waiting, at most
QUEUE = 256

#: (profile, database, table) a remembered call is about
Where = tuple[str, str, str]


def _strings(values: Iterable[str]) -> bytes:
    items = list(values)
    return (
        bytes([STRING])
        + len(items).to_bytes(4, "big", signed=True)
        + b"".join(string_value(v) for v in items)
    )


def _string_list(f: Field) -> list[str] | None:
    if f.ttype != LIST or len(f.value) < 5 or f.value[0] != STRING:
        return None
    n, pos, out = int.from_bytes(f.value[1:5], "big", signed=True), 5, []
    for _ in range(n):
        size = int.from_bytes(f.value[pos : pos + 4], "big", signed=True)
        out.append(f.value[pos + 4 : pos + 4 + size].decode("utf-8", "surrogateescape"))
        pos += 4 + size
    return out


def for_partition(method: str, args: bytes, values: list[str], name: str) -> bytes | None:
    """``args`` of a call that named one partition, made to name another (its ``values`` and
    ``name``); every other argument kept byte for byte. None if the call does not name exactly
    one partition the same way."""
    where = PARTITION_ARGS.get(method)
    if where is None:
        return None
    fid, kind = where
    try:
        fields, end = split(args, 0, len(args) + 1)
    except Malformed:
        return None
    f = fields.get(fid)
    if f is None or end != len(args):
        return None
    if kind == "name":
        if f.ttype != STRING:
            return None
        value = string_value(name)
        ttype = STRING
    else:
        old = _string_list(f)
        if old is None:
            return None
        if kind == "names":
            if len(old) != 1:
                return None
            new = [name]
        else:  # values: the same positions given ('' stands for any value of that key)
            if not old or len(old) > len(values) or not any(old):
                return None
            new = [values[i] if v else "" for i, v in enumerate(old)]
        value, ttype = _strings(new), LIST
    out = [Field(fid, ttype, value).encode() if i == fid else fields[i].encode() for i in fields]
    return b"".join(out) + bytes([binary.STOP])


class Warmup:
    """Remembers the calls engines make per table, and asks them again after an event."""

    def __init__(self, ask: Callable[[str, str, bytes], bool]) -> None:
        #: asks one call (profile, method, arguments) through a session; whether it was answered
        self.ask = ask
        self._lock = threading.Lock()
        self._examples: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()
        self._queue: queue.Queue[tuple[str, str, bytes]] = queue.Queue(QUEUE)
        self._thread: threading.Thread | None = None

    def seen(self, profile: str, method: str, args: bytes, tables: Iterable[tuple[str, str]]) -> None:
        """An engine's call answered upstream and kept by the cache (about ``tables``)."""
        named = [t for t in tables if t[1]]
        if len(named) != 1:  # a call about one table only
            return
        db, table = named[0]
        key = (profile, db, table, method)
        with self._lock:
            self._examples[key] = args
            self._examples.move_to_end(key)
            while len(self._examples) > EXAMPLES:
                self._examples.popitem(last=False)

    def events(self, batch: list[Event]) -> None:
        """After the cache has dropped what the events touched: ask again what engines asked."""
        todo: dict[tuple[str, str, bytes], None] = {}
        for e in batch:
            if not e.table or e.type.startswith("DROP_TABLE") or e.type.endswith("_DATABASE"):
                continue
            db, table = e.db.lower(), e.table.lower()
            with self._lock:
                mine = [(k[0], k[3], v) for k, v in self._examples.items() if k[1] == db and k[2] == table]
            added = e.added_partitions()
            for profile, method, args in mine:
                todo[(profile, method, args)] = None
                for values, name in added:
                    follow = for_partition(method, args, values, name)
                    if follow is not None:
                        todo[(profile, method, follow)] = None
        for item in todo:
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                WARMED.labels("dropped").inc()
        if todo:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="proxy-warmup", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                profile, method, args = self._queue.get(timeout=30)
            except queue.Empty:
                return
            try:
                ok = self.ask(profile, method, args)
            except Exception as e:  # the engine asks it then
                log.debug("warm-up of %s failed: %s", method, e)
                ok = False
            WARMED.labels("answered" if ok else "failed").inc()

    def lost(self) -> None:
        """Events were lost: the cache flushed; nothing to ask in particular."""


class _Serves(Protocol):
    def serve(self) -> None: ...


def ask_through(
    session_for: Callable[[str, socket.socket], _Serves | None], limit: int
) -> Callable[[str, str, bytes], bool]:
    """An ``ask`` for :class:`Warmup`: the call goes through a session of the profile's
    listener over a socket pair, as an engine's would; ``session_for(profile, sock)`` returns
    something with ``serve()`` (None: no listener of that profile)."""
    from metaproxy.proxy.upstream import read_message

    def ask(profile: str, method: str, args: bytes) -> bool:
        mine, theirs = socket.socketpair()
        session = session_for(profile, theirs)
        if session is None:
            mine.close()
            theirs.close()
            return False
        worker = threading.Thread(target=session.serve, name="proxy-warmup-session", daemon=True)
        worker.start()
        try:
            mine.settimeout(60)
            mine.sendall(binary.encode_header(method, binary.CALL, 1) + args)
            buf = bytearray()
            reply = read_message(mine, buf, lambda h: None, limit)
            return reply.header.mtype == binary.REPLY and not _is_exception(buf, reply)
        finally:
            mine.close()
            worker.join(10)

    return ask


def _is_exception(buf: bytearray, reply: binary.Scanned) -> bool:
    """Whether a reply carries a declared exception rather than its ``success`` field."""
    try:
        fields, _ = split(buf, reply.header.body_start, len(buf) + 1)
    except Malformed:
        return True
    return 0 not in fields

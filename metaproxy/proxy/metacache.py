"""The proxy's cache of metastore answers: local and fresh, and alive while the HMS is not.

Answers to read-only calls (tables, partitions, partition names, databases, statistics,
constraints — never transactions, locks, tokens or notifications) are kept as the client got
them, already rewritten, per listener profile and per connection state (``set_ugi``…): one
listener's answer is never served to another. Each is tagged with the database and tables
its request names.

Freshness comes from the metastore's notification log (:mod:`metaproxy.events`): while it is
followed, an answer is served until an event touches its tags, and writes through the proxy
drop what they touch at once. When the log cannot vouch (not followed, unreadable, or events
lost — which flushes everything), answers are served only while younger than
``metadata_stale_after`` (default 0: every call goes upstream). And while the HMS does not
answer at all, what is cached is served for ``stale_if_error`` — stale, and said so in health
and metrics — instead of failing.

Bounded in bytes, least recently used first out.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

from metaproxy.events import Event

LOOKUPS = Counter("metaproxy_proxy_cache_lookups", "Metadata cache lookups", ["outcome"])
CACHE_BYTES = Gauge("metaproxy_proxy_cache_bytes", "Bytes of answers in the metadata cache")
CACHE_ENTRIES = Gauge("metaproxy_proxy_cache_entries", "Answers in the metadata cache")
INVALIDATED = Counter("metaproxy_proxy_cache_invalidated", "Cached answers dropped", ["cause"])
STALE_AGE = Gauge(
    "metaproxy_proxy_stale_answer_age_seconds",
    "Age of the last answer served from the cache while the HMS did not answer",
)

#: invalidated tags remembered for answers still in flight (past this, none of those is kept)
MAX_TOUCHED = 1024

#: read-only calls whose answers may be kept; everything else always goes upstream
_CACHEABLE = re.compile(
    r"^get_(all_databases|databases|database|database_req|all_tables|tables|tables_by_type|table_meta"
    r"|table|table_req|table_objects_by_name|table_objects_by_name_req|fields|fields_req"
    r"|fields_with_environment_context|schema|schema_req|schema_with_environment_context"
    r"|partition|partition_req|partition_by_name|partition_names|partition_names_ps|partition_names_ps_req"
    r"|partition_names_req|partition_values|partitions|partitions_req|partitions_ps|partitions_ps_req"
    r"|partitions_ps_with_auth|partitions_ps_with_auth_req|partitions_by_names|partitions_by_names_req"
    r"|partitions_by_filter|partitions_by_expr|partitions_spec_by_expr|partitions_with_specs|partitions_pspec"
    r"|num_partitions_by_filter|table_statistics_req|partitions_statistics_req|table_column_statistics"
    r"|partition_column_statistics|aggr_stats_for|primary_keys|foreign_keys|unique_constraints"
    r"|not_null_constraints|check_constraints|default_constraints|all_table_constraints|table_names_by_filter)$"
)

_DB_FIELDS = ("dbname", "db_name", "dbName", "databaseName", "parent_db_name")
_TABLE_FIELDS = ("tbl_name", "tblName", "table_name", "tableName", "tbl_names", "tblNames", "parent_tbl_name")
_NESTED = ("req", "request", "rqst", "filterSpec")

#: a tag: (database, table); table '' means "anything in the database", ('', '') "the list of databases"
Tag = tuple[str, str]
Key = tuple[str, str, bytes, tuple[bytes, ...]]


def cacheable(method: str) -> bool:
    return bool(_CACHEABLE.match(method))


def request_tags(method: str, body: bytes) -> frozenset[Tag]:
    """What a request's answer depends on: its database and tables, read from its arguments
    with Hive's own IDL (a request it cannot read depends on everything in its database, or on
    everything)."""
    from hive_metastore import ThriftHiveMetastore
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TTransport

    cls = getattr(ThriftHiveMetastore, f"{method}_args", None)
    if cls is None:
        return frozenset({("", "")})
    args = cls()
    try:
        args.read(TBinaryProtocol.TBinaryProtocolAccelerated(TTransport.TMemoryBuffer(body)))
    except Exception:
        return frozenset({("", "")})
    if method in ("get_database", "get_database_req"):
        name = getattr(args, "name", None) or getattr(getattr(args, "request", None), "name", None)
        return frozenset({(str(name).lower(), "")}) if name else frozenset({("", "")})
    db, tables = _names(args, 0)
    if not db:
        return frozenset({("", "")})
    return frozenset((db, t) for t in tables) if tables else frozenset({(db, "")})


def _names(obj: Any, depth: int) -> tuple[str, list[str]]:
    db = next((str(getattr(obj, f)).lower() for f in _DB_FIELDS if getattr(obj, f, None)), "")
    tables: list[str] = []
    for f in _TABLE_FIELDS:
        v = getattr(obj, f, None)
        if isinstance(v, str) and v:
            tables.append(v.lower())
        elif isinstance(v, list):
            tables += [str(t).lower() for t in v if t]
    if (not db or not tables) and depth < 2:
        for f in _NESTED:
            inner = getattr(obj, f, None)
            if inner is not None and hasattr(inner, "thrift_spec"):
                idb, itables = _names(inner, depth + 1)
                db, tables = db or idb, tables or itables
    return db, tables


@dataclass
class Entry:
    body: bytes  #: the answer after its message header, as the client got it
    tags: frozenset[Tag]
    stored: float  #: monotonic


class MetadataCache:
    """Answers by (profile, method, arguments, connection state)."""

    def __init__(self, capacity: int, stale_after_s: float, stale_if_error_s: float) -> None:
        self.capacity = capacity
        self.stale_after_s = stale_after_s
        self.stale_if_error_s = stale_if_error_s
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._by_tag: dict[Tag, set[Key]] = {}
        self._by_db: dict[str, set[Key]] = {}
        self._bytes = 0
        #: invalidations so far; and at which count each tag (and the whole cache) was last
        #: invalidated: an answer fetched before an invalidation that touches it is not kept
        self._generation = 0
        self._touched: dict[Tag, int] = {}
        self._flushed = 0
        #: whether the notification log vouches for the entries (set by its follower)
        self.fresh_by_events = False
        #: answers served stale (the HMS not answering), and how old the last one was
        self._stale_served = 0
        self._last_stale_age_s: float | None = None

    # -- lookups ----------------------------------------------------------------------------

    def get(self, key: Key) -> Entry | None:
        """A fresh answer: one no event has touched while the log is followed, else one
        younger than ``metadata_stale_after``."""
        with self._lock:
            e = self._entries.get(key)
            if e is not None and (self.fresh_by_events or time.monotonic() - e.stored < self.stale_after_s):
                self._entries.move_to_end(key)
                LOOKUPS.labels("hit").inc()
                return e
        LOOKUPS.labels("miss").inc()
        return None

    def get_stale(self, key: Key, down_since: float) -> Entry | None:
        """Any answer kept for this call, while the HMS has been unresponsive for less than
        ``stale_if_error`` (``down_since`` is monotonic)."""
        if self.stale_if_error_s <= 0 or time.monotonic() - down_since > self.stale_if_error_s:
            return None
        with self._lock:
            e = self._entries.get(key)
            if e is not None:
                self._stale_served += 1
                self._last_stale_age_s = time.monotonic() - e.stored
                STALE_AGE.set(self._last_stale_age_s)
        if e is not None:
            LOOKUPS.labels("stale").inc()
        return e

    def generation(self) -> int:
        """Taken before a call goes upstream, and given to :meth:`put` with its answer."""
        with self._lock:
            return self._generation

    def put(self, key: Key, body: bytes, tags: frozenset[Tag], since: int | None = None) -> bool:
        """Keep an answer, unless something it depends on was invalidated after ``since`` (the
        :meth:`generation` taken before it was asked: the answer may predate the change)."""
        if self.capacity <= 0 or len(body) > self.capacity // 4:
            return False
        with self._lock:
            if since is not None and self._outdated(tags, since):
                INVALIDATED.labels("raced").inc()
                return False
            self._drop(key)
            self._entries[key] = Entry(body, tags, time.monotonic())
            self._bytes += len(body)
            for t in tags:
                self._by_tag.setdefault(t, set()).add(key)
                self._by_db.setdefault(t[0], set()).add(key)
            while self._bytes > self.capacity and self._entries:
                self._drop(next(iter(self._entries)))
            self._gauges()
        return True

    def _outdated(self, tags: frozenset[Tag], since: int) -> bool:
        """Whether an invalidation after ``since`` would have dropped an answer with ``tags``
        (the same rules as :meth:`invalidate`; caller holds the lock)."""
        if self._generation == since:
            return False
        if self._flushed > since:
            return True
        for (db, table), at in self._touched.items():
            if at <= since:
                continue
            if not db:
                hit = ("", "") in tags
            elif not table:
                hit = ("", "") in tags or any(t[0] == db for t in tags)
            else:
                hit = (db, table) in tags or (db, "") in tags
            if hit:
                return True
        return False

    def _drop(self, key: Key) -> None:
        """Forget one entry (caller holds the lock)."""
        e = self._entries.pop(key, None)
        if e is None:
            return
        self._bytes -= len(e.body)
        for t in e.tags:
            self._by_tag.get(t, set()).discard(key)
            self._by_db.get(t[0], set()).discard(key)

    def _gauges(self) -> None:
        CACHE_BYTES.set(self._bytes)
        CACHE_ENTRIES.set(len(self._entries))

    # -- invalidation -----------------------------------------------------------------------

    def invalidate(self, db: str, table: str = "", cause: str = "event") -> int:
        """Drop what depends on ``db.table`` (or, with no table, on anything in ``db``; with no
        database, on the list of databases); returns how many answers."""
        db, table = db.lower(), table.lower()
        with self._lock:
            self._generation += 1
            self._touched[(db, table)] = self._generation
            if len(self._touched) > MAX_TOUCHED:  # forget them: answers in flight are not kept
                self._touched.clear()
                self._flushed = self._generation
            if not db:
                doomed = set(self._by_tag.get(("", ""), ()))
            elif not table:
                doomed = set(self._by_db.get(db, ())) | set(self._by_tag.get(("", ""), ()))
            else:
                doomed = set(self._by_tag.get((db, table), ())) | set(self._by_tag.get((db, ""), ()))
            for key in doomed:
                self._drop(key)
            self._gauges()
        if doomed:
            INVALIDATED.labels(cause).inc(len(doomed))
        return len(doomed)

    def flush(self, cause: str = "flush") -> None:
        with self._lock:
            self._generation += 1
            self._flushed = self._generation
            self._touched.clear()
            n = len(self._entries)
            self._entries.clear()
            self._by_tag.clear()
            self._by_db.clear()
            self._bytes = 0
            self._gauges()
        if n:
            INVALIDATED.labels(cause).inc(n)

    # -- as a subscriber of the notification log ----------------------------------------------

    def events(self, batch: Iterable[Event]) -> None:
        for e in batch:
            if e.type.endswith("_DATABASE") or not e.table:
                self.invalidate(e.db)
                self.invalidate("")  # the list of databases
            else:
                # the table, and what names only its database (lists of tables among them);
                # a rename also frees the new name, maybe in another database
                self.invalidate(e.db, e.table)
                if e.type == "ALTER_TABLE":
                    for db, table in e.tables_after():
                        if (db, table) != (e.db.lower(), e.table.lower()):
                            self.invalidate(db, table)

    def lost(self) -> None:
        self.flush("events_lost")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "capacity": self.capacity,
                "fresh_by_events": self.fresh_by_events,
                "stale_served": self._stale_served,
                "last_stale_age_s": self._last_stale_age_s,
            }

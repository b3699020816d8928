"""Following the on-prem metastore's notification log: every change, in order, as it happens.

The HMS writes an event for every change it makes (``CREATE_TABLE``, ``ADD_PARTITION``,
``ALTER_PARTITION``, ``INSERT``, ``DROP_TABLE``…) when its ``DbNotificationListener`` is on.
:class:`EventLog` reads them with ``get_next_notification`` every ``interval`` from the last
event it saw, and hands each batch to its subscribers: the proxy drops the cached answers an
event touches, the gateway re-lists the directories it names, pre-fetch policies load new
files. This is how metaproxy's caches can be both local and fresh ("active sync").

Events must arrive without gaps: a batch that does not start right after the last event seen,
or a log whose newest id went backwards (a new metastore database), means events were lost —
subscribers are told to forget everything they cached (:meth:`Subscriber.lost`). A log that
cannot be read (the HMS is down, or it does not keep one) is reported as such; subscribers then
fall back to their staleness bounds, and the log is caught up from where it stopped once it
can be read again.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

log = logging.getLogger("metaproxy.events")

EVENTS = Counter("metaproxy_events", "Metastore notification events read", ["type"])
EVENT_LOG_UP = Gauge("metaproxy_event_log_up", "1 while the metastore's notification log is followed")
EVENTS_LOST = Counter("metaproxy_events_lost", "Times events were found missing (caches flushed)")
LAST_EVENT = Gauge("metaproxy_event_log_last_id", "The id of the last notification event read")

#: how long to wait before looking again at a log the metastore does not let be read
UNSUPPORTED_RETRY_S = 60.0
#: event types that change what a table's listings hold (the gateway re-lists their locations)
DATA_EVENTS = frozenset(
    {
        "INSERT",
        "ADD_PARTITION",
        "ALTER_PARTITION",
        "ALTER_TABLE",
        "DROP_PARTITION",
        "DROP_TABLE",
        "CREATE_TABLE",
    }
)


@dataclass(frozen=True)
class Event:
    """One entry of the notification log."""

    id: int
    time: int
    type: str
    db: str
    table: str
    message: str = field(repr=False)
    format: str = ""

    def body(self) -> dict[str, Any]:
        """The message as a JSON object ('json-0.2', or 'gzip(json-2.0)' base64), {} if unreadable."""
        text = self.message
        try:
            if self.format.startswith("gzip"):
                text = gzip.decompress(base64.b64decode(text)).decode("utf-8")
            doc = json.loads(text)
        except (ValueError, OSError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def locations(self) -> list[str]:
        """The storage locations the event changed (as they are after the change), in the
        message's order, without repeats: its partitions' where it carries partitions (an
        ``ADD_PARTITION`` or a partition's ``INSERT`` also carries the table, which did not
        change as a whole), else its table's."""
        from hive_metastore import ttypes

        doc = self.body()
        found: dict[str, list[str]] = {"Table": [], "Partition": []}
        for key, cls in _OBJECT_KEYS:
            value = doc.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    location = _location(item, getattr(ttypes, cls))
                    if location:
                        found[cls].append(location)
        return list(dict.fromkeys(found["Partition"] or found["Table"]))

    def tables_after(self) -> list[tuple[str, str]]:
        """``(database, table)`` of the tables the event carries as they are after it (a
        rename's new name among them), lowercased; none if the message does not say."""
        from hive_metastore import ttypes

        doc = self.body()
        found = []
        for key in ("tableObjJson", "tableObjAfterJson"):
            value = doc.get(key)
            if isinstance(value, str):
                t = _decode(value, ttypes.Table)
                if t is not None and t.dbName and t.tableName:
                    found.append((str(t.dbName).lower(), str(t.tableName).lower()))
        return list(dict.fromkeys(found))

    def added_partitions(self) -> list[tuple[list[str], str]]:
        """An ``ADD_PARTITION``'s partitions: each one's values and its name (``k=v/k2=v2``, as
        the metastore names it); none for other events or a message that does not say."""
        from hive_metastore import ttypes

        if self.type != "ADD_PARTITION":
            return []
        doc = self.body()
        table = _decode(doc.get("tableObjJson") or "", ttypes.Table) if doc.get("tableObjJson") else None
        keys = [str(k.name) for k in (getattr(table, "partitionKeys", None) or [])]
        found = []
        listed = doc.get("partitionListJson")
        for item in listed if isinstance(listed, list) else []:
            part = _decode(item, ttypes.Partition) if isinstance(item, str) else None
            values = [str(v) for v in (getattr(part, "values", None) or [])]
            if values and len(values) == len(keys):
                found.append((values, partition_name(keys, values)))
        return found


#: message keys that hold a Table or Partition in Thrift's JSON encoding (newer state only)
_OBJECT_KEYS = (
    ("tableObjJson", "Table"),
    ("tableObjAfterJson", "Table"),
    ("ptnObjJson", "Partition"),
    ("partitionObjAfterJson", "Partition"),
    ("partitionListJson", "Partition"),
)


def _decode(thrift_json: str, cls: type) -> Any:
    """An object written with Thrift's JSON protocol, None if it cannot be read."""
    from thrift.protocol import TJSONProtocol
    from thrift.transport import TTransport

    obj = cls()
    try:
        obj.read(TJSONProtocol.TJSONProtocol(TTransport.TMemoryBuffer(thrift_json.encode("utf-8"))))
    except Exception:
        return None
    return obj


def _location(thrift_json: str, cls: type) -> str:
    """``sd.location`` of an object written with Thrift's JSON protocol ('' if it has none)."""
    sd = getattr(_decode(thrift_json, cls), "sd", None)
    return str(sd.location) if sd is not None and sd.location else ""


class Subscriber(Protocol):
    def events(self, batch: list[Event]) -> None:
        """A batch of events, in order, with no gap before it."""

    def lost(self) -> None:
        """Events were lost: forget everything the log would have kept fresh."""


class Unsupported(RuntimeError):
    """The metastore keeps no notification log, or does not let this client read it."""


def _answered(e: Exception) -> bool:
    """True if ``e`` is an answer of the metastore (it is up), not a failure to reach it."""
    from hive_metastore import ttypes
    from thrift.Thrift import TApplicationException

    return isinstance(e, TApplicationException | ttypes.MetaException)


@dataclass
class LogState:
    up: bool = False
    last_id: int | None = None
    since: float = field(default_factory=time.time)  #: when ``up`` last changed
    error: str = ""
    lost: int = 0


class EventLog:
    """Reads the notification log of the HMS at ``connect()`` every ``interval_s``."""

    def __init__(
        self,
        connect: Callable[[], Any],
        interval_s: float = 1.0,
        batch: int = 1000,
        subscribers: Iterable[Subscriber] = (),
    ) -> None:
        self.connect = connect
        self.interval_s = interval_s
        self.batch = batch
        self.subscribers = list(subscribers)
        self.state = LogState()
        self._lock = threading.Lock()
        #: held while a poll runs: whoever moves the follower's position from outside takes it
        self.polling = threading.Lock()
        self._client: Any = None
        self._client_cm: Any = None

    def subscribe(self, s: Subscriber) -> None:
        self.subscribers.append(s)

    # -- one poll ---------------------------------------------------------------------------

    def _open(self) -> Any:
        if self._client is None:
            self._client_cm = self.connect()
            self._client = self._client_cm.__enter__()
        return self._client

    def _close(self) -> None:
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception as e:  # a broken connection closes badly; it is gone either way
                log.debug("events: closing the connection: %s", e)

    def poll(self) -> int:
        """Read what is new and hand it on; returns how many events. Raises when the log cannot
        be read (the connection is then closed, and reopened on the next poll)."""
        with self.polling:
            return self._poll()

    def _poll(self) -> int:
        from hive_metastore import ttypes

        try:
            c = self._open()
            current = int(c.get_current_notificationEventId().eventId)
            last = self.state.last_id
            if last is None or current < last:
                if last is not None:  # a newer log than the one followed: nothing we hold holds
                    self._lost(f"the log's newest event is {current}, before {last}")
                self._mark_up(current)
                return 0
            if current == last:
                self._mark_up(current)
                return 0
            got = c.get_next_notification(
                ttypes.NotificationEventRequest(lastEvent=last, maxEvents=self.batch)
            )
        except Exception as e:
            self._close()
            self._mark_down(e)
            if _answered(e):  # the HMS answered: it keeps no log, or lets nobody here read it
                raise Unsupported(f"the metastore does not let its notification log be read: {e}") from e
            raise
        events = [
            Event(
                int(n.eventId),
                int(n.eventTime or 0),
                str(n.eventType),
                str(n.dbName or "").lower(),
                str(n.tableName or "").lower(),
                str(n.message or ""),
                str(n.messageFormat or ""),
            )
            for n in (got.events or [])
        ]
        if events and events[0].id != last + 1:
            self._lost(f"events {last + 1}..{events[0].id - 1} are gone from the log")
            self._mark_up(current)  # what comes after a gap is of no use to caches just flushed
            return 0
        if not events and current > last:
            self._lost(f"events {last + 1}..{current} are gone from the log")
            self._mark_up(current)
            return 0
        for event in events:
            EVENTS.labels(event.type).inc()
        for s in self.subscribers:
            try:
                s.events(events)
            except Exception as exc:  # one subscriber's failure must not starve the others
                log.warning(
                    "events: a subscriber failed on events %d..%d: %s", events[0].id, events[-1].id, exc
                )
        self._mark_up(events[-1].id)
        return len(events)

    def _lost(self, why: str) -> None:
        log.warning("events: %s; every cache the log keeps fresh is flushed", why)
        EVENTS_LOST.inc()
        self.state.lost += 1
        for s in self.subscribers:
            try:
                s.lost()
            except Exception as exc:
                log.warning("events: a subscriber failed to flush: %s", exc)

    def _mark_up(self, last_id: int) -> None:
        with self._lock:
            if not self.state.up:
                self.state.since = time.time()
            self.state.up, self.state.last_id, self.state.error = True, last_id, ""
        EVENT_LOG_UP.set(1)
        LAST_EVENT.set(last_id)

    def _mark_down(self, e: Exception) -> None:
        with self._lock:
            if self.state.up or not self.state.error:
                self.state.since = time.time()
                log.warning("events: the notification log cannot be read: %s", e)
            self.state.up, self.state.error = False, f"{type(e).__name__}: {e}"
        EVENT_LOG_UP.set(0)

    def status(self) -> dict[str, Any]:
        with self._lock:
            s = self.state
            return {"up": s.up, "last_event": s.last_id, "since": s.since, "error": s.error, "lost": s.lost}

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval_s`` until ``stop``; a batch that fills ``batch`` is followed at
        once by the next."""
        while not stop.is_set():
            wait = self.interval_s
            try:
                n = self.poll()
            except Unsupported:
                n, wait = 0, max(self.interval_s, UNSUPPORTED_RETRY_S)  # it may be turned on later
            except Exception:
                n = 0
            if n < self.batch:
                stop.wait(wait)
        self._close()


#: characters the metastore writes as %XX in a partition's name (and its directory)
_ESCAPED = frozenset("\"#%'*/:=?\\\x7f{[]^") | {chr(c) for c in range(1, 32)}


def _escape(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in text)


def partition_name(keys: list[str], values: list[str]) -> str:
    """A partition's name as the metastore gives it: ``key=value`` pairs joined by ``/``, the
    characters a path cannot hold escaped."""
    return "/".join(f"{_escape(k)}={_escape(v)}" for k, v in zip(keys, values, strict=True))

"""Following the notification log: batches in order, gaps and resets flush, failures are told
apart from a metastore that keeps no log; and the proxy's cache drops what events touch."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest
from hive_metastore import ttypes as tt
from thrift.Thrift import TApplicationException
from thrift.transport.TTransport import TTransportException

from metaproxy.events import Event, EventLog, Unsupported
from metaproxy.proxy.metacache import MetadataCache, request_tags

pytestmark = pytest.mark.unit


@dataclass
class FakeHms:
    """A metastore's notification log as the Thrift client sees it (ids, types, names)."""

    events: list[tuple[int, str, str, str]] = field(default_factory=list)
    fail: Exception | None = None

    def get_current_notificationEventId(self) -> Any:  # noqa: N802 - the IDL's name
        if self.fail:
            raise self.fail
        return tt.CurrentNotificationEventId(eventId=max((e[0] for e in self.events), default=0))

    def get_next_notification(self, req: tt.NotificationEventRequest) -> Any:
        got = [e for e in self.events if e[0] > req.lastEvent][: req.maxEvents]
        return tt.NotificationEventResponse(
            events=[
                tt.NotificationEvent(eventId=i, eventTime=0, eventType=t, dbName=d, tableName=n, message="{}")
                for i, t, d, n in got
            ]
        )


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.flushes = 0

    def events(self, batch: list[Event]) -> None:
        self.batches.append(batch)

    def lost(self) -> None:
        self.flushes += 1


def follow(hms: FakeHms) -> tuple[EventLog, Recorder]:
    r = Recorder()
    return EventLog(lambda: nullcontext(hms), batch=2, subscribers=[r]), r


def test_batches_arrive_in_order_from_where_the_log_stood() -> None:
    hms = FakeHms([(1, "CREATE_TABLE", "db", "old")])
    log, r = follow(hms)
    assert log.poll() == 0  # the first look only learns where the log stands
    hms.events += [(2, "ADD_PARTITION", "db", "t"), (3, "INSERT", "DB", "T"), (4, "DROP_TABLE", "db", "u")]
    assert log.poll() == 2 and log.poll() == 1  # at most `batch` at a time
    assert [(e.id, e.type, e.db, e.table) for b in r.batches for e in b] == [
        (2, "ADD_PARTITION", "db", "t"),
        (3, "INSERT", "db", "t"),
        (4, "DROP_TABLE", "db", "u"),
    ]
    assert log.status()["up"] and log.status()["last_event"] == 4 and r.flushes == 0


def test_a_gap_or_a_new_log_means_events_were_lost() -> None:
    hms = FakeHms([(10, "CREATE_TABLE", "db", "t")])
    log, r = follow(hms)
    log.poll()
    hms.events = [(e, "INSERT", "db", "t") for e in (14, 15)]  # 11-13 were cleaned away
    assert log.poll() == 0 and r.flushes == 1 and r.batches == []
    hms.events.append((16, "INSERT", "db", "t"))
    assert log.poll() == 1 and r.batches[0][0].id == 16  # followed again from there
    hms.events = [(3, "CREATE_TABLE", "db", "t")]  # a metastore with a new database
    assert log.poll() == 0 and r.flushes == 2


def test_an_unreachable_metastore_is_not_one_without_a_log() -> None:
    hms = FakeHms(fail=TTransportException(message="read timeout"))
    log, _ = follow(hms)
    with pytest.raises(TTransportException):
        log.poll()
    assert not log.status()["up"] and "read timeout" in log.status()["error"]
    hms.fail = TApplicationException(message="User hdfs is not allowed to perform this API call")
    with pytest.raises(Unsupported, match="not allowed"):
        log.poll()


def test_events_drop_the_cached_answers_they_touch() -> None:
    cache = MetadataCache(1 << 20, stale_after_s=0, stale_if_error_s=60)
    cache.fresh_by_events = True
    keys = {name: ("cloud", name, name.encode(), ()) for name in ("t", "u", "tables", "dbs")}
    cache.put(keys["t"], b"t", frozenset({("db", "t")}))
    cache.put(keys["u"], b"u", frozenset({("db", "u")}))
    cache.put(keys["tables"], b"list", frozenset({("db", "")}))
    cache.put(keys["dbs"], b"dbs", frozenset({("", "")}))
    cache.events([Event(1, 0, "ADD_PARTITION", "db", "t", "{}")])
    assert cache.get(keys["t"]) is None and cache.get(keys["tables"]) is None
    assert cache.get(keys["u"]) is not None and cache.get(keys["dbs"]) is not None
    cache.events([Event(2, 0, "CREATE_DATABASE", "other", "", "{}")])
    assert cache.get(keys["dbs"]) is None and cache.get(keys["u"]) is not None
    # a new or changed table is not a change of every other table of its database
    cache.put(keys["t"], b"t", frozenset({("db", "t")}))
    cache.put(keys["tables"], b"list", frozenset({("db", "")}))
    cache.events([Event(3, 0, "CREATE_TABLE", "db", "new", "{}")])
    assert cache.get(keys["tables"]) is None
    assert cache.get(keys["t"]) is not None and cache.get(keys["u"]) is not None
    # a rename frees its new name too
    renamed = _json(tt.Table(dbName="db", tableName="u", sd=tt.StorageDescriptor(location="hdfs://nn/u")))
    cache.events([Event(4, 0, "ALTER_TABLE", "db", "old", json.dumps({"tableObjAfterJson": renamed}))])
    assert cache.get(keys["u"]) is None and cache.get(keys["t"]) is not None
    cache.lost()
    assert cache.get(keys["u"]) is None and cache.stats()["entries"] == 0


def test_an_answer_asked_before_an_event_that_touches_it_is_not_kept() -> None:
    """A call in flight while the notification log drops its table may carry the old answer:
    storing it would serve the old answer until the next event on that table."""
    cache = MetadataCache(1 << 20, stale_after_s=0, stale_if_error_s=60)
    cache.fresh_by_events = True
    key = ("cloud", "get_table_req", b"t", ())
    since = cache.generation()
    cache.events([Event(1, 0, "ALTER_TABLE", "db", "t", "{}")])
    assert not cache.put(key, b"old", frozenset({("db", "t")}), since)
    assert cache.get(key) is None
    # an event on another table, or one before the call was asked, does not stop it
    since = cache.generation()
    cache.events([Event(2, 0, "ADD_PARTITION", "db", "u", "{}")])
    assert cache.put(key, b"new", frozenset({("db", "t")}), since)
    assert cache.get(key) is not None
    # a list of the database's tables depends on every table in it; a whole database's change
    # touches every table; a flush touches everything
    since = cache.generation()
    cache.events([Event(3, 0, "ADD_PARTITION", "db", "u", "{}")])
    assert not cache.put(("cloud", "get_all_tables", b"db", ()), b"l", frozenset({("db", "")}), since)
    since = cache.generation()
    cache.events([Event(4, 0, "ALTER_DATABASE", "db", "", "{}")])
    assert not cache.put(key, b"new", frozenset({("db", "t")}), since)
    since = cache.generation()
    cache.lost()
    assert not cache.put(key, b"new", frozenset({("other", "t")}), since)


def test_without_the_log_answers_serve_only_within_the_bound() -> None:
    cache = MetadataCache(1 << 20, stale_after_s=0, stale_if_error_s=60)
    key = ("cloud", "get_table_req", b"x", ())
    cache.put(key, b"answer", frozenset({("db", "t")}))
    assert cache.get(key) is None  # no log, no bound: every call goes upstream
    assert cache.get_stale(key, time.monotonic()) is not None  # but it serves while the HMS is down
    assert cache.get_stale(key, time.monotonic() - 61) is None  # for stale_if_error only


def test_request_tags_come_from_the_idl() -> None:
    from hive_metastore import ThriftHiveMetastore as T
    from thrift.protocol import TBinaryProtocol
    from thrift.transport import TTransport

    def body(args: Any) -> bytes:
        buf = TTransport.TMemoryBuffer()
        args.write(TBinaryProtocol.TBinaryProtocol(buf))
        return buf.getvalue()

    req = tt.GetTableRequest(dbName="Sales", tblName="Orders")
    assert request_tags("get_table_req", body(T.get_table_req_args(req=req))) == {("sales", "orders")}
    assert request_tags("get_all_tables", body(T.get_all_tables_args(db_name="sales"))) == {("sales", "")}
    assert request_tags("get_all_databases", body(T.get_all_databases_args())) == {("", "")}
    names = T.get_table_objects_by_name_args(dbname="s", tbl_names=["a", "b"])
    assert request_tags("get_table_objects_by_name", body(names)) == {("s", "a"), ("s", "b")}


def _json(obj: Any) -> str:
    from thrift.protocol import TJSONProtocol
    from thrift.transport import TTransport

    buf = TTransport.TMemoryBuffer()
    obj.write(TJSONProtocol.TJSONProtocol(buf))
    return buf.getvalue().decode("utf-8")


def _message(table: str, partitions: list[str]) -> str:
    doc: dict[str, Any] = {
        "tableObjJson": _json(tt.Table(tableName="t", sd=tt.StorageDescriptor(location=table)))
    }
    if partitions:
        doc["partitionListJson"] = [
            _json(tt.Partition(values=[p.rsplit("=", 1)[1]], sd=tt.StorageDescriptor(location=p)))
            for p in partitions
        ]
    return json.dumps(doc)


def test_an_event_names_its_partitions_not_their_whole_table() -> None:
    table = "hdfs://nn:8020/warehouse/t"
    parts = [f"{table}/d=1", f"{table}/d=2", f"{table}/d=1"]
    added = Event(1, 0, "ADD_PARTITION", "db", "t", _message(table, parts))
    # the table did not change as a whole: its other partitions' listings stay
    assert added.locations() == [f"{table}/d=1", f"{table}/d=2"]
    altered = Event(2, 0, "ALTER_TABLE", "db", "t", _message(table, []))
    assert altered.locations() == [table]
    assert Event(3, 0, "INSERT", "db", "t", "not json").locations() == []

"""The warm-up's arguments for a new partition: the call an engine made for another partition,
with only the partition named changed, every other byte as the engine sent it."""

from __future__ import annotations

import json
import threading

import pytest
from hive_metastore import ThriftHiveMetastore as hms
from hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol, TJSONProtocol
from thrift.transport import TTransport

from metaproxy.events import Event, partition_name
from metaproxy.proxy.warmup import Warmup, for_partition

pytestmark = pytest.mark.unit


def _args(obj: object) -> bytes:
    buf = TTransport.TMemoryBuffer()
    obj.write(TBinaryProtocol.TBinaryProtocol(buf))  # type: ignore[attr-defined]
    return buf.getvalue()


def _json(obj: object) -> str:
    buf = TTransport.TMemoryBuffer()
    obj.write(TJSONProtocol.TJSONProtocol(buf))  # type: ignore[attr-defined]
    return buf.getvalue().decode()


def test_a_call_for_one_partition_is_made_for_another() -> None:
    names = hms.get_partitions_by_names_args(db_name="db", tbl_name="t", names=["d=2450816"])
    want = hms.get_partitions_by_names_args(db_name="db", tbl_name="t", names=["d=2499999"])
    assert for_partition("get_partitions_by_names", _args(names), ["2499999"], "d=2499999") == _args(want)
    ps = hms.get_partition_names_ps_args(db_name="db", tbl_name="t", part_vals=["2450816"], max_parts=-1)
    want_ps = hms.get_partition_names_ps_args(db_name="db", tbl_name="t", part_vals=["2499999"], max_parts=-1)
    assert for_partition("get_partition_names_ps", _args(ps), ["2499999"], "d=2499999") == _args(want_ps)
    # two keys, the second left open ('' = any value): only the given position changes
    two = hms.get_partitions_ps_args(db_name="db", tbl_name="t", part_vals=["2024", ""], max_parts=10)
    want_two = hms.get_partitions_ps_args(db_name="db", tbl_name="t", part_vals=["2025", ""], max_parts=10)
    assert for_partition("get_partitions_ps", _args(two), ["2025", "01"], "y=2025/m=01") == _args(want_two)
    by_name = hms.get_partition_by_name_args(db_name="db", tbl_name="t", part_name="y=2024/m=12")
    want_name = hms.get_partition_by_name_args(db_name="db", tbl_name="t", part_name="y=2025/m=01")
    assert for_partition("get_partition_by_name", _args(by_name), ["2025", "01"], "y=2025/m=01") == _args(
        want_name
    )


def test_a_call_that_names_no_single_partition_is_not_made_again() -> None:
    many = hms.get_partitions_by_names_args(db_name="db", tbl_name="t", names=["d=1", "d=2"])
    assert for_partition("get_partitions_by_names", _args(many), ["3"], "d=3") is None
    table = hms.get_table_args(dbname="db", tbl_name="t")
    assert for_partition("get_table", _args(table), ["3"], "d=3") is None
    assert for_partition("get_partitions_by_names", b"\x0b\x00", ["3"], "d=3") is None  # cut short


def test_an_added_partition_is_named_as_the_metastore_names_it() -> None:
    keys = [tt.FieldSchema(name="dt", type="string"), tt.FieldSchema(name="region", type="string")]
    t = tt.Table(dbName="db", tableName="t", partitionKeys=keys)
    parts = [tt.Partition(values=["2026-12-01", "eu/west"], dbName="db", tableName="t")]
    message = {"tableObjJson": _json(t), "partitionListJson": [_json(p) for p in parts]}
    e = Event(7, 0, "ADD_PARTITION", "db", "t", json.dumps(message))
    assert e.added_partitions() == [(["2026-12-01", "eu/west"], "dt=2026-12-01/region=eu%2Fwest")]
    assert Event(8, 0, "ALTER_PARTITION", "db", "t", json.dumps(message)).added_partitions() == []
    assert partition_name(["k"], ["a:b=c"]) == "k=a%3Ab%3Dc"


def test_after_an_event_the_calls_made_on_its_table_are_asked_again() -> None:
    asked: list[tuple[str, str, bytes]] = []
    done = threading.Event()

    def ask(profile: str, method: str, args: bytes) -> bool:
        asked.append((profile, method, args))
        if len(asked) == 3:
            done.set()
        return True

    w = Warmup(ask)
    by_names = _args(hms.get_partitions_by_names_args(db_name="db", tbl_name="t", names=["d=1"]))
    table = _args(hms.get_table_args(dbname="db", tbl_name="t"))
    other = _args(hms.get_table_args(dbname="db", tbl_name="u"))
    w.seen("cloud", "get_partitions_by_names", by_names, [("db", "t")])
    w.seen("cloud", "get_table", table, [("db", "t")])
    w.seen("cloud", "get_table", other, [("db", "u")])
    keys = [tt.FieldSchema(name="d", type="string")]
    message = {
        "tableObjJson": _json(tt.Table(dbName="db", tableName="t", partitionKeys=keys)),
        "partitionListJson": [_json(tt.Partition(values=["2"], dbName="db", tableName="t"))],
    }
    w.events([Event(1, 0, "ADD_PARTITION", "db", "t", json.dumps(message))])
    assert done.wait(10)
    new = _args(hms.get_partitions_by_names_args(db_name="db", tbl_name="t", names=["d=2"]))
    assert sorted(asked) == sorted(
        [
            ("cloud", "get_partitions_by_names", by_names),
            ("cloud", "get_table", table),
            ("cloud", "get_partitions_by_names", new),
        ]
    )

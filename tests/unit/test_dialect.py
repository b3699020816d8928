"""Each translation, byte for byte: a call encoded by the client's IDL becomes the upstream's call,
and the upstream's answer — exceptions included — decodes as the client's IDL expects."""

from __future__ import annotations

from typing import Any

import pytest
from hive_metastore import ThriftHiveMetastore as Hive4
from hive_metastore import ttypes as t4
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as Hive2
from hmsclient.genthrift.hive_metastore import ttypes as t2
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from metaproxy.proxy.dialect import TRANSLATIONS, Dialects, Untranslatable
from metaproxy.wire import fields

pytestmark = pytest.mark.unit

LIMIT = 1 << 24


def encode(obj: Any) -> bytes:
    buf = TTransport.TMemoryBuffer()
    obj.write(TBinaryProtocol.TBinaryProtocol(buf))
    return buf.getvalue()


def decode(cls: type, data: bytes) -> Any:
    obj = cls()
    obj.read(TBinaryProtocol.TBinaryProtocol(TTransport.TMemoryBuffer(data)))
    return obj


def split(data: bytes) -> dict[int, fields.Field]:
    return fields.split(data, 0, LIMIT)[0]


def table4(name: str) -> t4.Table:
    sd = t4.StorageDescriptor(
        cols=[t4.FieldSchema("a", "bigint", "x")], location=f"hdfs://nn/w/{name}", inputFormat="in"
    )
    return t4.Table(tableName=name, dbName="db", owner="o", sd=sd, parameters={"k": "v"}, catName="hive")


def test_get_table_becomes_get_table_req_and_back() -> None:
    t = TRANSLATIONS["get_table"]
    request = t.request(split(encode(Hive2.get_table_args(dbname="db", tbl_name="t"))), LIMIT)
    req = decode(Hive4.get_table_req_args, request).req
    assert (req.dbName, req.tblName, req.catName) == ("db", "t", None)
    answer = encode(
        Hive4.get_table_req_result(success=t4.GetTableResult(table=table4("t"), isStatsCompliant=True))
    )
    got = decode(Hive2.get_table_result, t.reply(split(answer), LIMIT)).success
    assert (got.tableName, got.dbName, got.sd.location, got.parameters) == (
        "t",
        "db",
        "hdfs://nn/w/t",
        {"k": "v"},
    )


def test_exceptions_keep_their_field_and_type() -> None:
    t = TRANSLATIONS["get_table"]
    missing = encode(Hive4.get_table_req_result(o2=t4.NoSuchObjectException(message="db.t table not found")))
    result = decode(Hive2.get_table_result, t.reply(split(missing), LIMIT))
    assert result.success is None and isinstance(result.o2, t2.NoSuchObjectException)
    assert result.o2.message == "db.t table not found"
    # the Hive 2 IDL declares no exception for get_table_objects_by_name: an old server answered
    # one as a TApplicationException, and so does the translation
    t = TRANSLATIONS["get_table_objects_by_name"]
    unknown_db = split(
        encode(Hive4.get_table_objects_by_name_req_result(o3=t4.UnknownDBException(message="no db")))
    )
    assert t.undeclared(unknown_db, LIMIT) == "UnknownDBException: no db"
    assert TRANSLATIONS["get_table"].undeclared(split(missing), LIMIT) is None


def test_get_table_objects_by_name_becomes_its_req_form_and_back() -> None:
    t = TRANSLATIONS["get_table_objects_by_name"]
    args = encode(Hive2.get_table_objects_by_name_args(dbname="db", tbl_names=["a", "b"]))
    req = decode(Hive4.get_table_objects_by_name_req_args, t.request(split(args), LIMIT)).req
    assert (req.dbName, req.tblNames) == ("db", ["a", "b"])
    answer = encode(
        Hive4.get_table_objects_by_name_req_result(
            success=t4.GetTablesResult(tables=[table4("a"), table4("b")])
        )
    )
    got = decode(Hive2.get_table_objects_by_name_result, t.reply(split(answer), LIMIT)).success
    assert [x.sd.location for x in got] == ["hdfs://nn/w/a", "hdfs://nn/w/b"]


def test_get_partitions_by_names_req_becomes_the_old_call_and_back() -> None:
    t = TRANSLATIONS["get_partitions_by_names_req"]
    req = t4.GetPartitionsByNamesRequest(
        db_name="db", tbl_name="t", names=["d=1", "d=2"], get_col_stats=False
    )
    args = decode(
        Hive4.get_partitions_by_names_args,
        t.request(split(encode(Hive4.get_partitions_by_names_req_args(req=req))), LIMIT),
    )
    assert (args.db_name, args.tbl_name, args.names) == ("db", "t", ["d=1", "d=2"])
    parts = [
        t4.Partition(
            values=["1"], dbName="db", tableName="t", sd=t4.StorageDescriptor(location="hdfs://nn/w/t/d=1")
        )
    ]
    answer = encode(Hive4.get_partitions_by_names_result(success=parts))
    got = decode(Hive4.get_partitions_by_names_req_result, t.reply(split(answer), LIMIT)).success
    assert [p.sd.location for p in got.partitions] == ["hdfs://nn/w/t/d=1"]


def test_what_cannot_be_said_in_the_other_dialect_is_refused() -> None:
    t = TRANSLATIONS["get_table"]
    with pytest.raises(Untranslatable, match="argument 2"):
        t.request(split(encode(Hive2.get_table_args(dbname="db"))), LIMIT)


def test_what_an_upstream_lacks_is_learned_per_upstream() -> None:
    d = Dialects()
    assert d.translation("thrift://a:1", "get_table") is None  # sent as it is until refused
    assert d.learn("thrift://a:1", "get_table") is TRANSLATIONS["get_table"]
    assert d.translation("thrift://a:1", "get_table") is TRANSLATIONS["get_table"]
    assert d.translation("thrift://b:1", "get_table") is None
    assert d.learn("thrift://a:1", "get_index_names") is None  # no translation: the error stands
    assert d.lacking() == {"thrift://a:1": ["get_index_names", "get_table"]}


def test_the_version_an_upstream_reports_says_what_it_lacks() -> None:
    d = Dialects()
    assert d.version("thrift://h4:1") is None
    d.probed("thrift://h4:1", "4.0.1")
    d.probed("thrift://h2:1", "2.3.10")
    d.probed("thrift://h3:1", "3.1.3")
    d.probed("thrift://odd:1", "")  # could not say: only its answers will tell
    assert d.lacking() == {
        "thrift://h4:1": ["get_table", "get_table_objects_by_name"],
        "thrift://h2:1": ["get_partitions_by_names_req"],
        "thrift://h3:1": ["get_partitions_by_names_req"],
    }
    assert d.versions()["thrift://odd:1"] == "" and d.translation("thrift://odd:1", "get_table") is None


def test_the_readme_lists_every_translation() -> None:
    """The README's table of translations is the proxy's: a translation added or dropped
    without the table fails here."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("<!-- translations:begin -->")[1].split("<!-- translations:end -->")[0]
    rows = {
        (m[1], m[2], m[3])
        for m in re.finditer(r"^\| `(\w+)` \| ([^|]+?) \| `(\w+)` \|$", table, re.MULTILINE)
    }
    lines = {"4.": "Hive 4", "2.,3.": "Hive 2.3 or 3.1"}
    assert rows == {(t.client, lines[",".join(t.missing_in)], t.upstream) for t in TRANSLATIONS.values()}

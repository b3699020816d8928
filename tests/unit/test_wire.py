"""The Thrift walker: message ends, location spans, splicing; C and Python agree on everything."""

from __future__ import annotations

import os
import random
import struct

import pytest
from hive_metastore import ThriftHiveMetastore as M
from hive_metastore import ttypes as tt
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from metaproxy.wire import binary, schema

pytestmark = pytest.mark.unit

LIMIT = 1 << 30
WALKERS = [binary.walk_python] + ([binary.walk_c] if binary.ACCELERATED else [])


def encode(name: str, mtype: int, obj: object, seqid: int = 7) -> bytes:
    t = TTransport.TMemoryBuffer()
    p = TBinaryProtocol.TBinaryProtocol(t)
    p.writeMessageBegin(name, mtype, seqid)
    obj.write(p)  # type: ignore[attr-defined]
    p.writeMessageEnd()
    return t.getvalue()


def decode(cls: type, data: bytes) -> object:
    t = TTransport.TMemoryBuffer(data)
    p = TBinaryProtocol.TBinaryProtocol(t)
    p.readMessageBegin()
    obj = cls()
    obj.read(p)  # type: ignore[attr-defined]
    return obj


def sd(location: str, skewed: bool = False) -> tt.StorageDescriptor:
    return tt.StorageDescriptor(
        cols=[tt.FieldSchema(name=f"c{i}", type="bigint", comment="a column") for i in range(5)],
        location=location,
        inputFormat="in",
        outputFormat="out",
        compressed=False,
        numBuckets=4,
        serdeInfo=tt.SerDeInfo(name="s", serializationLib="lib", parameters={"k": location}),
        bucketCols=["c1"],
        sortCols=[tt.Order(col="c1", order=1)],
        parameters={"location": "not a location field"},
        skewedInfo=tt.SkewedInfo(
            skewedColNames=["c2"],
            skewedColValues=[["1"], ["2"]],
            skewedColValueLocationMaps={("1",): location + "/c2=1", ("2",): location + "/c2=2"}
            if skewed
            else {},
        ),
        storedAsSubDirectories=skewed,
    )


def table(location: str) -> tt.Table:
    return tt.Table(
        tableName="t",
        dbName="db",
        owner="alice",
        createTime=1,
        lastAccessTime=2,
        retention=0,
        sd=sd(location, skewed=True),
        partitionKeys=[tt.FieldSchema(name="p", type="string")],
        parameters={"EXTERNAL": "TRUE", "comment": location},
        tableType="EXTERNAL_TABLE",
        catName="hive",
    )


def partitions(n: int, base: str = "hdfs://nn:8020/w/t") -> list[tt.Partition]:
    return [
        tt.Partition(
            values=[str(i)], dbName="db", tableName="t", sd=sd(f"{base}/p={i}"), parameters={"n": str(i)}
        )
        for i in range(n)
    ]


def samples() -> list[tuple[str, bytes, int]]:
    """(method, encoded reply or call, number of locations in it)."""
    loc = "hdfs://nn:8020/w/t"
    return [
        (
            "get_table_req",
            encode(
                "get_table_req",
                binary.REPLY,
                M.get_table_req_result(success=tt.GetTableResult(table=table(loc))),
            ),
            3,
        ),
        (
            "get_partitions_by_names",
            encode(
                "get_partitions_by_names",
                binary.REPLY,
                M.get_partitions_by_names_result(success=partitions(50)),
            ),
            50,
        ),
        (
            "get_database",
            encode(
                "get_database",
                binary.REPLY,
                M.get_database_result(
                    success=tt.Database(name="db", locationUri=loc, managedLocationUri=loc + "m")
                ),
            ),
            2,
        ),
        (
            "add_partitions",
            encode("add_partitions", binary.CALL, M.add_partitions_args(new_parts=partitions(3))),
            3,
        ),
        ("create_table", encode("create_table", binary.CALL, M.create_table_args(tbl=table(loc))), 3),
        (
            "get_partitions_pspec",
            encode(
                "get_partitions_pspec",
                binary.REPLY,
                M.get_partitions_pspec_result(
                    success=[
                        tt.PartitionSpec(
                            dbName="db",
                            tableName="t",
                            rootPath=loc,
                            sharedSDPartitionSpec=tt.PartitionSpecWithSharedSD(
                                partitions=[tt.PartitionWithoutSD(values=["1"], relativePath="/p=1")],
                                sd=sd(loc),
                            ),
                        )
                    ]
                ),
            ),
            2,
        ),
        (
            "get_all_databases",
            encode("get_all_databases", binary.REPLY, M.get_all_databases_result(success=["a", "b"])),
            0,
        ),
    ]


def schema_for(h: binary.MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name)
    if info is None:
        return None
    return info.request if h.mtype == binary.CALL else info.reply


@pytest.mark.parametrize("walk", WALKERS, ids=lambda w: w.__name__)
@pytest.mark.parametrize(("method", "data", "count"), samples(), ids=[s[0] for s in samples()])
def test_finds_end_and_every_location(walk, method: str, data: bytes, count: int) -> None:  # type: ignore[no-untyped-def]
    h = binary.parse_header(data)
    assert h.name == method
    end, spans = walk(data + b"trailing bytes of the next message", h.body_start, schema_for(h), LIMIT)
    assert end == len(data)
    assert len(spans) == count
    for s in spans:
        assert binary.read_string(data, s).startswith("hdfs://nn:8020/w/t")


def test_skewed_maps_and_kinds() -> None:
    data = samples()[0][1]
    h = binary.parse_header(data)
    _, spans = binary.walk_python(data, h.body_start, schema_for(h), LIMIT)
    values = [binary.read_string(data, s) for s in spans]
    assert "hdfs://nn:8020/w/t/c2=1" in values and "hdfs://nn:8020/w/t/c2=2" in values
    db = samples()[2][1]
    h = binary.parse_header(db)
    _, spans = binary.walk_python(db, h.body_start, schema_for(h), LIMIT)
    assert {k for _, _, k in spans} == {binary.DB_LOC}


@pytest.mark.parametrize(("method", "data", "count"), samples(), ids=[s[0] for s in samples()])
def test_splice_changes_only_locations(method: str, data: bytes, count: int) -> None:
    scanned = binary.scan(data, schema_for, LIMIT)
    out = binary.splice(
        data, scanned.end, scanned.spans, lambda s, k: s.replace("hdfs://nn:8020/w", "s3://gw/mnt/ü x")
    )
    if count == 0:
        assert out is None
        return
    assert out is not None
    rescanned = binary.scan(out, schema_for, LIMIT)
    assert rescanned.end == len(out)
    assert [binary.read_string(out, sp) for sp in rescanned.spans] == [
        binary.read_string(data, sp).replace("hdfs://nn:8020/w", "s3://gw/mnt/ü x") for sp in scanned.spans
    ]
    # changing the locations back restores the original bytes exactly: nothing else was touched
    back = binary.splice(
        out, len(out), rescanned.spans, lambda s, k: s.replace("s3://gw/mnt/ü x", "hdfs://nn:8020/w")
    )
    assert back == data


def test_truncations_are_incomplete_never_wrong() -> None:
    for _, data, _ in samples():
        h = binary.parse_header(data)
        for cut in range(h.body_start, len(data), max(1, len(data) // 97)):
            for walk in WALKERS:
                with pytest.raises(binary.Incomplete):
                    walk(data[:cut], h.body_start, schema_for(h), LIMIT)


def test_header_variants() -> None:
    strict = binary.encode_header("get_table_req", binary.CALL, 42)
    h = binary.parse_header(strict + b"\x00")
    assert (h.name, h.mtype, h.seqid, h.strict) == ("get_table_req", binary.CALL, 42, True)
    old = struct.pack(">i", 3) + b"abc" + bytes([binary.CALL]) + struct.pack(">i", 9)
    h = binary.parse_header(old + b"\x00")
    assert (h.name, h.seqid, h.strict) == ("abc", 9, False)
    with pytest.raises(binary.Malformed, match="version"):
        binary.parse_header(struct.pack(">I", 0x80020001) + b"\x00" * 20)
    with pytest.raises(binary.Malformed):
        binary.parse_header(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(binary.Incomplete):
        binary.parse_header(strict[:6])


def test_hostile_sizes_fail_fast() -> None:
    body = bytes([binary.LIST]) + struct.pack(">h", 0) + bytes([binary.STRUCT]) + struct.pack(">i", 2**31 - 1)
    data = binary.encode_header("get_partitions", binary.REPLY, 1) + body
    for walk in WALKERS:
        with pytest.raises(binary.Malformed):
            walk(data, binary.parse_header(data).body_start, schema_for(binary.parse_header(data)), 1 << 20)
    deep = binary.encode_header("x", binary.REPLY, 1) + (bytes([binary.STRUCT]) + b"\x00\x01") * 200
    for walk in WALKERS:
        with pytest.raises(binary.WireError):
            walk(deep, binary.parse_header(deep).body_start, None, LIMIT)


@pytest.mark.skipif(
    not binary.ACCELERATED and os.environ.get("CI") != "true",
    reason="the C walker was not built (no compiler); in CI its absence fails instead",
)
def test_c_and_python_agree_on_random_mutations() -> None:
    assert binary.ACCELERATED, "the C walker was not built: CI has a compiler, so the build failed"
    rng = random.Random(1)
    base = samples()
    for _ in range(3000):
        method, data, _ = rng.choice(base)
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        if rng.random() < 0.3:
            buf = buf[: rng.randrange(len(buf))]
        try:
            h = binary.parse_header(buf)
        except binary.WireError:
            continue
        results = []
        for walk in (binary.walk_python, binary.walk_c):
            try:
                results.append(walk(bytes(buf), h.body_start, schema_for(h), 1 << 24))
            except binary.Incomplete:
                results.append("incomplete")
            except binary.Malformed:
                results.append("malformed")
        assert results[0] == results[1], method


def test_refusal_replies_decode_as_the_declared_exception() -> None:
    info = schema.method("drop_table")
    assert info is not None and info.write and info.meta_exception_fid is not None
    reply = binary.encode_exception_reply("drop_table", 5, info.meta_exception_fid, "metaproxy: no")
    result = decode(M.drop_table_result, reply)
    errors = [getattr(result, a) for a in ("o1", "o2", "o3") if getattr(result, a, None) is not None]
    assert len(errors) == 1 and isinstance(errors[0], tt.MetaException)
    assert errors[0].message == "metaproxy: no"


def test_method_classification() -> None:
    for name in (
        "get_table_req",
        "get_partitions_by_names",
        "get_all_databases",
        "set_ugi",
        "get_partition_names",
    ):
        assert not schema.is_write(name), name
    for name in (
        "create_table",
        "alter_table_with_environment_context",
        "add_partitions",
        "drop_partition",
        "update_table_column_statistics_req",
        "lock",
        "open_txns",
        "rename_partition",
    ):
        assert schema.is_write(name), name
    assert schema.method("get_table_req").reply is not None  # type: ignore[union-attr]
    assert schema.method("get_all_databases").reply is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("method", "data", "count"), samples(), ids=[s[0] for s in samples()])
def test_incremental_scan_equals_whole_scan(method: str, data: bytes, count: int) -> None:
    whole = binary.scan(data, schema_for, LIMIT)
    rng = random.Random(len(data))
    for chunking in ("bytewise", "random"):
        scanner = binary.IncrementalScanner(schema_for, LIMIT)
        buf = bytearray()
        result = None
        i = 0
        while result is None:
            assert i < len(data), "the scanner did not finish on the complete message"
            step = 1 if chunking == "bytewise" else rng.randint(1, 300)
            buf += data[i : i + step]
            i += step
            result = scanner.feed(buf)
        assert result == whole
        assert result.end == len(data)


def test_incremental_scan_rejects_what_the_walker_rejects() -> None:
    data = samples()[1][1]
    h = binary.parse_header(data)
    bad = bytearray(data)
    bad[h.body_start] = 99  # not a Thrift type
    with pytest.raises(binary.Malformed):
        binary.IncrementalScanner(schema_for, LIMIT).feed(bad)

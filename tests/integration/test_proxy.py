"""The metastore proxy against the real Hive Metastore: fidelity, both-way rewriting, refusals,
unknown methods, upstream failures and malformed input."""

from __future__ import annotations

import random
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hive_metastore import ThriftHiveMetastore as M
from hive_metastore import ttypes as tt
from proxying import proxy_config, uri
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TTransport

from metaproxy.config import parse_config
from metaproxy.hms import connect
from metaproxy.mounts import add_mount, make_mount
from metaproxy.state import open_state
from metaproxy.thrift_server import MetastoreProxy
from metaproxy.wire import binary

pytestmark = [pytest.mark.integration, pytest.mark.compat, pytest.mark.state]


def rich_table(db: str, name: str, location: str) -> tt.Table:
    cols = [
        tt.FieldSchema(name=f"c{i}", type=t, comment=f"column {i}")
        for i, t in enumerate(["bigint", "string", "double"])
    ]
    return tt.Table(
        tableName=name,
        dbName=db,
        owner="alice",
        ownerType=tt.PrincipalType.USER,
        createTime=int(time.time()),
        lastAccessTime=0,
        retention=0,
        sd=tt.StorageDescriptor(
            cols=cols,
            location=location,
            inputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            outputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            compressed=False,
            numBuckets=8,
            serdeInfo=tt.SerDeInfo(
                serializationLib="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                parameters={"serialization.format": "1"},
            ),
            bucketCols=["c0"],
            sortCols=[tt.Order(col="c0", order=1)],
            parameters={"sd.param": "x"},
            skewedInfo=tt.SkewedInfo(
                skewedColNames=["c1"], skewedColValues=[["a"]], skewedColValueLocationMaps={}
            ),
            storedAsSubDirectories=False,
        ),
        partitionKeys=[tt.FieldSchema(name="p", type="string", comment="partition")],
        parameters={"EXTERNAL": "TRUE", "comment": "a rich table", "numRows": "42"},
        tableType="EXTERNAL_TABLE",
    )


@pytest.fixture
def scratch_db(stack: dict[str, Any]) -> Iterator[str]:
    """A database under the /tpcds mount, dropped afterwards (straight at the HMS)."""
    db = f"scratch_{uuid.uuid4().hex[:8]}"
    with connect(stack["hms"]) as hms:
        hms.create_database(tt.Database(name=db, locationUri=f"{stack['hdfs']}/warehouse/tpcds/{db}"))
    yield db
    with connect(stack["hms"]) as hms:
        hms.drop_database(db, False, True)


def replace_locations(obj: Any, old: str, new: str) -> Any:
    """A copy of a Thrift object with every location prefix ``old`` replaced by ``new``."""
    import copy

    obj = copy.deepcopy(obj)

    def visit(o: Any) -> None:
        if isinstance(o, list):
            for x in o:
                visit(x)
            return
        if not hasattr(o, "thrift_spec"):
            return
        for f in o.thrift_spec:
            if not f:
                continue
            v = getattr(o, f[2], None)
            if f[2] in ("location", "locationUri", "managedLocationUri", "rootPath") and isinstance(v, str):
                setattr(o, f[2], v.replace(old, new, 1))
            elif f[2] == "skewedColValueLocationMaps" and isinstance(v, dict):
                setattr(o, f[2], {k: x.replace(old, new, 1) for k, x in v.items()})
            else:
                visit(v)

    visit(obj)
    return obj


def test_objects_through_the_proxy_equal_direct_but_for_locations(
    stack: dict[str, Any], proxy: MetastoreProxy, scratch_db: str
) -> None:
    hdfs_prefix = f"{stack['hdfs']}/warehouse/tpcds"
    loc = f"{hdfs_prefix}/{scratch_db}/rich"
    with connect(stack["hms"]) as hms:
        hms.create_table(rich_table(scratch_db, "rich", loc))
        parts = [
            tt.Partition(
                values=[v],
                dbName=scratch_db,
                tableName="rich",
                sd=rich_table(scratch_db, "rich", f"{loc}/p={v}").sd,
                parameters={"numRows": "7", "owner.note": v},
            )
            for v in ("a b", "ü", "x=y")
        ]
        hms.add_partitions(parts)
        stats = tt.ColumnStatistics(
            statsDesc=tt.ColumnStatisticsDesc(isTblLevel=True, dbName=scratch_db, tableName="rich"),
            statsObj=[
                tt.ColumnStatisticsObj(
                    colName="c0",
                    colType="bigint",
                    statsData=tt.ColumnStatisticsData(
                        longStats=tt.LongColumnStatsData(lowValue=1, highValue=9, numNulls=0, numDVs=9)
                    ),
                )
            ],
            engine="hive",
        )
        try:
            hms.update_table_column_statistics_req(
                tt.SetPartitionsStatsRequest(colStats=[stats], engine="hive")
            )
        except TApplicationException as e:  # Hive 2.3 and 3.1 have only the older call
            if e.type != TApplicationException.UNKNOWN_METHOD:
                raise
            hms.update_table_column_statistics(stats)
    names = None
    with connect(stack["hms"]) as direct, connect(uri(proxy, "cloud")) as cloud:
        for call in (
            lambda c: c.get_table_req(tt.GetTableRequest(dbName=scratch_db, tblName="rich")).table,
            lambda c: (
                c.get_table_objects_by_name_req(
                    tt.GetTablesRequest(dbName=scratch_db, tblNames=["rich"])
                ).tables
            ),
            lambda c: c.get_partitions(scratch_db, "rich", -1),
            lambda c: c.get_partitions_by_names(
                scratch_db, "rich", names or c.get_partition_names(scratch_db, "rich", -1)
            ),
            lambda c: c.get_partitions_by_filter(scratch_db, "rich", 'p = "ü"', -1),
            lambda c: c.get_partition(scratch_db, "rich", ["a b"]),
            lambda c: c.get_database(scratch_db),
            lambda c: c.get_table_statistics_req(
                tt.TableStatsRequest(dbName=scratch_db, tblName="rich", colNames=["c0"], engine="hive")
            ),
            lambda c: c.get_partitions_pspec(scratch_db, "rich", -1),
        ):
            a, b = call(direct), call(cloud)
            assert replace_locations(a, hdfs_prefix, "s3://metaproxy/tpcds") == b
            if a != b:  # something under the mount was rewritten
                assert "s3://metaproxy/tpcds/" in repr(b) and hdfs_prefix not in repr(b)


def test_unknown_and_location_free_methods_are_forwarded_byte_for_byte(
    stack: dict[str, Any], proxy: MetastoreProxy, tpcds: Any
) -> None:
    def raw_call(target: str, payload: bytes) -> bytes:
        host, port = target.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(payload)
            buf = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
                try:
                    sc = binary.scan(buf, lambda h: None, 1 << 30)
                    return bytes(buf[: sc.end])
                except binary.Incomplete:
                    continue
            return bytes(buf)

    get_dbs = binary.encode_header("get_all_databases", binary.CALL, 11) + b"\x00"
    assert raw_call(uri(proxy, "cloud"), get_dbs) == raw_call(stack["hms"], get_dbs)
    # a method no IDL here knows: the HMS's own answer comes back unchanged
    unknown = (
        binary.encode_header("get_the_future_v9", binary.CALL, 12)
        + binary.encode_string_field(1, "x")
        + b"\x00"
    )
    direct = raw_call(stack["hms"], unknown)
    assert raw_call(uri(proxy, "cloud"), unknown) == direct
    assert b"get_the_future_v9" in direct and binary.parse_header(direct).mtype == binary.EXCEPTION


def test_upstream_exceptions_keep_type_and_message(proxy: MetastoreProxy) -> None:
    with connect(uri(proxy, "cloud")) as c, pytest.raises(tt.NoSuchObjectException, match="nope"):
        c.get_table_req(tt.GetTableRequest(dbName="default", tblName="nope"))


def test_read_only_by_default(stack: dict[str, Any], proxy: MetastoreProxy, scratch_db: str) -> None:
    with connect(uri(proxy, "cloud")) as c:
        with pytest.raises(tt.MetaException, match=r"read-only; set \[metastore\] allow_writes"):
            c.create_table(rich_table(scratch_db, "t", f"s3://metaproxy/tpcds/{scratch_db}/t"))
        with pytest.raises(tt.MetaException, match="allow_writes"):
            c.drop_database(scratch_db, False, True)
        assert scratch_db in c.get_all_databases()  # the connection still works
    with connect(stack["hms"]) as hms:
        assert hms.get_all_tables(scratch_db) == []


@pytest.mark.parametrize(
    "proxy", [{"allow_writes": True, "writable_databases": ["scratch_.*"]}], indirect=True
)
def test_writes_are_mapped_back_before_they_reach_the_hms(
    stack: dict[str, Any], proxy: MetastoreProxy, scratch_db: str
) -> None:
    hdfs_loc = f"{stack['hdfs']}/warehouse/tpcds/{scratch_db}/t"
    gw_loc = f"s3://metaproxy/tpcds/{scratch_db}/t"
    with connect(uri(proxy, "cloud")) as c:
        c.create_table(rich_table(scratch_db, "t", gw_loc))
        c.add_partitions(
            [
                tt.Partition(
                    values=[v],
                    dbName=scratch_db,
                    tableName="t",
                    sd=rich_table(scratch_db, "t", f"{gw_loc}/p={v}").sd,
                )
                for v in ("1", "2 ü")
            ]
        )
        t = c.get_table_req(tt.GetTableRequest(dbName=scratch_db, tblName="t")).table
        assert t.sd.location == gw_loc
        t.parameters["touched"] = "yes"
        c.alter_table_with_environment_context(scratch_db, "t", t, tt.EnvironmentContext({}))
        p = c.get_partition(scratch_db, "t", ["1"])
        p.parameters["touched"] = "yes"
        c.alter_partition(scratch_db, "t", p)
        with pytest.raises(tt.MetaException, match="under no mount"):
            c.create_table(rich_table(scratch_db, "bad", "s3://metaproxy/nomount/bad"))
        with pytest.raises(tt.MetaException, match="not writable"):
            c.create_table(rich_table("default", "t2", f"{stack['hdfs']}/warehouse/x"))
    with connect(stack["hms"]) as hms:
        t = hms.get_table_req(tt.GetTableRequest(dbName=scratch_db, tblName="t")).table
        assert t.sd.location == hdfs_loc and t.parameters["touched"] == "yes"
        parts = hms.get_partitions(scratch_db, "t", -1)
        assert sorted(p.sd.location for p in parts) == [f"{hdfs_loc}/p=1", f"{hdfs_loc}/p=2 ü"]
        assert all("metaproxy" not in repr(p) for p in parts) and "s3://metaproxy" not in repr(t)
        assert hms.get_all_tables(scratch_db) == ["t"]


def test_profiles(stack: dict[str, Any], proxy: MetastoreProxy, tpcds: Any) -> None:
    req = tt.GetTableRequest(dbName="tpcds", tblName="item")
    with connect(uri(proxy, "cloud")) as c:
        assert c.get_table_req(req).table.sd.location == "s3://metaproxy/tpcds/item"
    for profile in ("onprem", "passthrough"):
        with connect(uri(proxy, profile)) as c:
            assert c.get_table_req(req).table.sd.location == f"{stack['hdfs']}/warehouse/tpcds/item"


def test_mounts_added_at_run_time_are_picked_up(
    stack: dict[str, Any], proxy: MetastoreProxy, tpcds: Any
) -> None:
    req = tt.GetTableRequest(dbName="tpcds", tblName="item")
    db = open_state(proxy.config.state)
    add_mount(proxy.config, db, make_mount("/items", [f"{stack['hdfs']}/warehouse/tpcds/item"]))
    deadline = time.monotonic() + 10
    with connect(uri(proxy, "cloud")) as c:
        while (
            c.get_table_req(req).table.sd.location != "s3://metaproxy/items" and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert c.get_table_req(req).table.sd.location == "s3://metaproxy/items"


def test_failover_and_unreachable_upstream(stack: dict[str, Any], tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"thrift://127.0.0.1:{s.getsockname()[1]}"
    cfg = proxy_config(stack, str(tmp_path), uris=[dead, stack["hms"]], connect_timeout="1s")
    p = MetastoreProxy(cfg)
    p.start()
    try:
        with connect(uri(p, "cloud")) as c:
            assert "default" in c.get_all_databases()
    finally:
        p.stop()
    cfg = proxy_config(stack, str(tmp_path), uris=[dead], connect_timeout="1s")
    p = MetastoreProxy(cfg)
    p.start()
    try:
        with connect(uri(p, "cloud")) as c:
            with pytest.raises(tt.MetaException, match="no upstream HMS reachable"):
                c.get_database("default")
            with pytest.raises(tt.MetaException, match="no upstream HMS reachable"):
                c.get_database("default")  # the same connection keeps answering
    finally:
        p.stop()


def test_malformed_frames_never_stop_the_proxy(proxy: MetastoreProxy) -> None:
    host, port = uri(proxy, "cloud").split("//")[1].split(":")
    rng = random.Random(7)
    good = binary.encode_header("get_all_databases", binary.CALL, 1) + b"\x00"
    t = TTransport.TMemoryBuffer()
    TBinaryProtocol.TBinaryProtocol(t).writeMessageBegin("get_table_req", binary.CALL, 3)
    M.get_table_req_args(req=tt.GetTableRequest(dbName="tpcds", tblName="item")).write(
        TBinaryProtocol.TBinaryProtocol(t)
    )
    seeds = [good, t.getvalue(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", struct.pack(">i", -1) * 4]
    answered = closed = 0
    for i in range(2000):
        frame = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            frame[rng.randrange(len(frame))] = rng.randrange(256)
        if i % 3 == 0:
            frame = frame[: rng.randrange(1, len(frame))]
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            try:
                data = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                data = b""
            answered += bool(data)
            closed += not data
    assert answered + closed == 2000
    with connect(uri(proxy, "cloud")) as c:
        assert "default" in c.get_all_databases()


def test_slow_upstream_times_out_with_a_clear_error(stack: dict[str, Any], tmp_path: Any) -> None:
    import threading

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept_and_say_nothing, daemon=True)
    t.start()
    cfg = proxy_config(
        stack, str(tmp_path), uris=[f"thrift://127.0.0.1:{silent.getsockname()[1]}"], call_timeout="1s"
    )
    p = MetastoreProxy(cfg)
    p.start()
    try:
        with connect(uri(p, "cloud")) as c:
            # the call times out (or the watch, which looks as often, finds the HMS mute first)
            with pytest.raises(tt.MetaException, match="failed during the call|not answering"):  # noqa: SIM117
                c.get_database("default")
            deadline = time.monotonic() + 10
            while p.health()["ok"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not p.health()["ok"] and "read timeout" in p.health()["upstream"]["reason"]
            # the client's connection survives, and from now on learns at once, not after a timeout
            t0 = time.monotonic()
            with pytest.raises(
                tt.MetaException, match="no upstream HMS reachable: the metastore is not answering"
            ):
                c.get_database("default")
            assert time.monotonic() - t0 < 0.5
    finally:
        p.stop()
        stop.set()
        t.join()
        for s in held:
            s.close()
        silent.close()


def test_oversized_messages_are_refused(stack: dict[str, Any], tmp_path: Any) -> None:
    cfg = parse_config(
        {
            "metastore": {"uris": [stack["hms"]]},
            "state": {"path": f"{tmp_path}/state.db"},
            "proxy": {"max_message_size": "64KiB", "listener": [{"port": 0, "profile": "cloud"}]},
        },
        "test.toml",
    )
    p = MetastoreProxy(cfg)
    p.start()
    try:
        host, port = uri(p, "cloud").split("//")[1].split(":")
        # one huge string: refused as soon as its length is read
        big = binary.encode_header("get_table_req", binary.CALL, 1) + binary.encode_string_field(
            1, "x" * 200_000
        )
        # many small strings adding up past the limit: refused once the buffer passes it
        t = TTransport.TMemoryBuffer()
        TBinaryProtocol.TBinaryProtocol(t).writeMessageBegin("get_partitions_by_names", binary.CALL, 2)
        M.get_partitions_by_names_args(
            db_name="d", tbl_name="t", names=[f"p={i}" for i in range(20_000)]
        ).write(TBinaryProtocol.TBinaryProtocol(t))
        for frame, why in ((big, b"bad string length"), (t.getvalue(), b"limit")):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(frame[:100_000])
                reply = s.recv(65536)
            assert binary.parse_header(reply).mtype == binary.EXCEPTION
            assert b"malformed request" in reply and why in reply
        with connect(uri(p, "cloud")) as c:
            assert "default" in c.get_all_databases()
    finally:
        p.stop()


@pytest.mark.parametrize(
    "proxy",
    [
        {
            "database_prefix": "onprem_",
            "database_map": {"sales": "tpcds"},
            "allow_writes": True,
            "writable_databases": ["onprem_scratch_.*"],
        }
    ],
    indirect=True,
)
def test_database_names_are_mapped_both_ways(
    stack: dict[str, Any], proxy: MetastoreProxy, tpcds: Any, scratch_db: str
) -> None:
    with connect(uri(proxy, "cloud")) as c:
        dbs = c.get_all_databases()
        assert "sales" in dbs and f"onprem_{scratch_db}" in dbs and "onprem_default" in dbs
        assert "tpcds" not in dbs
        for name in ("sales", "onprem_tpcds"):
            t = c.get_table_req(tt.GetTableRequest(dbName=name, tblName="item")).table
            assert t.dbName == "sales"  # the explicit map wins over the prefix
            assert t.sd.location == "s3://metaproxy/tpcds/item"
        assert c.get_database("onprem_default").name == "onprem_default"
        parts = c.get_partitions_by_names(
            "sales", "store_sales", c.get_partition_names("sales", "store_sales", 3)
        )
        assert {p.dbName for p in parts} == {"sales"}
        c.create_table(rich_table(f"onprem_{scratch_db}", "t", f"s3://metaproxy/tpcds/{scratch_db}/t"))
        with pytest.raises(tt.MetaException, match="not writable"):
            c.create_table(rich_table("sales", "t", "s3://metaproxy/tpcds/t"))
    with connect(stack["hms"]) as hms:
        t = hms.get_table_req(tt.GetTableRequest(dbName=scratch_db, tblName="t")).table
        assert t.dbName == scratch_db and "onprem_" not in repr(t)
        assert t.sd.location == f"{stack['hdfs']}/warehouse/tpcds/{scratch_db}/t"

"""Each component of the local stack is real and works: HDFS, the HMS, the S3 server, Trino."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from metaproxy.ufs import UfsNotFound
from metaproxy.ufs.webhdfs import WebHdfs
from metaproxy_devstack import sample_data
from metaproxy_devstack.launcher import endpoints_path, load_endpoints

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def test_endpoints_file_has_the_documented_keys(stack: dict[str, Any]) -> None:
    ep = load_endpoints()
    assert ep is not None, endpoints_path()
    for key in ("hms", "hdfs", "webhdfs", "s3", "trino", "s3_access_key", "s3_secret_key"):
        assert key in ep
    assert ep["hms"].startswith("thrift://127.0.0.1:")
    assert ep["hdfs"].startswith("hdfs://127.0.0.1:")
    assert ep["hms_version"] == (os.environ.get("METAPROXY_HMS") or "4.0")


def test_the_hms_is_the_version_asked_for(stack: dict[str, Any], hms_client: Any) -> None:
    """What the server serves tells the versions apart: catalogs came with Hive 3, and Hive 4
    no longer serves get_table."""
    from hive_metastore.ttypes import NoSuchObjectException
    from thrift.Thrift import TApplicationException

    def serves(call: Callable[[], object]) -> bool:
        try:
            call()
        except NoSuchObjectException:
            pass
        except TApplicationException as e:
            if e.type != TApplicationException.UNKNOWN_METHOD:
                raise
            return False
        return True

    served = (
        serves(lambda: hms_client.get_table("default", "no_such_table")),
        serves(hms_client.get_catalogs),
    )
    assert served == {"2.3": (True, False), "3.1": (True, True), "4.0": (False, True)}[stack["hms_version"]]


def test_group_by_in_trino_equals_pyarrow(tpcds: dict[str, Any], sample: Any, trino_query: Any) -> None:
    rows = trino_query(
        "SELECT ss_store_sk, count(*), sum(ss_quantity), sum(ss_net_profit) "
        "FROM store_sales GROUP BY ss_store_sk ORDER BY ss_store_sk"
    )
    fact = sample.fact()
    agg = fact.group_by("ss_store_sk").aggregate(
        [("ss_store_sk", "count"), ("ss_quantity", "sum"), ("ss_net_profit", "sum")]
    )
    agg = agg.sort_by("ss_store_sk")
    expected = [
        [k, c, q, Decimal(p)]
        for k, c, q, p in zip(
            agg["ss_store_sk"].to_pylist(),
            agg["ss_store_sk_count"].to_pylist(),
            agg["ss_quantity_sum"].to_pylist(),
            agg["ss_net_profit_sum"].to_pylist(),
            strict=True,
        )
    ]
    assert rows == expected
    assert len(rows) == sample_data.STORES


def test_join_with_dimensions(tpcds: dict[str, Any], sample: Any, trino_query: Any) -> None:
    rows = trino_query(
        "SELECT i.i_category, count(*) FROM store_sales s JOIN item i ON s.ss_item_sk = i.i_item_sk "
        "JOIN date_dim d ON s.ss_sold_date_sk = d.d_date_sk WHERE d.d_moy = 2 "
        "GROUP BY i.i_category ORDER BY i.i_category"
    )
    fact = sample.fact()
    feb = pc.is_in(
        fact["ss_sold_date_sk"], sample.date_dim.filter(pc.equal(sample.date_dim["d_moy"], 2))["d_date_sk"]
    )
    joined = fact.filter(feb).join(sample.item, "ss_item_sk", "i_item_sk")
    agg = joined.group_by("i_category").aggregate([("i_category", "count")]).sort_by("i_category")
    assert rows == [list(r.values()) for r in agg.to_pylist()]


def test_hms_holds_external_parquet_tables_on_hdfs(tpcds: dict[str, Any], hms_client: Any) -> None:
    tables = sorted(hms_client.get_all_tables("tpcds"))
    assert tables == ["date_dim", "item", "store", "store_sales"]
    from hive_metastore.ttypes import GetTableRequest

    # Hive 4 answers the old get_table with "Invalid method name"; clients use get_table_req
    t = hms_client.get_table_req(GetTableRequest(dbName="tpcds", tblName="store_sales")).table
    assert t.tableType == "EXTERNAL_TABLE"
    assert t.parameters["EXTERNAL"] == "TRUE"
    assert t.sd.serdeInfo.serializationLib == sample_data.PARQUET_SERDE
    assert t.sd.location.startswith("hdfs://127.0.0.1:")
    names = hms_client.get_partition_names("tpcds", "store_sales", -1)
    assert len(names) >= 100
    p = hms_client.get_partition_by_name("tpcds", "store_sales", names[0])
    assert p.sd.location == f"{t.sd.location}/{names[0]}"


def test_the_notification_log_is_served(stack: dict[str, Any], hms_client: Any) -> None:
    """The stack turns the notification API's user check off on every version."""
    assert hms_client.get_current_notificationEventId().eventId >= 0


def test_webhdfs_client_reads_ranges(tpcds: dict[str, Any], stack: dict[str, Any]) -> None:
    fs = WebHdfs(stack["webhdfs"])
    files = fs.walk_files("/warehouse/tpcds/item")
    assert len(files) == 1
    st = fs.stat(files[0].path)
    whole = fs.read(st.path)
    assert len(whole) == st.length and whole[:4] == b"PAR1" and whole[-4:] == b"PAR1"
    assert fs.read(st.path, 10, 100) == whole[10:110]
    stream = fs.open_read(st.path, 5, 1000)  # received a small piece at a time
    pieces, buf = [], bytearray(64)
    try:
        while n := stream.readinto(memoryview(buf)):
            pieces.append(bytes(buf[:n]))
    finally:
        stream.close()
    assert b"".join(pieces) == whole[5:1005] and len(pieces) > 1
    with pytest.raises(UfsNotFound):
        fs.stat("/warehouse/tpcds/no-such-file")


def test_webhdfs_names_with_odd_characters_round_trip(stack: dict[str, Any]) -> None:
    fs = WebHdfs(stack["webhdfs"])
    path = f"/tmp/odd-{uuid.uuid4().hex[:8]}/p=a b%3A/ünï=x.bin"
    fs.write(path, b"payload")
    try:
        assert fs.read(path) == b"payload"
        assert [s.path for s in fs.walk_files(path.rsplit("/", 2)[0])] == [path]
    finally:
        fs.delete(path.rsplit("/", 2)[0], recursive=True)


def test_s3_multipart_upload_round_trips(s3_client: Any) -> None:
    bucket = f"mp-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    parts = [bytes([i]) * (5 * 1024 * 1024) for i in range(2)] + [b"tail"]
    up = s3_client.create_multipart_upload(Bucket=bucket, Key="big.bin")
    etags = []
    for n, data in enumerate(parts, start=1):
        r = s3_client.upload_part(
            Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], PartNumber=n, Body=data
        )
        etags.append({"ETag": r["ETag"], "PartNumber": n})
    s3_client.complete_multipart_upload(
        Bucket=bucket, Key="big.bin", UploadId=up["UploadId"], MultipartUpload={"Parts": etags}
    )
    body = s3_client.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert body == b"".join(parts)
    ranged = s3_client.get_object(Bucket=bucket, Key="big.bin", Range="bytes=5242878-5242881")["Body"].read()
    assert ranged == b"\x00\x00\x01\x01"


def test_s3_keeps_its_objects_on_disk_and_wants_signed_requests(
    stack: dict[str, Any], s3_client: Any
) -> None:
    """The stack's S3 is a real server: an object is a file under the stack's data/s3/, and a
    request that is not signed with the stack's keys is refused."""
    import boto3
    import botocore.exceptions
    import requests

    bucket = f"disk-{uuid.uuid4().hex[:10]}"
    s3_client.create_bucket(Bucket=bucket)
    s3_client.put_object(Bucket=bucket, Key="d=1/kept.bin", Body=b"kept on disk")
    assert (
        endpoints_path().parent / "data" / "s3" / bucket / "d=1" / "kept.bin"
    ).read_bytes() == b"kept on disk"
    assert requests.get(f"{stack['s3']}/{bucket}/d=1/kept.bin", timeout=10).status_code == 403
    stranger = boto3.client(
        "s3",
        endpoint_url=stack["s3"],
        aws_access_key_id=stack["s3_access_key"],
        aws_secret_access_key="not-the-secret",
        region_name=stack["s3_region"],
    )
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        stranger.get_object(Bucket=bucket, Key="d=1/kept.bin")


def test_trino_reads_a_table_on_s3(
    stack: dict[str, Any], s3_client: Any, hms_client: Any, trino_query: Any
) -> None:
    from hive_metastore.ttypes import Database, Table

    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    table = pa.table({"k": pa.array([1, 2, 3], pa.int64()), "v": pa.array(["a", "b", "c"])})
    s3_client.put_object(Bucket=bucket, Key="t/part-0.parquet", Body=sample_data.parquet_bytes(table))
    db = f"s3db_{uuid.uuid4().hex[:8]}"
    hms_client.create_database(Database(name=db, locationUri=f"s3a://{bucket}/"))
    schema = pa.schema([("k", pa.int64()), ("v", pa.string())])
    hms_client.create_table(
        Table(
            tableName="t",
            dbName=db,
            owner="metaproxy",
            sd=sample_data._storage(schema, f"s3a://{bucket}/t"),
            partitionKeys=[],
            parameters={"EXTERNAL": "TRUE"},
            tableType="EXTERNAL_TABLE",
        )
    )
    try:
        assert trino_query("SELECT k, v FROM t ORDER BY k", schema=db) == [[1, "a"], [2, "b"], [3, "c"]]
    finally:
        hms_client.drop_database(db, False, True)


def test_the_hms_runs_on_hives_own_schema(stack: dict[str, Any], hms_client: Any) -> None:
    """The schema Hive's scripts make, not one improvised by DataNucleus: one add_partitions of
    300 partitions is a notification-log message far over the 32,700 characters an improvised
    Derby schema holds, and it is written and read back whole."""
    from hive_metastore import ttypes as tt

    db = f"schema_{uuid.uuid4().hex[:8]}"
    base = f"{stack['hdfs']}/warehouse/{db}"
    cols = [tt.FieldSchema(name="id", type="bigint")]

    def sd(location: str) -> tt.StorageDescriptor:
        return tt.StorageDescriptor(
            cols=cols,
            location=location,
            inputFormat="org.apache.hadoop.mapred.TextInputFormat",
            outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            serdeInfo=tt.SerDeInfo(serializationLib="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"),
        )

    hms_client.create_database(tt.Database(name=db, locationUri=base))
    try:
        hms_client.create_table(
            tt.Table(
                tableName="t",
                dbName=db,
                sd=sd(f"{base}/t"),
                partitionKeys=[tt.FieldSchema(name="d", type="string")],
                parameters={"EXTERNAL": "TRUE"},
                tableType="EXTERNAL_TABLE",
            )
        )
        before = hms_client.get_current_notificationEventId().eventId
        parts = [
            tt.Partition(values=[f"{i:04d}"], dbName=db, tableName="t", sd=sd(f"{base}/t/d={i:04d}"))
            for i in range(300)
        ]
        hms_client.add_partitions(parts)
        assert len(hms_client.get_partition_names(db, "t", -1)) == 300
        events = hms_client.get_next_notification(tt.NotificationEventRequest(lastEvent=before)).events
        added = [e for e in events if e.eventType == "ADD_PARTITION" and e.tableName == "t"]
        assert len(added) == 1 and len(added[0].message) > 32_700
        assert f"{base}/t/d=0299" in added[0].message
    finally:
        hms_client.drop_database(db, False, True)

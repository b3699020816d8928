"""Trino through the proxy: the `onprem` catalog (cloud profile) sees what `direct` sees, with
rewritten locations; `passthrough` returns the same rows; writes never store a proxy location."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hive_metastore import ttypes as tt

from metaproxy.hms import connect

pytestmark = [pytest.mark.integration, pytest.mark.compat, pytest.mark.state]


@pytest.mark.secure
def test_metadata_agrees_with_direct(tpcds: Any, trino_query: Any) -> None:
    for sql in (
        "SHOW SCHEMAS",
        "SHOW TABLES",
        "DESCRIBE store_sales",
        'SELECT * FROM "store_sales$partitions" ORDER BY 1',
        "SHOW STATS FOR item",
    ):
        assert trino_query(sql, catalog="onprem") == trino_query(sql, catalog="direct"), sql
    assert len(trino_query('SELECT * FROM "store_sales$partitions"', catalog="onprem")) >= 100


@pytest.mark.secure
def test_locations_seen_through_onprem_are_rewritten(
    tpcds: Any, trino_query: Any, stack: dict[str, Any]
) -> None:
    onprem = trino_query("SHOW CREATE TABLE store_sales", catalog="onprem")[0][0]
    direct = trino_query("SHOW CREATE TABLE store_sales", catalog="direct")[0][0]
    assert "external_location = 's3://metaproxy/tpcds/store_sales'" in onprem
    assert f"external_location = '{stack['hdfs']}/warehouse/tpcds/store_sales'" in direct
    assert (
        onprem.replace("onprem.", "direct.").replace(
            "s3://metaproxy/tpcds", f"{stack['hdfs']}/warehouse/tpcds"
        )
        == direct
    )


@pytest.mark.secure
def test_passthrough_returns_the_rows_of_direct(tpcds: Any, trino_query: Any) -> None:
    sql = "SELECT ss_sold_date_sk, ss_ticket_number, ss_item_sk, ss_net_profit FROM store_sales ORDER BY 1, 2, 3, 4"
    rows = trino_query(sql, catalog="passthrough")
    assert len(rows) >= 200_000
    assert rows == trino_query(sql, catalog="direct")


def test_analyze_and_create_insert_store_no_proxy_location(
    tpcds: Any, trino_query: Any, stack: dict[str, Any], s3_client: Any
) -> None:
    # /lake is a union mount (hdfs + s3, create target s3) and lake.* is writable in the stack
    db = f"lake_{uuid.uuid4().hex[:8]}"
    bucket = "metaproxy-lake"
    if bucket not in [b["Name"] for b in s3_client.list_buckets()["Buckets"]]:
        s3_client.create_bucket(Bucket=bucket)
    with connect(stack["hms"]) as hms:
        hms.create_database(tt.Database(name=db, locationUri=f"{stack['hdfs']}/warehouse/lake/{db}"))
    try:
        # the database location is served as the create target's (S3), so Trino writes there
        trino_query(
            f"CREATE TABLE {db}.t AS SELECT * FROM passthrough.tpcds.store WHERE s_store_sk <= 5",
            catalog="onprem",
        )
        trino_query(
            f"INSERT INTO {db}.t SELECT * FROM passthrough.tpcds.store WHERE s_store_sk > 5", catalog="onprem"
        )
        trino_query(f"ANALYZE {db}.t", catalog="onprem")
        assert trino_query(f"SELECT count(*) FROM {db}.t", catalog="onprem") == [[12]]
        with connect(stack["hms"]) as hms:
            t = hms.get_table_req(tt.GetTableRequest(dbName=db, tblName="t")).table
            stored = repr(t) + repr(hms.get_database(db))
        assert t.sd.location == f"s3://{bucket}/lake/{db}/t"
        assert "s3://metaproxy/" not in stored
    finally:
        with connect(stack["hms"]) as hms:
            hms.drop_database(db, True, True)


def test_writes_are_refused_outside_writable_databases(tpcds: Any, trino_query: Any) -> None:
    import trino

    with pytest.raises(trino.exceptions.TrinoQueryError, match="not writable through the proxy"):
        trino_query("COMMENT ON TABLE store IS 'changed through the proxy'", catalog="onprem")
    assert "changed through the proxy" not in trino_query("SHOW CREATE TABLE store", catalog="direct")[0][0]

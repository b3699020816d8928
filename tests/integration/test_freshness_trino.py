"""Fresh data through the whole path: an engine writes on-prem (Trino's ``direct`` catalog,
straight to the HMS and HDFS), and Trino's ``onprem`` catalog — through the stack's proxy and
cache gateway, whose listings are otherwise kept for ``stale_after = 10m`` — reads the new rows
once the metastore's notification log has reported the change, never the old ones later."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.integration

#: the notification log's interval (1 s in the stack), a poll of the gateway's follower, margin
BOUND_S = 10.0


@pytest.fixture
def table(tpcds: Any, trino_query: Callable[..., Any]) -> Iterator[str]:
    name = f"fresh_{uuid.uuid4().hex[:8]}"
    trino_query(f"CREATE TABLE {name} (id bigint, d varchar) WITH (partitioned_by = ARRAY['d'])")
    yield name
    trino_query(f"DROP TABLE IF EXISTS {name}")


def seen(trino_query: Callable[..., Any], sql: str, what: str) -> None:
    """``sql`` through metaproxy gives ``direct``'s answer within the bound."""
    want = trino_query(sql)
    deadline = time.monotonic() + BOUND_S
    while (got := trino_query(sql, catalog="onprem")) != want:
        assert time.monotonic() < deadline, (
            f"{what}: {got} through metaproxy, {want} on-prem, after {BOUND_S}s"
        )
        time.sleep(0.2)


def test_writes_on_prem_are_read_through_metaproxy(
    stack: dict[str, Any], trino_query: Callable[..., Any], table: str
) -> None:
    sql = f"SELECT d, count(*), sum(id) FROM {table} GROUP BY d ORDER BY d"
    trino_query(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'a'), (3, 'b')")
    seen(trino_query, sql, "the first rows")
    assert trino_query(sql, catalog="onprem") == [["a", 2, 3], ["b", 1, 3]]
    # more files in a partition the gateway has listed
    trino_query(f"INSERT INTO {table} VALUES (10, 'a')")
    seen(trino_query, sql, "rows added to a listed partition")
    # a new partition
    trino_query(f"INSERT INTO {table} VALUES (100, 'c')")
    seen(trino_query, sql, "a new partition")
    # a partition overwritten: its old files are gone
    overwrite(stack, f"INSERT INTO {table} VALUES (7, 'a')")
    seen(trino_query, sql, "an overwritten partition")
    # a partition dropped
    trino_query(f"DELETE FROM {table} WHERE d = 'b'")
    seen(trino_query, sql, "a dropped partition")
    assert trino_query(sql, catalog="onprem") == [["a", 1, 7], ["c", 1, 100]]


def overwrite(stack: dict[str, Any], sql: str) -> None:
    """``sql`` in the ``direct`` catalog, an INSERT replacing the partitions it writes."""
    import trino

    host, port = stack["trino"].split("//", 1)[1].split(":")
    conn = trino.dbapi.connect(
        host=host,
        port=int(port),
        user="metaproxy",
        catalog="direct",
        schema="tpcds",
        session_properties={"direct.insert_existing_partitions_behavior": "OVERWRITE"},
    )
    try:
        conn.cursor().execute(sql).fetchall()
    finally:
        conn.close()

"""Local and fresh: the proxy keeps answers, and every change made on-prem — straight to the HMS,
or by an engine reading it directly — is seen through the proxy once the notification log has
reported it (``events_interval`` plus a margin), never later; lost events flush; one listener's
answers are never another's."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hive_metastore import ttypes as tt
from prometheus_client import REGISTRY
from proxying import uri

from metaproxy.hms import connect
from metaproxy.thrift_server import MetastoreProxy

pytestmark = [pytest.mark.integration, pytest.mark.compat]

FAST = {"proxy": {"events_interval": "200ms"}}
#: the bound a change must be seen within: the log's interval, a poll, the HMS's own commit
BOUND_S = 5.0


def lookups(outcome: str) -> float:
    return REGISTRY.get_sample_value("metaproxy_proxy_cache_lookups_total", {"outcome": outcome}) or 0.0


def seen_within(check: Callable[[], bool], what: str) -> None:
    """``check`` holds within the freshness bound (it is polled; any wait up to the bound is fine)."""
    deadline = time.monotonic() + BOUND_S
    while not check():
        assert time.monotonic() < deadline, f"{what} was not seen through the proxy within {BOUND_S}s"
        time.sleep(0.05)


def caught_up(proxy: MetastoreProxy, hms: Any) -> None:
    """The proxy has read the log up to now (the lake's own events among them: an answer asked
    while an event drops it is not kept, so a test counting hits starts after them)."""
    current = hms.get_current_notificationEventId().eventId
    seen_within(lambda: (proxy.watch.events.state.last_id or 0) >= current, "the log up to now")


def columns() -> list[tt.FieldSchema]:
    return [tt.FieldSchema(name="id", type="bigint"), tt.FieldSchema(name="v", type="string")]


def table(db: str, name: str, location: str) -> tt.Table:
    sd = tt.StorageDescriptor(
        cols=columns(),
        location=location,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(
            serializationLib="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe", parameters={}
        ),
        parameters={},
    )
    return tt.Table(
        tableName=name,
        dbName=db,
        owner="t",
        sd=sd,
        partitionKeys=[tt.FieldSchema(name="d", type="string")],
        parameters={"EXTERNAL": "TRUE"},
        tableType="EXTERNAL_TABLE",
    )


@pytest.fixture
def lake(stack: dict[str, Any]) -> Iterator[dict[str, str]]:
    db = f"fresh_{uuid.uuid4().hex[:8]}"
    base = f"{stack['hdfs']}/warehouse/tpcds/{db}"
    with connect(stack["hms"]) as c:
        c.create_database(tt.Database(name=db, locationUri=base))
        c.create_table(table(db, "t", f"{base}/t"))
        c.add_partitions([partition(db, "t", f"{base}/t", "1")])
    yield {"db": db, "base": base}
    with connect(stack["hms"]) as c:
        c.drop_database(db, False, True)


def partition(db: str, name: str, location: str, d: str) -> tt.Partition:
    t = table(db, name, location)
    sd = t.sd
    sd.location = f"{location}/d={d}"
    return tt.Partition(values=[d], dbName=db, tableName=name, sd=sd, parameters={})


@pytest.mark.parametrize("proxy", [FAST], indirect=True)
def test_on_prem_changes_are_seen_within_the_bound(
    stack: dict[str, Any], proxy: MetastoreProxy, lake: dict[str, str]
) -> None:
    db, base = lake["db"], lake["base"]
    req = tt.GetTableRequest(dbName=db, tblName="t")
    seen_within(lambda: proxy.health()["notification_log"]["up"], "the notification log")
    with connect(uri(proxy, "cloud")) as c, connect(stack["hms"]) as hms:
        caught_up(proxy, hms)
        assert c.get_partition_names(db, "t", -1) == ["d=1"]
        hits = lookups("hit")
        assert c.get_partition_names(db, "t", -1) == ["d=1"]
        assert lookups("hit") > hits  # answered from the cache, not across the link
        # a partition added on-prem
        hms.add_partitions([partition(db, "t", f"{base}/t", "2")])
        seen_within(lambda: c.get_partition_names(db, "t", -1) == ["d=1", "d=2"], "an added partition")
        # dropped
        hms.drop_partition_by_name(db, "t", "d=1", False)
        seen_within(lambda: c.get_partition_names(db, "t", -1) == ["d=2"], "a dropped partition")
        # a new location for the table (moved, as a migration's write-back does)
        assert c.get_table_req(req).table.sd.location == f"s3://metaproxy/tpcds/{db}/t"
        t = hms.get_table_req(req).table
        t.sd.location = f"{base}/t_moved"
        hms.alter_table(db, "t", t)
        seen_within(
            lambda: c.get_table_req(req).table.sd.location == f"s3://metaproxy/tpcds/{db}/t_moved",
            "a moved table",
        )
        # statistics
        t = hms.get_table_req(req).table
        t.parameters = {**t.parameters, "numRows": "42"}
        hms.alter_table(db, "t", t)
        seen_within(lambda: c.get_table_req(req).table.parameters.get("numRows") == "42", "new statistics")
        # dropped and created again, with other columns
        hms.drop_table(db, "t", False)
        seen_within(lambda: _missing(c, req), "a dropped table")
        again = table(db, "t", f"{base}/t2")
        again.sd.cols = [*columns(), tt.FieldSchema(name="extra", type="int")]
        hms.create_table(again)
        seen_within(
            lambda: not _missing(c, req) and len(c.get_table_req(req).table.sd.cols) == 3, "a recreated table"
        )


def warmed() -> float:
    return REGISTRY.get_sample_value("metaproxy_proxy_warmup_calls_total", {"outcome": "answered"}) or 0.0


@pytest.mark.parametrize("proxy", [FAST], indirect=True)
def test_a_new_partition_is_answered_locally_the_first_time_it_is_asked(
    stack: dict[str, Any], proxy: MetastoreProxy, lake: dict[str, str]
) -> None:
    """After an ``ADD_PARTITION``, the proxy asks itself the calls an engine made for the last
    partition it read, for the new one: the engine's first calls on it are answered from the
    cache, and what they answer is what the HMS says (location rewritten)."""
    db, base = lake["db"], lake["base"]
    seen_within(lambda: proxy.health()["notification_log"]["up"], "the notification log")
    with connect(uri(proxy, "cloud")) as c, connect(stack["hms"]) as hms:
        caught_up(proxy, hms)
        assert c.get_partition_names_ps(db, "t", ["1"], -1) == ["d=1"]
        assert len(c.get_partitions_by_names(db, "t", ["d=1"])) == 1
        before = warmed()
        hms.add_partitions([partition(db, "t", f"{base}/t", "2")])
        # both calls asked again for d=1 (their answers were dropped), and made for d=2
        seen_within(lambda: warmed() >= before + 4, "the warm-up after the new partition")
        hits = lookups("hit")
        assert c.get_partition_names_ps(db, "t", ["2"], -1) == ["d=2"]
        [mine] = c.get_partitions_by_names(db, "t", ["d=2"])
        assert lookups("hit") == hits + 2
        [theirs] = hms.get_partitions_by_names(db, "t", ["d=2"])
        assert mine.sd.location == f"s3://metaproxy/tpcds/{db}/t/d=2"
        mine.sd.location = theirs.sd.location
        assert mine == theirs


def _missing(c: Any, req: tt.GetTableRequest) -> bool:
    try:
        c.get_table_req(req)
    except tt.NoSuchObjectException:
        return True
    return False


@pytest.mark.parametrize("proxy", [FAST], indirect=True)
def test_lost_events_flush_and_listeners_keep_their_own(
    stack: dict[str, Any], proxy: MetastoreProxy, lake: dict[str, str]
) -> None:
    db = lake["db"]
    req = tt.GetTableRequest(dbName=db, tblName="t")
    seen_within(lambda: proxy.health()["notification_log"]["up"], "the notification log")
    with connect(stack["hms"]) as hms:
        caught_up(proxy, hms)
    with connect(uri(proxy, "cloud")) as cloud, connect(uri(proxy, "onprem")) as onprem:
        # the same call, two listeners: two answers, each rewritten its own way, each kept
        assert cloud.get_table_req(req).table.sd.location == f"s3://metaproxy/tpcds/{db}/t"
        assert onprem.get_table_req(req).table.sd.location == f"{lake['base']}/t"
        assert cloud.get_table_req(req).table.sd.location == f"s3://metaproxy/tpcds/{db}/t"
        assert onprem.get_table_req(req).table.sd.location == f"{lake['base']}/t"
        assert proxy.health()["metadata_cache"]["entries"] >= 2
        # the log as if its last events had been cleaned away: nothing kept can be trusted
        log = proxy.watch.events
        with log.polling:  # not while a poll runs: it would set its own position after
            log.state.last_id = (log.state.last_id or 0) + 10_000
        seen_within(lambda: proxy.health()["metadata_cache"]["entries"] == 0, "the flush")
        assert proxy.health()["notification_log"]["lost"] >= 1
        assert cloud.get_table_req(req).table.tableName == "t"  # and the proxy goes on

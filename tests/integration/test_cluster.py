"""A gateway cluster on the real stack: three gateway nodes behind a real HAProxy (consistent
hashing of each object's path), with Trino's ``onprem`` catalog reading through the balancer.

The module resizes the session's stack to three nodes (the rest of the stack keeps running)
and back to its own count at the end. What it shows: each object has one owner (a load through
the cluster warms the owner, warm reads hit only owners, each block is cached once in the
cluster); rules reach every node; the report and the metrics name each node; a node killed
during a query suite fails no query; a restarted node comes back with its disk tier warm; a
frozen node is taken out by the health check and reported.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from metaproxy.cli import cli

pytestmark = [pytest.mark.integration]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NODES = 3

QUERIES = [
    "SELECT ss_store_sk, count(*), sum(ss_quantity), sum(ss_net_profit) FROM store_sales GROUP BY 1 ORDER BY 1",
    "SELECT i.i_category, count(*), sum(s.ss_ext_sales_price) FROM store_sales s "
    "JOIN item i ON s.ss_item_sk = i.i_item_sk GROUP BY 1 ORDER BY 1",
    "SELECT d.d_moy, s.s_state, sum(ss.ss_net_profit) FROM store_sales ss "
    "JOIN date_dim d ON ss.ss_sold_date_sk = d.d_date_sk JOIN store s ON ss.ss_store_sk = s.s_store_sk "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT ss_ticket_number, ss_item_sk, ss_net_profit FROM store_sales "
    "WHERE ss_sold_date_sk = 2460320 AND ss_quantity > 90 ORDER BY 1, 2, 3",
]


@pytest.fixture(scope="module")
def cluster(stack: dict[str, Any], tpcds: Any) -> Iterator[dict[str, Any]]:
    """The stack with three gateway nodes behind HAProxy; its endpoints."""
    from metaproxy_devstack.launcher import Stack, StackError, load_endpoints

    before = int((load_endpoints() or {}).get("gateways", 1))
    try:
        ep = Stack(hms_version=stack["hms_version"], gateways=NODES).up()
    except StackError as e:
        if IN_CI:
            pytest.fail(f"the gateway cluster did not start: {e}", pytrace=False)
        pytest.skip(f"the gateway cluster did not start: {e}")
    yield ep
    Stack(hms_version=stack["hms_version"], gateways=before).up()


def run_cli(ep: dict[str, Any], *args: str) -> str:
    r = CliRunner().invoke(cli, ["--config", ep["config"], *args], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


def reports(ep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: requests.get(f"{n['admin']}/report", timeout=10).json() for n in ep["gateway_nodes"]}


def balancer(ep: dict[str, Any]) -> dict[str, str]:
    from metaproxy.cache.cluster import balancer_view

    return {name: v.get("status", "") for name, v in balancer_view(ep["balancer_stats"]).items()}


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.25)


def stack_of(ep: dict[str, Any]) -> Any:
    from metaproxy_devstack.launcher import Stack, load_endpoints

    st = Stack(hms_version=ep["hms_version"], gateways=NODES)
    st._adopt(load_endpoints() or {})
    return st


def node(ep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in ep["gateway_nodes"] if n["name"] == name)


def test_load_warms_each_file_on_its_owner_only(cluster: dict[str, Any], trino_query: Any) -> None:
    ep = cluster
    expected = [trino_query(q, catalog="direct") for q in QUERIES]
    run_cli(ep, "cache", "free", "/tpcds")
    out = run_cli(ep, "cache", "load", "/tpcds")
    assert "loaded 123 files" in out, out
    loaded = reports(ep)
    # each block once in the cluster: the memory tiers together hold the data set once
    distinct = sum(int(f["length"]) for f in _plan(ep, "/tpcds"))
    cached = sum(r["tiers"]["memory_used"] for r in loaded.values())
    assert distinct > 0
    assert cached / distinct <= 1.05, (cached, distinct)
    assert sum(1 for r in loaded.values() if r["tiers"]["memory_used"] > 0) == NODES  # spread
    # a second load finds everything on the owners
    again = run_cli(ep, "cache", "load", "/tpcds")
    assert "0 B fetched" in again or "already cached" in again
    # Trino through the balancer reads every block from its owner's cache: no UFS reads anywhere
    assert [trino_query(q, catalog="onprem") for q in QUERIES] == expected
    warm = reports(ep)
    for name, r in warm.items():
        assert r["bytes_from_ufs"] == loaded[name]["bytes_from_ufs"], name
    served = {n: warm[n]["bytes_from_memory"] - loaded[n]["bytes_from_memory"] for n in warm}
    assert sum(1 for v in served.values() if v > 0) >= 2, served


def _plan(ep: dict[str, Any], path: str) -> list[dict[str, Any]]:
    r = requests.post(f"{ep['gateway_nodes'][0]['admin']}/cache/plan", json={"path": path}, timeout=60)
    r.raise_for_status()
    return list(r.json()["files"])


def _s3(ep: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=ep["gateway"],
        aws_access_key_id=ep["gateway_access_key"],
        aws_secret_access_key=ep["gateway_secret_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _owners(s3: Any, keys: list[str], reads: int = 1) -> dict[str, set[str]]:
    """The nodes that answered GETs of each key (through the balancer)."""
    owners: dict[str, set[str]] = {}
    for key in keys:
        for _ in range(reads):
            r = s3.get_object(Bucket="metaproxy", Key=key, Range="bytes=0-15")
            owners.setdefault(key, set()).add(r["ResponseMetadata"]["HTTPHeaders"]["x-metaproxy-node"])
    return owners


def test_one_object_one_node_and_listings_spread(cluster: dict[str, Any]) -> None:
    s3 = _s3(cluster)
    files = [f["key"] for f in _plan(cluster, "/tpcds/store_sales")][:30]
    owners = _owners(s3, files, reads=3)
    assert all(len(v) == 1 for v in owners.values()), owners
    assert len(set().union(*owners.values())) == NODES
    listed = set()
    for key in files:
        prefix = key.rsplit("/", 1)[0] + "/"
        r = s3.list_objects_v2(Bucket="metaproxy", Prefix=prefix)
        assert r["KeyCount"] >= 1
        listed.add(r["ResponseMetadata"]["HTTPHeaders"]["x-metaproxy-node"])
    assert len(listed) >= 2, listed


def test_rules_reach_every_node(cluster: dict[str, Any]) -> None:
    run_cli(cluster, "cache", "pin", "/tpcds/item", "--no-load")
    run_cli(cluster, "cache", "ttl", "/tpcds/store", "10m")
    try:
        for n in cluster["gateway_nodes"]:
            rules = requests.get(f"{n['admin']}/cache/rules", timeout=10).json()
            assert "tpcds/item" in rules["pins"], (n["name"], rules)
            assert rules["ttls"].get("tpcds/store") == 600, (n["name"], rules)
    finally:
        out = run_cli(cluster, "cache", "unpin", "/tpcds/item")
        assert all(f"[{n['name']}]" in out for n in cluster["gateway_nodes"]), out
        run_cli(cluster, "cache", "ttl", "/tpcds/store", "--clear")
    for n in cluster["gateway_nodes"]:
        rules = requests.get(f"{n['admin']}/cache/rules", timeout=10).json()
        assert "tpcds/item" not in rules["pins"] and "tpcds/store" not in rules["ttls"]


def test_report_and_metrics_name_each_node(cluster: dict[str, Any]) -> None:
    import json

    doc = json.loads(run_cli(cluster, "report", "--json"))
    nodes = doc["cluster"]["nodes"]
    assert sorted(nodes) == [f"g{i}" for i in range(1, NODES + 1)]
    assert doc["tiers"]["memory_capacity"] == sum(r["tiers"]["memory_capacity"] for r in nodes.values())
    assert doc["bytes_from_memory"] == sum(r["bytes_from_memory"] for r in nodes.values())
    assert {v["status"] for v in doc["cluster"]["balancer"].values()} == {"UP"}
    text = run_cli(cluster, "report")
    assert all(f"node g{i}" in text for i in range(1, NODES + 1)), text
    for n in cluster["gateway_nodes"]:
        metrics = requests.get(f"{n['admin']}/metrics", timeout=10).text
        assert f'metaproxy_cache_hit_ratio{{node="{n["name"]}"}}' in metrics


def _suite_in_background(trino_query: Any, rounds: int) -> tuple[threading.Thread, list[Any], list[str]]:
    results: list[Any] = []
    errors: list[str] = []

    def run() -> None:
        for _ in range(rounds):
            for q in QUERIES:
                try:
                    results.append((q, trino_query(q, catalog="onprem")))
                except Exception as e:
                    errors.append(f"{q[:60]}: {e}")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, results, errors


def test_node_killed_mid_suite_fails_no_query_and_rejoins_warm(
    cluster: dict[str, Any], trino_query: Any
) -> None:
    ep = cluster
    expected = {q: trino_query(q, catalog="direct") for q in QUERIES}
    run_cli(ep, "cache", "load", "/tpcds")  # every node holds its share, on disk too
    time.sleep(1.5)  # the disk tier writes behind
    victim = node(ep, "g2")
    on_disk = requests.get(f"{victim['admin']}/report", timeout=10).json()["tiers"]["disk_used"]
    assert on_disk > 0
    st = stack_of(ep)
    pid = st.pids[victim["component"]]
    t, results, errors = _suite_in_background(trino_query, rounds=2)
    wait_for(lambda: len(results) >= 2, 120, "the suite under way")
    assert t.is_alive(), "the suite runs when the node dies"
    os.killpg(pid, signal.SIGKILL)  # no goodbye: the process is gone mid-suite
    t.join(600)
    assert not errors, errors
    assert len(results) == 2 * len(QUERIES)
    assert all(rows == expected[q] for q, rows in results)
    wait_for(lambda: balancer(ep).get("g2") == "DOWN", 10, "the balancer takes g2 out")
    doc = _report_json(ep)
    assert "error" in doc["cluster"]["nodes"]["g2"]
    # back: its disk tier is indexed again, and its share is served from it, not from HDFS
    st.stop_component(victim["component"])
    st.start_component(victim["component"])
    wait_for(lambda: balancer(ep).get("g2") == "UP", 15, "g2 back in the balancer")
    back = requests.get(f"{victim['admin']}/report", timeout=10).json()
    assert back["tiers"]["disk_used"] >= on_disk * 0.95, (back["tiers"], on_disk)
    assert [trino_query(q, catalog="onprem") for q in QUERIES] == list(expected.values())
    after = requests.get(f"{victim['admin']}/report", timeout=10).json()
    assert after["bytes_from_disk"] > 0
    assert after["bytes_from_ufs"] == 0, after


def _report_json(ep: dict[str, Any]) -> dict[str, Any]:
    import json

    return dict(json.loads(run_cli(ep, "report", "--json")))


def test_frozen_node_is_taken_out_and_reported(cluster: dict[str, Any], trino_query: Any) -> None:
    ep = cluster
    victim = node(ep, "g3")
    pid = stack_of(ep).pids[victim["component"]]
    expected = trino_query(QUERIES[1], catalog="direct")
    s3 = _s3(ep)
    keys = [f["key"] for f in _plan(ep, "/tpcds/store_sales")][:40]
    before = {k: v.pop() for k, v in _owners(s3, keys).items()}
    os.killpg(pid, signal.SIGSTOP)  # alive, port open, answers nothing: a node too slow to use
    try:
        t0 = time.monotonic()
        wait_for(lambda: balancer(ep).get("g3") == "DOWN", 15, "the health check takes g3 out")
        taken_out_s = time.monotonic() - t0
        # only g3's objects moved; every other object stayed on its node
        during = {k: v.pop() for k, v in _owners(s3, keys).items()}
        assert "g3" in before.values() and "g3" not in during.values()
        assert all(during[k] == n for k, n in before.items() if n != "g3"), (before, during)
        doc = _report_json(ep)
        assert "error" in doc["cluster"]["nodes"]["g3"]
        assert doc["cluster"]["balancer"]["g3"]["status"] == "DOWN"
        assert (
            "L7TOUT" in doc["cluster"]["balancer"]["g3"]["check"] or doc["cluster"]["balancer"]["g3"]["check"]
        )
        assert trino_query(QUERIES[1], catalog="onprem") == expected
        assert taken_out_s < 15
    finally:
        os.killpg(pid, signal.SIGCONT)
    wait_for(lambda: balancer(ep).get("g3") == "UP", 15, "g3 back in the balancer")


def test_node_whose_health_fails_is_taken_out_and_reported(cluster: dict[str, Any], trino_query: Any) -> None:
    """A node answering /health with 503 (here: drained on purpose) leaves the balancer; the
    other nodes serve its objects; the report says so; it comes back when healthy."""
    ep = cluster
    expected = trino_query(QUERIES[0], catalog="direct")
    out = run_cli(ep, "cache", "drain", "g1")
    assert "draining" in out
    try:
        assert requests.get(f"{node(ep, 'g1')['admin']}/health", timeout=5).status_code == 503
        wait_for(lambda: balancer(ep).get("g1") == "DOWN", 15, "the health check takes g1 out")
        doc = _report_json(ep)
        assert doc["cluster"]["balancer"]["g1"]["check"].startswith("L7STS")  # a 503, not a timeout
        assert "NOT ANSWERING" not in run_cli(ep, "report").split("node g1", 1)[1].split("\n", 1)[0]
        assert "DOWN" in run_cli(ep, "report").split("node g1", 1)[1].split("\n", 1)[0]
        assert trino_query(QUERIES[0], catalog="onprem") == expected
    finally:
        run_cli(ep, "cache", "drain", "g1", "--undo")
    wait_for(lambda: balancer(ep).get("g1") == "UP", 15, "g1 back in the balancer")

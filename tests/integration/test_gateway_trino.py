"""Trino through the proxy and the gateway: the query suite returns the rows of `direct`, cold
and warm, and the warm run is served from the cache."""

from __future__ import annotations

from typing import Any

import pytest
import requests

pytestmark = [pytest.mark.integration, pytest.mark.compat]

QUERIES = [
    "SELECT ss_store_sk, count(*), sum(ss_quantity), sum(ss_net_profit) FROM store_sales GROUP BY 1 ORDER BY 1",
    "SELECT i.i_category, count(*), sum(s.ss_ext_sales_price) FROM store_sales s "
    "JOIN item i ON s.ss_item_sk = i.i_item_sk GROUP BY 1 ORDER BY 1",
    "SELECT d.d_moy, s.s_state, sum(ss.ss_net_profit) FROM store_sales ss "
    "JOIN date_dim d ON ss.ss_sold_date_sk = d.d_date_sk JOIN store s ON ss.ss_store_sk = s.s_store_sk "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT ss_ticket_number, ss_item_sk, ss_net_profit FROM store_sales "
    "WHERE ss_sold_date_sk = 2460320 AND ss_quantity > 90 ORDER BY 1, 2, 3",
    "SELECT i_item_id, i_current_price FROM item ORDER BY i_current_price DESC, i_item_id LIMIT 10",
]


def report(stack: dict[str, Any]) -> dict[str, Any]:
    r = requests.get(f"{stack['gateway_admin']}/report", timeout=10)
    r.raise_for_status()
    return dict(r.json())


@pytest.mark.secure
def test_query_suite_through_the_gateway_equals_direct(
    stack: dict[str, Any], tpcds: Any, trino_query: Any
) -> None:
    expected = [trino_query(q, catalog="direct") for q in QUERIES]
    before = report(stack)
    cold = [trino_query(q, catalog="onprem") for q in QUERIES]
    after_cold = report(stack)
    warm = [trino_query(q, catalog="onprem") for q in QUERIES]
    after_warm = report(stack)
    assert cold == expected
    assert warm == expected
    # the warm run read nothing new from HDFS and was served from the cache
    assert after_warm["bytes_from_ufs"] == after_cold["bytes_from_ufs"]
    served_warm = (after_warm["bytes_from_memory"] + after_warm["bytes_from_disk"]) - (
        after_cold["bytes_from_memory"] + after_cold["bytes_from_disk"]
    )
    assert served_warm > 0
    assert after_cold["bytes_read_per_ufs"].get("hdfs", 0) >= before["bytes_read_per_ufs"].get("hdfs", 0)
    assert after_warm["bytes_served_per_mount"]["/tpcds"] > 0


def test_paths_seen_through_onprem_are_gateway_locations(tpcds: Any, trino_query: Any) -> None:
    paths = trino_query('SELECT DISTINCT "$path" FROM store_sales', catalog="onprem")
    assert len(paths) >= 100
    assert all(p[0].startswith("s3://metaproxy/tpcds/store_sales/ss_sold_date_sk=") for p in paths)

"""Pooled upstream connections: a client's new connection costs no new upstream connection,
connection state (set_ugi) is never handed to another client, and a pooled connection the HMS
dropped costs a read nothing."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from hive_metastore import ttypes as tt
from prometheus_client import REGISTRY
from proxying import uri

from metaproxy.hms import connect
from metaproxy.thrift_server import MetastoreProxy

pytestmark = pytest.mark.integration

#: the proxy without its metadata cache: every call goes upstream, so what these tests count is
#: the pool's work (with the stack's HMS writing its notification log, the cache would answer
#: the repeated reads itself)
NO_CACHE = {"proxy": {"metadata_cache_size": 0}}


def wait_idle(proxy: MetastoreProxy, n: int) -> None:
    """Until ``n`` connections wait in the pool (a session gives its own back as it ends)."""
    deadline = time.monotonic() + 5
    while proxy.state.pool.idle < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxy.state.pool.idle >= n


def pool_events(event: str) -> float:
    return REGISTRY.get_sample_value("metaproxy_proxy_upstream_pool_total", {"event": event}) or 0.0


@pytest.mark.parametrize("proxy", [NO_CACHE], indirect=True)
def test_clients_that_connect_per_call_share_upstream_connections(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy
) -> None:
    opened, reused = pool_events("opened"), pool_events("reused")
    for _ in range(20):  # as Trino does: a new metastore connection for every call
        with connect(uri(proxy, "cloud")) as c:
            assert (
                c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="item")).table.tableName == "item"
            )
    assert pool_events("opened") - opened <= 2  # a session may end just after the next began
    assert pool_events("reused") - reused >= 18
    wait_idle(proxy, 1)


def test_connection_state_stays_with_the_client_that_set_it(
    stack: dict[str, Any], proxy: MetastoreProxy
) -> None:
    """setMetaConf changes the metastore's configuration for its connection only: a client that
    set nothing must never be served on a connection that carries another client's change, and
    a client that made the same change gets such a connection back."""
    key = "metastore.partition.name.whitelist.pattern"
    with connect(uri(proxy, "cloud")) as a:
        a.setMetaConf(key, "[a-z]*")
        assert a.getMetaConf(key) == "[a-z]*"
    wait_idle(proxy, 1)  # the pool holds that connection now
    for _ in range(3):
        with connect(uri(proxy, "cloud")) as b:
            assert b.getMetaConf(key) == ""
    reused = pool_events("reused")
    with connect(uri(proxy, "cloud")) as c:
        c.setMetaConf(key, "[a-z]*")  # the same state: the pooled connection serves it
        assert c.getMetaConf(key) == "[a-z]*"
    assert pool_events("reused") > reused


@pytest.mark.parametrize("proxy", [NO_CACHE], indirect=True)
def test_a_dropped_pooled_connection_costs_a_read_nothing(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy
) -> None:
    with connect(uri(proxy, "cloud")) as c:
        c.get_all_databases()
    wait_idle(proxy, 1)
    pooled = [up for q in proxy.state.pool._idle.values() for up in q]
    assert pooled, "a connection was pooled"
    for up in pooled:  # as when the HMS restarts or a firewall drops idle connections
        assert up.sock is not None
        up.sock.shutdown(socket.SHUT_RDWR)
    retried = pool_events("retried")
    with connect(uri(proxy, "cloud")) as c:
        assert "tpcds" in c.get_all_databases()
    assert pool_events("retried") == retried + 1


@pytest.mark.parametrize(
    "proxy", [{"pool_idle_timeout": "300ms", "pool_check_after": "100ms", **NO_CACHE}], indirect=True
)
def test_idle_connections_are_checked_and_closed(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy
) -> None:
    with connect(uri(proxy, "cloud")) as c:
        c.get_all_databases()
    time.sleep(0.15)  # past pool_check_after: checked with a cheap call, then reused
    reused = pool_events("reused")
    with connect(uri(proxy, "cloud")) as c:
        c.get_all_databases()
    assert pool_events("reused") == reused + 1
    deadline = time.monotonic() + 5  # past pool_idle_timeout, the refresh loop closes it
    while proxy.health()["upstream_pool_idle"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy.health()["upstream_pool_idle"] == 0

"""Dialect bridging on the stack's Hive 4 metastore: a Hive 2 IDL client (hmsclient) calls what
Hive 4 no longer serves, through the proxy, and gets what its own IDL expects."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hive_metastore import ttypes as tt
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as Hive2
from hmsclient.genthrift.hive_metastore import ttypes as t2
from proxying import uri
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport

from metaproxy.hms import connect, parse_thrift_uri
from metaproxy.thrift_server import MetastoreProxy

pytestmark = pytest.mark.integration


def hive2_client(thrift_uri: str) -> Iterator[Hive2.Client]:
    host, port = parse_thrift_uri(thrift_uri)
    transport = TTransport.TBufferedTransport(TSocket.TSocket(host, port))
    transport.open()
    try:
        yield Hive2.Client(TBinaryProtocol.TBinaryProtocol(transport))
    finally:
        transport.close()


@pytest.fixture
def old_client(proxy: MetastoreProxy) -> Iterator[Hive2.Client]:
    yield from hive2_client(uri(proxy, "cloud"))


def fields_but_location(t: Any) -> dict[str, Any]:
    """Every field of a Hive 2 ``Table`` but its storage location."""
    d = {k: v for k, v in vars(t).items() if k != "sd"}
    d["sd"] = {k: v for k, v in vars(t.sd).items() if k != "location"}
    return d


def test_hive4_refuses_what_old_clients_call(stack: dict[str, Any], tpcds: Any) -> None:
    """The reason for the translations: straight to Hive 4, get_table is unknown."""
    for client in hive2_client(stack["hms"]):
        with pytest.raises(TApplicationException, match="get_table") as e:
            client.get_table("tpcds", "item")
        assert e.value.type == TApplicationException.UNKNOWN_METHOD


def test_get_table_through_the_proxy(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy, old_client: Hive2.Client
) -> None:
    table = old_client.get_table("tpcds", "item")
    assert table.sd.location == "s3://metaproxy/tpcds/item"  # rewritten like any answer
    with connect(stack["hms"]) as c:  # the same table, straight from the HMS in its own dialect
        direct = c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="item")).table
    for client in hive2_client(uri(proxy, "passthrough")):
        plain = client.get_table("tpcds", "item")
    assert plain.sd.location == direct.sd.location == f"{stack['hdfs']}/warehouse/tpcds/item"
    assert fields_but_location(table) == fields_but_location(plain)
    assert [c.name for c in table.sd.cols] == [c.name for c in direct.sd.cols]
    health = proxy.health()  # the upstream's version was asked once, and what it lacks follows
    assert health["upstream_versions"] == {stack["hms"]: "4.0.1"}
    assert health["not_served_by_upstream"] == {stack["hms"]: ["get_table", "get_table_objects_by_name"]}


def test_missing_tables_stay_no_such_object(
    tpcds: Any, proxy: MetastoreProxy, old_client: Hive2.Client
) -> None:
    with pytest.raises(t2.NoSuchObjectException):
        old_client.get_table("tpcds", "no_such_table")
    with pytest.raises(t2.NoSuchObjectException):
        old_client.get_table("no_such_database", "item")
    assert old_client.get_table("tpcds", "store").tableName == "store"  # the connection goes on


def test_get_table_objects_by_name_through_the_proxy(
    tpcds: Any, proxy: MetastoreProxy, old_client: Hive2.Client
) -> None:
    tables = old_client.get_table_objects_by_name("tpcds", ["item", "store", "no_such_table"])
    assert sorted(t.tableName for t in tables) == ["item", "store"]
    assert {t.sd.location for t in tables} == {"s3://metaproxy/tpcds/item", "s3://metaproxy/tpcds/store"}
    # other calls of the same client are not touched
    assert "tpcds" in old_client.get_all_databases()
    parts = old_client.get_partition_names("tpcds", "store_sales", 3)
    assert len(parts) == 3 and all(p.startswith("ss_sold_date_sk=") for p in parts)


def test_an_exception_the_old_idl_does_not_declare_comes_as_an_application_error(
    proxy: MetastoreProxy, old_client: Hive2.Client
) -> None:
    """The Hive 2 IDL declares no exception for get_table_objects_by_name; an old server sent an
    undeclared one as a TApplicationException, and so does the translation, with its message."""
    with pytest.raises(TApplicationException, match="UnknownDBException: .*no_such_database") as e:
        old_client.get_table_objects_by_name("no_such_database", ["t"])
    assert e.value.type == TApplicationException.INTERNAL_ERROR
    assert "tpcds" in old_client.get_all_databases()  # the connection goes on


def test_an_unknown_method_answer_is_learned_when_the_version_says_nothing(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upstream whose version tells nothing: its "unknown method" answer is learned and the
    call retried translated, so the client still gets its table."""
    from metaproxy.proxy.upstream import Upstream

    monkeypatch.setattr(Upstream, "server_version", lambda self, limit: "")
    for client in hive2_client(uri(proxy, "cloud")):
        assert client.get_table("tpcds", "item").sd.location == "s3://metaproxy/tpcds/item"
        assert client.get_table("tpcds", "store").sd.location == "s3://metaproxy/tpcds/store"
    assert proxy.health()["not_served_by_upstream"] == {stack["hms"]: ["get_table"]}

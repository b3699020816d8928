"""Dialect bridging: a Hive 2 IDL client (hmsclient) calls what Hive 4 no longer serves, through
the proxy, and gets what its own IDL expects. On a Hive 2.3 or 3.1 stack the upstream serves
those calls itself, and the proxy forwards them: the client gets what the upstream answers."""

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

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def hive4(stack: dict[str, Any]) -> bool:
    """The upstream is Hive 4, which no longer serves get_table and get_table_objects_by_name."""
    return stack["hms_version"] == "4.0"


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


def test_what_old_clients_call_straight_to_the_upstream(stack: dict[str, Any], tpcds: Any) -> None:
    """The reason for the translations: straight to Hive 4, get_table is unknown; Hive 2.3 and
    3.1 serve it."""
    for client in hive2_client(stack["hms"]):
        if not hive4(stack):
            assert client.get_table("tpcds", "item").sd.location == f"{stack['hdfs']}/warehouse/tpcds/item"
            return
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
    if hive4(stack):
        assert health["upstream_versions"] == {stack["hms"]: "4.0.1"}
        assert health["not_served_by_upstream"] == {stack["hms"]: ["get_table", "get_table_objects_by_name"]}
    else:  # 2.3 and 3.1 both say "3.0": they serve get_table, and lack the Hive 4 _req calls
        assert health["not_served_by_upstream"] == {stack["hms"]: ["get_partitions_by_names_req"]}


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


def undeclared_error(thrift_uri: str) -> TApplicationException:
    """What a Hive 2 client gets for get_table_objects_by_name on a missing database."""
    for client in hive2_client(thrift_uri):
        with pytest.raises(TApplicationException) as e:
            client.get_table_objects_by_name("no_such_database", ["t"])
        assert "tpcds" in client.get_all_databases()  # the connection goes on
    return e.value


def test_an_exception_the_old_idl_does_not_declare_comes_as_an_application_error(
    stack: dict[str, Any], tpcds: Any, proxy: MetastoreProxy
) -> None:
    """The Hive 2 IDL declares no exception for get_table_objects_by_name. Through the proxy to
    Hive 4, the translation sends the upstream's exception as a TApplicationException with its
    message; to Hive 2.3 or 3.1, the client gets what the upstream itself answers."""
    through = undeclared_error(uri(proxy, "cloud"))
    if hive4(stack):
        assert through.type == TApplicationException.INTERNAL_ERROR
        assert "UnknownDBException" in str(through) and "no_such_database" in str(through)
        return
    direct = undeclared_error(stack["hms"])
    assert (through.type, str(through)) == (direct.type, str(direct))


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
    lacking = proxy.health()["not_served_by_upstream"]
    assert lacking == ({stack["hms"]: ["get_table"]} if hive4(stack) else {})

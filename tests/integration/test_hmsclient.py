"""hmsclient (the Hive 2 metastore IDL) as a client of the proxy, on any upstream version: tables
and partitions as it reads them, locations rewritten by the ``cloud`` listener and every other
field equal to what the ``passthrough`` listener (which rewrites nothing) answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hmsclient.genthrift.hive_metastore import ThriftHiveMetastore as Hive2
from proxying import uri
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

from metaproxy.hms import parse_thrift_uri
from metaproxy.thrift_server import MetastoreProxy

pytestmark = [pytest.mark.integration, pytest.mark.compat]


def client(thrift_uri: str) -> Iterator[Hive2.Client]:
    host, port = parse_thrift_uri(thrift_uri)
    transport = TTransport.TBufferedTransport(TSocket.TSocket(host, port))
    transport.open()
    try:
        yield Hive2.Client(TBinaryProtocol.TBinaryProtocol(transport))
    finally:
        transport.close()


@pytest.fixture
def clients(proxy: MetastoreProxy) -> Iterator[tuple[Hive2.Client, Hive2.Client]]:
    for cloud in client(uri(proxy, "cloud")):
        for plain in client(uri(proxy, "passthrough")):
            yield cloud, plain


def same_but_location(rewritten: Any, plain: Any, hdfs: str) -> None:
    assert rewritten.sd.location == plain.sd.location.replace(f"{hdfs}/warehouse/", "s3://metaproxy/")
    assert rewritten.sd.location.startswith("s3://metaproxy/tpcds/")
    rewritten.sd.location = plain.sd.location
    assert rewritten == plain


def test_tables_and_partitions(
    stack: dict[str, Any], tpcds: Any, clients: tuple[Hive2.Client, Hive2.Client]
) -> None:
    cloud, plain = clients
    for name in ("item", "store_sales"):
        same_but_location(cloud.get_table("tpcds", name), plain.get_table("tpcds", name), stack["hdfs"])
    names = plain.get_partition_names("tpcds", "store_sales", -1)
    assert len(names) == 120 and cloud.get_partition_names("tpcds", "store_sales", -1) == names
    for got, want in zip(
        cloud.get_partitions("tpcds", "store_sales", 10),
        plain.get_partitions("tpcds", "store_sales", 10),
        strict=True,
    ):
        same_but_location(got, want, stack["hdfs"])
    some = names[5:8]
    for got, want in zip(
        cloud.get_partitions_by_names("tpcds", "store_sales", some),
        plain.get_partitions_by_names("tpcds", "store_sales", some),
        strict=True,
    ):
        same_but_location(got, want, stack["hdfs"])

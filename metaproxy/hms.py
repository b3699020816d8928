"""A Hive Metastore client for metaproxy's own tools (sample loader, migration loop, tests).

It uses Hive 4's generated Thrift bindings (the ``hive_metastore`` module shipped in pyiceberg's
wheel) over the C-accelerated binary protocol on a buffered socket — the same wire format
Trino uses. The metastore *proxy* does not use this module: it forwards bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from hive_metastore import ThriftHiveMetastore
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

Client = ThriftHiveMetastore.Client


def parse_thrift_uri(uri: str) -> tuple[str, int]:
    """``thrift://host:port`` → ``(host, port)``."""
    parts = urlsplit(uri)
    if parts.scheme != "thrift" or not parts.hostname or not parts.port:
        raise ValueError(f"expected thrift://host:port, got {uri!r}")
    return parts.hostname, parts.port


def open_client(
    uri: str, timeout_s: float = 60.0
) -> tuple[ThriftHiveMetastore.Client, TTransport.TTransportBase]:
    """An open HMS client for ``thrift://host:port`` and its transport (the caller closes it)."""
    host, port = parse_thrift_uri(uri)
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(int(timeout_s * 1000))
    transport = TTransport.TBufferedTransport(sock)
    protocol = TBinaryProtocol.TBinaryProtocolAccelerated(transport)
    client = ThriftHiveMetastore.Client(protocol)
    transport.open()
    return client, transport


@contextmanager
def connect(uri: str, timeout_s: float = 60.0) -> Iterator[ThriftHiveMetastore.Client]:
    """An open HMS client for ``thrift://host:port``; closed when the block ends."""
    client, transport = open_client(uri, timeout_s)
    try:
        yield client
    finally:
        transport.close()


@contextmanager
def connect_first(uris: Sequence[str], timeout_s: float = 60.0) -> Iterator[ThriftHiveMetastore.Client]:
    """A client of the first of ``uris`` that takes a connection (as the proxy fails over)."""
    errors = []
    for uri in uris:
        try:
            client, transport = open_client(uri, timeout_s)
        except Exception as e:
            errors.append(f"{uri}: {e}")
            continue
        try:
            yield client
        finally:
            transport.close()
        return
    raise ConnectionError("no upstream HMS reachable (" + "; ".join(errors) + ")")

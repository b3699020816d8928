"""A Hive Metastore client for metaproxy's own tools (sample loader, migration loop, tests).

It uses Hive 4's generated Thrift bindings (the ``hive_metastore`` module shipped in pyiceberg's
wheel) over the C-accelerated binary protocol on a buffered socket — the same wire format
Trino uses. The metastore *proxy* does not use this module: it forwards bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
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


@contextmanager
def connect(uri: str, timeout_s: float = 60.0) -> Iterator[ThriftHiveMetastore.Client]:
    """An open HMS client for ``thrift://host:port``; closed when the block ends."""
    host, port = parse_thrift_uri(uri)
    sock = TSocket.TSocket(host, port)
    sock.setTimeout(int(timeout_s * 1000))
    transport = TTransport.TBufferedTransport(sock)
    protocol = TBinaryProtocol.TBinaryProtocolAccelerated(transport)
    client = ThriftHiveMetastore.Client(protocol)
    transport.open()
    try:
        yield client
    finally:
        transport.close()

"""A Hive Metastore client for metaproxy's own tools (sample loader, migration loop, tests).

It uses Hive 4's generated Thrift bindings (the ``hive_metastore`` module shipped in pyiceberg's
wheel) over the C-accelerated binary protocol on a buffered socket — the same wire format
Trino uses. The metastore *proxy* does not use this module: it forwards bytes.
"""

from __future__ import annotations

from types import TracebackType
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


class connect:  # noqa: N801 - used as a function: ``with connect(uri) as client``
    """An open HMS client for ``thrift://host:port``; closed when the block ends.

    A class rather than a generator-based context manager: the bindings' exceptions are
    immutable, and ``contextlib.contextmanager`` sets ``__traceback__`` on an exception that
    leaves the block, which turns a ``MetaException`` into a ``TypeError``.
    """

    def __init__(self, uri: str, timeout_s: float = 60.0) -> None:
        host, port = parse_thrift_uri(uri)
        sock = TSocket.TSocket(host, port)
        sock.setTimeout(int(timeout_s * 1000))
        self._transport = TTransport.TBufferedTransport(sock)
        self._client = ThriftHiveMetastore.Client(TBinaryProtocol.TBinaryProtocolAccelerated(self._transport))

    def __enter__(self) -> ThriftHiveMetastore.Client:
        self._transport.open()
        return self._client

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._transport.close()

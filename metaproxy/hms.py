"""A Hive Metastore client for metaproxy's own tools (sample loader, migration loop, tests).

It uses Hive 4's generated Thrift bindings (the ``hive_metastore`` module shipped in pyiceberg's
wheel) over the C-accelerated binary protocol on a buffered socket — the same wire format
Trino uses. The metastore *proxy* does not use this module: it forwards bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class connect_first:  # noqa: N801 - used as a function, as connect is
    """A client of the first of ``uris`` that takes a connection (as the proxy fails over: the
    metastores of one list share a database)."""

    def __init__(self, uris: Sequence[str], timeout_s: float = 60.0) -> None:
        self._uris = uris
        self._timeout_s = timeout_s
        self._open: connect | None = None

    def __enter__(self) -> ThriftHiveMetastore.Client:
        errors = []
        for uri in self._uris:
            c = connect(uri, self._timeout_s)
            try:
                client = c.__enter__()
            except Exception as e:
                errors.append(f"{uri}: {e}")
                continue
            self._open = c
            return client
        raise ConnectionError("no upstream HMS reachable (" + "; ".join(errors) + ")")

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._open is not None:
            self._open.__exit__(kind, exc, tb)

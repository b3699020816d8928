"""A Hive Metastore client for metaproxy's own tools (sample loader, migration loop, tests).

It uses Hive 4's generated Thrift bindings (the ``hive_metastore`` module shipped in pyiceberg's
wheel) over the C-accelerated binary protocol on a buffered socket — the same wire format
Trino uses. The metastore *proxy* does not use this module: it forwards bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from hive_metastore import ThriftHiveMetastore
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport

if TYPE_CHECKING:
    from metaproxy.security import Security

Client = ThriftHiveMetastore.Client


class _SecureTransport(TTransport.TTransportBase):
    """A Thrift transport over the connection :meth:`Security.hms_socket` opens (SASL GSSAPI
    when Kerberos is configured)."""

    def __init__(self, security: Security, host: str, port: int, timeout_s: float) -> None:
        self._security, self._host, self._port, self._timeout_s = security, host, port, timeout_s
        self._sock: Any = None

    def isOpen(self) -> bool:  # noqa: N802 - Thrift's naming
        return self._sock is not None

    def open(self) -> None:
        try:
            self._sock = self._security.hms_socket(
                self._host, self._port, self._timeout_s, self._timeout_s, 1 << 30
            )
        except OSError as e:
            raise TTransport.TTransportException(
                TTransport.TTransportException.NOT_OPEN, f"cannot connect to {self._host}:{self._port}: {e}"
            ) from e

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def read(self, sz: int) -> bytes:
        data = self._sock.recv(sz)
        if not data:
            raise TTransport.TTransportException(
                TTransport.TTransportException.END_OF_FILE, "connection closed"
            )
        return bytes(data)

    def write(self, buf: bytes) -> None:
        self._out = getattr(self, "_out", b"") + buf

    def flush(self) -> None:
        out, self._out = getattr(self, "_out", b""), b""
        if out:
            self._sock.sendall(out)


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

    def __init__(self, uri: str, timeout_s: float = 60.0, security: Security | None = None) -> None:
        host, port = parse_thrift_uri(uri)
        if security is None:
            from metaproxy.security import client_security

            security = client_security()
        if security is not None and security.kerberos:
            # SASL frames whole messages: the buffered transport hands over one per flush
            self._transport = TTransport.TBufferedTransport(_SecureTransport(security, host, port, timeout_s))
        else:
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

    def __init__(
        self, uris: Sequence[str], timeout_s: float = 60.0, security: Security | None = None
    ) -> None:
        self._uris = uris
        self._timeout_s = timeout_s
        self._security = security
        self._open: connect | None = None

    def __enter__(self) -> ThriftHiveMetastore.Client:
        errors = []
        for uri in self._uris:
            c = connect(uri, self._timeout_s, self._security)
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

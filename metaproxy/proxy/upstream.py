"""Connections to the on-prem Hive Metastore, and reading whole Thrift messages off a socket.

Binary Thrift has no length prefix, so a message is "complete" when it walks to its end
(:mod:`metaproxy.wire.binary`); replies are streamed to the client as they are walked, with
their location strings rewritten on the way.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metaproxy.hms import parse_thrift_uri
from metaproxy.proxy.metrics import UPSTREAM_UP
from metaproxy.wire import binary, fields, schema
from metaproxy.wire.binary import ONEWAY, Incomplete, Malformed, MessageHeader, Scanned

if TYPE_CHECKING:
    from metaproxy.security import Security

RECV_SIZE = 1 << 20
#: a connection whose Kerberos context ends within this many seconds is not lent again
LAPSE_MARGIN_S = 5.0
#: below this size a message is walked whole on each read instead of incrementally
SMALL_MESSAGE = 256 * 1024


class ConnectionClosed(Exception):  # noqa: N818 - a state
    """The peer closed the connection."""


class UpstreamUnavailable(Exception):  # noqa: N818 - a state
    """No upstream HMS could be reached or it failed mid-call."""


class UpstreamBroken(UpstreamUnavailable):
    """The upstream failed after part of its reply was already forwarded."""


class ClientGone(Exception):  # noqa: N818 - a state
    """The client went away while its reply was being sent."""


def read_message(
    sock: socket.socket,
    buf: bytearray,
    schema_for: Callable[[MessageHeader], binary.StructSchema | None],
    limit: int,
) -> Scanned:
    """Read one whole message into ``buf`` (which may already hold its start) and scan it.

    Binary Thrift has no length prefix, so "complete" means "walks to its end"; the
    incremental scanner keeps its place between reads, so a large reply arriving in many
    segments is walked once in total.
    """
    scanner = binary.IncrementalScanner(schema_for, limit)
    while True:
        if buf:
            scanned = None
            if len(buf) < SMALL_MESSAGE:  # one C walk beats stepping through fields in Python
                with contextlib.suppress(Incomplete):
                    scanned = binary.scan(buf, schema_for, limit)
            if scanned is None:
                scanned = scanner.feed(buf)
            if scanned is not None:
                return scanned
        if len(buf) > limit:
            raise Malformed(f"message larger than the {limit}-byte limit")
        chunk = sock.recv(RECV_SIZE)
        if not chunk:
            if buf:
                raise Malformed("connection closed in the middle of a message")
            raise ConnectionClosed
        buf += chunk


def request_schema(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name)
    return info.request if info else None


def reply_schema(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name)
    return info.reply if info else None


def request_schema_db(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name, db_names=True)
    return info.request if info else None


def reply_schema_db(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name, db_names=True)
    return info.reply if info else None


class Upstream:
    """One connection to the first reachable HMS of the configured list."""

    def __init__(
        self,
        uris: tuple[str, ...],
        connect_timeout: float,
        call_timeout: float,
        security: Security | None = None,
        limit: int = 1 << 30,
    ) -> None:
        self.uris = uris
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        #: Kerberos (SASL GSSAPI) to the HMS, when configured
        self.security = security
        self.limit = limit
        #: a plain socket, or the SASL connection over one (same methods)
        self.sock: Any = None
        self.uri: str | None = None
        self.buf = bytearray()
        #: the state calls (set_ugi, …) this connection carries; see :mod:`metaproxy.proxy.pool`
        self.state: tuple[bytes, ...] = ()
        #: when it was last given back to the pool (monotonic), and whether it came from there
        self.last_used = 0.0
        self.reused = False
        #: while a call waits for the HMS: when it last heard from it (monotonic), else None
        self.waiting_since: float | None = None
        #: set by :meth:`abort`: how long the ended call had heard nothing
        self.aborted: float | None = None

    def abort(self) -> bool:
        """End the call waiting on this connection (from another thread): its read fails at
        once, as if the HMS had closed the connection. False if no call was waiting."""
        sock = self.sock
        if sock is None or self.waiting_since is None:
            return False
        self.aborted = time.monotonic() - self.waiting_since
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return True

    def lapsed(self) -> bool:
        """True if the connection's Kerberos context ends (or ended): it is not used again."""
        ends = getattr(self.sock, "expires_at", None)
        return ends is not None and ends - time.monotonic() < LAPSE_MARGIN_S

    def connect(self) -> Any:
        if self.sock is not None:
            return self.sock
        errors = []
        for uri in self.uris:
            host, port = parse_thrift_uri(uri)
            try:
                if self.security is not None:
                    sock = self.security.hms_socket(
                        host, port, self.connect_timeout, self.call_timeout, self.limit + 4096
                    )
                else:
                    sock = socket.create_connection((host, port), timeout=self.connect_timeout)
                    sock.settimeout(self.call_timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as e:
                UPSTREAM_UP.labels(uri).set(0)
                errors.append(f"{uri}: {e.strerror or e}")
                continue
            except Exception as e:  # Kerberos: no ticket, refused, no common layer
                UPSTREAM_UP.labels(uri).set(0)
                errors.append(f"{uri}: {e}")
                continue
            UPSTREAM_UP.labels(uri).set(1)
            self.sock, self.uri = sock, uri
            return sock
        raise UpstreamUnavailable("no upstream HMS reachable (" + "; ".join(errors) + ")")

    def reset(self) -> None:
        """Close the connection (the next call opens a new one)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock, self.uri = None, None
        self.aborted = None
        self.state = ()
        self.buf.clear()

    def _why(self, e: BaseException) -> str:
        """What ended a call, in words (an ended call says so, not a bare closed connection)."""
        aborted, self.aborted = self.aborted, None
        if aborted is not None:
            return f"the metastore stopped answering (nothing heard for {aborted:.1f}s); the call was ended"
        return str(e) or type(e).__name__

    def _failed(self) -> str | None:
        """The connection failed: say so in the metrics and close it; returns its URI."""
        uri = self.uri
        if uri:
            UPSTREAM_UP.labels(uri).set(0)
        self.reset()
        return uri

    def relay(
        self,
        request: bytes | bytearray | memoryview,
        client: socket.socket,
        transform: Callable[[str, str], str | None],
        limit: int,
        reply_schema: Callable[[MessageHeader], binary.StructSchema | None] = reply_schema,
        flush_bytes: int = 256 * 1024,
        capture: list[bytes] | None = None,
    ) -> MessageHeader:
        """Send a request and stream the reply to ``client`` as it arrives, rewritten.

        Bytes are forwarded as soon as the scanner has walked past them (so every location
        string among them is known and complete): the client decodes while the HMS is still
        sending, as it would talking to the HMS directly. If the reply turns out malformed
        half-way, the client has part of it and its connection must be closed
        (:class:`UpstreamBroken`). ``capture``, if given, receives every piece sent.
        """
        sock = self.connect()
        buf = self.buf
        buf.clear()
        scanner = binary.IncrementalScanner(reply_schema, limit)

        def _whole(data: bytearray) -> Scanned | None:
            try:
                return binary.scan(data, reply_schema, limit)
            except Incomplete:
                return None

        sent = 0
        next_span = 0
        try:
            self.waiting_since = time.monotonic()
            sock.sendall(request)
            while True:
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    raise ConnectionClosed
                self.waiting_since = time.monotonic()
                buf += chunk
                if len(buf) > limit:
                    raise Malformed(f"reply larger than the {limit}-byte limit")
                done = _whole(buf) if len(buf) < SMALL_MESSAGE else None
                if done is None:
                    done = scanner.feed(buf)
                safe = done.end if done is not None else (scanner.pos if scanner.header else 0)
                if done is None and safe - sent < flush_bytes:
                    continue
                # a message walked whole carries its own spans; never mixed with the scanner's,
                # since partial flushes only happen past SMALL_MESSAGE
                spans = done.spans if done is not None else scanner.spans
                upto = next_span
                while upto < len(spans) and spans[upto][0] < safe:
                    upto += 1
                piece = binary.splice_range(buf, sent, safe, spans[next_span:upto], transform)
                assert piece is not None
                next_span = upto
                try:
                    client.sendall(piece)
                except OSError as e:
                    raise ClientGone(str(e)) from e
                if capture is not None:
                    capture.append(piece)
                sent = safe
                if done is not None:
                    del buf[: done.end]
                    return done.header
        except ClientGone:
            self.reset()
            raise
        except (OSError, ConnectionClosed, Malformed) as e:
            why = self._why(e)
            uri = self._failed()
            if sent:
                raise UpstreamBroken(f"upstream {uri} failed in the middle of a reply: {why}") from e
            raise UpstreamUnavailable(f"upstream {uri} failed during the call: {why}") from e
        finally:
            self.waiting_since = None

    def call(
        self,
        request: bytes | bytearray | memoryview,
        oneway: bool,
        limit: int,
        reply_schema: Callable[[MessageHeader], binary.StructSchema | None] = reply_schema,
    ) -> tuple[Scanned, bytearray]:
        """Send a request, read the whole reply (scanned with its reply schema) into ``buf``."""
        sock = self.connect()
        self.buf.clear()
        try:
            self.waiting_since = time.monotonic()
            sock.sendall(request)
            if oneway:
                return Scanned(binary.MessageHeader("", ONEWAY, 0, 0, True), 0, []), self.buf
            scanned = read_message(sock, self.buf, reply_schema, limit)
            return scanned, self.buf
        except (OSError, ConnectionClosed, Malformed) as e:
            why = self._why(e)
            uri = self._failed()
            raise UpstreamUnavailable(f"upstream {uri} failed during the call: {why}") from e
        finally:
            self.waiting_since = None

    def server_version(self, limit: int) -> str:
        """What the upstream says its version is (``getVersion``), '' if it cannot say."""
        scanned, buf = self.call(
            binary.encode_header("getVersion", binary.CALL, 0) + bytes([binary.STOP]), False, limit
        )
        if scanned.header.mtype != binary.REPLY:
            return ""
        result, _ = fields.split(buf[: scanned.end], scanned.header.body_start, limit)
        version = result.get(0)
        return version.string() if version is not None and version.ttype == binary.STRING else ""

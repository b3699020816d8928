"""The metastore proxy: a Thrift server in front of the on-prem Hive Metastore.

Per client connection (Trino keeps a pool of them) one thread and one upstream connection. Each
call goes: read the whole request (walking it to find its end and its location strings) →
refuse it if it writes and writes are not allowed → rewrite its locations inbound → forward →
read the whole reply → rewrite its locations outbound → answer. Bytes that are not locations are
never decoded and never changed; a method the proxy does not know is forwarded as is.

This module knows sockets, threads and the error boundary; location rules live in
:mod:`metaproxy.rewrite`, the wire format in :mod:`metaproxy.wire`.

Error boundary: upstream replies (including Thrift exceptions) reach the client unchanged. The
proxy's own failures become a ``MetaException("metaproxy: …")`` when the method declares one,
else a ``TApplicationException``; a client that sends bytes that are not Thrift is disconnected.
Either way the other clients are not affected, and a request is forwarded only once it has been
read and rewritten completely.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram

from metaproxy.config import Config, ListenerConfig
from metaproxy.hms import parse_thrift_uri
from metaproxy.mounts import MountTable, load_mount_table
from metaproxy.rewrite import RewriteError, Rewriter
from metaproxy.wire import binary, schema
from metaproxy.wire.binary import CALL, ONEWAY, Incomplete, Malformed, MessageHeader, Scanned

log = logging.getLogger("metaproxy.proxy")
audit = logging.getLogger("metaproxy.audit")

CALLS = Counter("metaproxy_proxy_calls", "Metastore calls through the proxy", ["method", "outcome"])
LATENCY = Histogram(
    "metaproxy_proxy_call_seconds",
    "Latency of metastore calls through the proxy",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REWRITTEN = Counter("metaproxy_proxy_locations_rewritten", "Locations rewritten", ["direction"])
UPSTREAM_UP = Gauge("metaproxy_proxy_upstream_up", "1 if the last attempt to reach this HMS worked", ["uri"])
CONNECTIONS = Gauge("metaproxy_proxy_client_connections", "Open client connections", ["profile"])

RECV_SIZE = 1 << 20
#: below this size a message is walked whole on each read instead of incrementally
SMALL_MESSAGE = 256 * 1024
CREATING = re.compile(r"^(create_|add_|append_)")


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


def _request_schema(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name)
    return info.request if info else None


def _reply_schema(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name)
    return info.reply if info else None


def _request_schema_db(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name, db_names=True)
    return info.request if info else None


def _reply_schema_db(h: MessageHeader) -> binary.StructSchema | None:
    info = schema.method(h.name, db_names=True)
    return info.reply if info else None


class Upstream:
    """One connection to the first reachable HMS of the configured list."""

    def __init__(self, uris: tuple[str, ...], connect_timeout: float, call_timeout: float) -> None:
        self.uris = uris
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.sock: socket.socket | None = None
        self.uri: str | None = None
        self.buf = bytearray()

    def connect(self) -> socket.socket:
        if self.sock is not None:
            return self.sock
        errors = []
        for uri in self.uris:
            host, port = parse_thrift_uri(uri)
            try:
                sock = socket.create_connection((host, port), timeout=self.connect_timeout)
            except OSError as e:
                UPSTREAM_UP.labels(uri).set(0)
                errors.append(f"{uri}: {e.strerror or e}")
                continue
            sock.settimeout(self.call_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            UPSTREAM_UP.labels(uri).set(1)
            self.sock, self.uri = sock, uri
            return sock
        raise UpstreamUnavailable("no upstream HMS reachable (" + "; ".join(errors) + ")")

    def reset(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        if self.uri:
            UPSTREAM_UP.labels(self.uri).set(0)
        self.sock, self.uri = None, None
        self.buf.clear()

    def relay(
        self,
        request: bytes | bytearray | memoryview,
        client: socket.socket,
        transform: Callable[[str, str], str | None],
        limit: int,
        reply_schema: Callable[[MessageHeader], binary.StructSchema | None] = _reply_schema,
        flush_bytes: int = 256 * 1024,
    ) -> MessageHeader:
        """Send a request and stream the reply to ``client`` as it arrives, rewritten.

        Bytes are forwarded as soon as the scanner has walked past them (so every location
        string among them is known and complete): the client decodes while the HMS is still
        sending, as it would talking to the HMS directly. If the reply turns out malformed
        half-way, the client has part of it and its connection must be closed
        (:class:`UpstreamBroken`).
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
            sock.sendall(request)
            while True:
                chunk = sock.recv(RECV_SIZE)
                if not chunk:
                    raise ConnectionClosed
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
                sent = safe
                if done is not None:
                    del buf[: done.end]
                    return done.header
        except ClientGone:
            self.reset()
            raise
        except (OSError, ConnectionClosed, Malformed) as e:
            uri = self.uri
            self.reset()
            if sent:
                raise UpstreamBroken(f"upstream {uri} failed in the middle of a reply: {e}") from e
            raise UpstreamUnavailable(f"upstream {uri} failed during the call: {e}") from e

    def call(
        self, request: bytes | bytearray | memoryview, oneway: bool, limit: int
    ) -> tuple[Scanned, bytearray]:
        """Send a request, read the whole reply (scanned with its reply schema)."""
        sock = self.connect()
        try:
            sock.sendall(request)
            if oneway:
                return Scanned(binary.MessageHeader("", ONEWAY, 0, 0, True), 0, []), self.buf
            scanned = read_message(sock, self.buf, _reply_schema, limit)
            return scanned, self.buf
        except (OSError, ConnectionClosed, Malformed) as e:
            uri = self.uri
            self.reset()
            raise UpstreamUnavailable(f"upstream {uri} failed during the call: {e}") from e


@dataclass
class ProxyState:
    """What every connection shares: config, and the current rewriter per profile."""

    config: Config
    flips_source: Callable[[], Mapping[str, str]] = dict
    rewriters: dict[str, Rewriter] = field(default_factory=dict)
    mounts: MountTable = field(default_factory=MountTable)
    version: int = 0
    writable: list[re.Pattern[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        ms = self.config.metastore
        self.writable = [re.compile(p) for p in ms.writable_databases]
        maps_dbs = bool(ms.database_prefix or ms.database_map)
        self.request_schema = _request_schema_db if maps_dbs else _request_schema
        self.reply_schema = _reply_schema_db if maps_dbs else _reply_schema
        self.refresh()

    def refresh(self) -> None:
        """Reload mounts (config + state DB) and flips; swap in new rewriters if they changed."""
        from metaproxy.state import open_state

        try:
            db = open_state(self.config.state_path)
            mounts = load_mount_table(self.config, db)
            db.conn.close()
        except Exception as e:  # a broken state DB must not take the proxy down
            log.warning("could not reload mounts from %s: %s", self.config.state_path, e)
            mounts = self.mounts if self.mounts.mounts else load_mount_table(self.config, None)
        try:
            flips = dict(self.flips_source())
        except Exception as e:
            log.warning("could not reload flips: %s", e)
            flips = {}
        key = (mounts.mounts, tuple(sorted(flips.items())))
        if self.rewriters and key == getattr(self, "_key", None):
            return
        self._key = key
        self.mounts = mounts
        ms = self.config.metastore
        self.rewriters = {
            p: Rewriter.build(
                p,
                mounts,
                self.config.gateway.bucket,
                flips,
                write_back=self.config.migrate.write_back_to_hms,
                db_map=ms.database_map,
                db_prefix=ms.database_prefix,
            )
            for p in ("cloud", "onprem", "passthrough")
        }
        self.version += 1
        log.info("rules v%d: %d mounts, %d flipped units", self.version, len(mounts), len(flips))

    def write_refusal(self, method: str, databases: list[str]) -> str | None:
        """Why a write call is refused, or None if it is allowed."""
        ms = self.config.metastore
        if not ms.allow_writes:
            return (
                f"metaproxy: {method} changes the metastore and the proxy is read-only; "
                f"set [metastore] allow_writes = true (and writable_databases) in {self.config.source} to allow it"
            )
        if self.writable:
            if not databases:
                return (
                    f"metaproxy: {method} names no database; writable_databases allows only listed databases"
                )
            for db in databases:
                if not any(p.fullmatch(db) for p in self.writable):
                    return (
                        f"metaproxy: database {db!r} is not writable through the proxy; "
                        f"add it to [metastore] writable_databases in {self.config.source}"
                    )
        return None


class Session:
    """One client connection and its upstream connection."""

    def __init__(self, state: ProxyState, listener: ListenerConfig, sock: socket.socket, peer: str) -> None:
        self.state = state
        self.listener = listener
        self.sock = sock
        self.peer = peer
        ms = state.config.metastore
        self.upstream = Upstream(ms.uris, ms.connect_timeout_s, ms.call_timeout_s)
        self.limit = state.config.proxy.max_message_bytes

    def serve(self) -> None:
        buf = bytearray()
        CONNECTIONS.labels(self.listener.profile).inc()
        try:
            while True:
                try:
                    req = read_message(self.sock, buf, self.state.request_schema, self.limit)
                except ConnectionClosed:
                    return
                except Malformed as e:
                    self._reject_malformed(buf, str(e))
                    return
                self.handle(req, buf)
                del buf[: req.end]
        except OSError as e:
            log.debug("client %s: %s", self.peer, e)
        finally:
            CONNECTIONS.labels(self.listener.profile).dec()
            self.upstream.reset()
            with contextlib.suppress(OSError):
                self.sock.close()

    def _reject_malformed(self, buf: bytearray, why: str) -> None:
        """Answer a PROTOCOL_ERROR when the header was readable, then drop the connection."""
        CALLS.labels("<malformed>", "malformed").inc()
        audit.info("client=%s method=<malformed> outcome=malformed detail=%r", self.peer, why[:200])
        try:
            h = binary.parse_header(buf)
        except binary.WireError:
            return
        with contextlib.suppress(OSError):
            self.sock.sendall(
                binary.encode_application_exception(
                    h.name, h.seqid, binary.PROTOCOL_ERROR, f"metaproxy: malformed request: {why}"
                )
            )

    def _error_reply(self, h: MessageHeader, message: str, internal: bool = False) -> bytes:
        info = schema.method(h.name)
        if info is not None and info.meta_exception_fid is not None:
            return binary.encode_exception_reply(h.name, h.seqid, info.meta_exception_fid, message)
        kind = binary.INTERNAL_ERROR if internal else binary.UNKNOWN_METHOD
        return binary.encode_application_exception(h.name, h.seqid, kind, message)

    def handle(self, req: Scanned, buf: bytearray) -> None:
        h = req.header
        t0 = time.perf_counter()
        outcome, detail, rewritten_in, rewritten_out = "ok", "", 0, 0
        dbs: list[str] = []
        try:
            if h.mtype not in (CALL, ONEWAY):
                raise _Refused(f"metaproxy: expected a call, got message type {h.mtype}")
            info = schema.method(h.name)
            if info.write if info else schema.is_write(h.name):
                if info is not None:
                    try:
                        dbs = schema.database_names(info, bytes(buf[h.body_start : req.end]))
                    except Exception as e:
                        raise _Refused(f"metaproxy: cannot read the arguments of {h.name}: {e}") from None
                refusal = self.state.write_refusal(h.name, dbs)
                if refusal:
                    raise _Refused(refusal)
            rewriter = self.state.rewriters[self.listener.profile]
            creating = bool(CREATING.match(h.name))
            counter = [0]

            def inbound(loc: str, kind: str) -> str | None:
                new = rewriter.inbound(loc, creating=creating, kind=kind)
                if new is not None and new != loc:
                    counter[0] += 1
                return new

            try:
                out = binary.splice(buf, req.end, req.spans, inbound) if req.spans else None
            except RewriteError as e:
                raise _Refused(f"metaproxy: {e}") from None
            rewritten_in = counter[0]
            request = out if out is not None else memoryview(buf)[: req.end]
            counter[0] = 0

            def outbound(loc: str, kind: str) -> str | None:
                new = rewriter.outbound(loc, kind)
                if new is not None and new != loc:
                    counter[0] += 1
                return new

            try:
                if h.mtype == ONEWAY:
                    self.upstream.call(request, True, self.limit)
                    return
                reply_header = self.upstream.relay(
                    request, self.sock, outbound, self.limit, reply_schema=self.state.reply_schema
                )
            finally:
                if isinstance(request, memoryview):
                    request.release()
            rewritten_out = counter[0]
            if reply_header.mtype == binary.EXCEPTION:
                outcome = "upstream_exception"
        except (UpstreamBroken, ClientGone) as e:
            outcome, detail = "aborted", str(e)
            log.warning("client %s: %s", self.peer, e)
            raise OSError(str(e)) from e
        except _Refused as e:
            outcome, detail = "refused", str(e)
            self.sock.sendall(self._error_reply(h, str(e)))
        except UpstreamUnavailable as e:
            outcome, detail = "upstream_unavailable", str(e)
            log.warning("%s", e)
            self.sock.sendall(self._error_reply(h, f"metaproxy: {e}", internal=True))
        except Malformed as e:
            outcome, detail = "malformed", str(e)
            self.sock.sendall(self._error_reply(h, f"metaproxy: malformed message: {e}", internal=True))
        finally:
            elapsed = time.perf_counter() - t0
            CALLS.labels(h.name, outcome).inc()
            LATENCY.labels(h.name).observe(elapsed)
            if rewritten_in:
                REWRITTEN.labels("inbound").inc(rewritten_in)
            if rewritten_out:
                REWRITTEN.labels("outbound").inc(rewritten_out)
            audit.info(
                "client=%s profile=%s method=%s dbs=%s outcome=%s ms=%.2f in=%d rewritten_in=%d rewritten_out=%d%s",
                self.peer,
                self.listener.profile,
                h.name,
                ",".join(dbs) or "-",
                outcome,
                elapsed * 1000,
                req.end,
                rewritten_in,
                rewritten_out,
                f" detail={detail[:300]!r}" if detail else "",
            )


class _Refused(Exception):  # noqa: N818
    """The proxy answers the call itself with this message."""


class _Handler(socketserver.BaseRequestHandler):
    server: _ThreadingServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        Session(self.server.state, self.server.listener, sock, peer).serve()


class _ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, listener: ListenerConfig, state: ProxyState) -> None:
        self.listener = listener
        self.state = state
        super().__init__((listener.host, listener.port), _Handler)


class MetastoreProxy:
    """All listeners of one proxy, plus the thread that keeps mounts and flips fresh."""

    def __init__(self, config: Config, flips_source: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.config = config
        self.state = ProxyState(config, flips_source or default_flips_source(config))
        self.servers = [_ThreadingServer(lc, self.state) for lc in config.proxy.listeners]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[tuple[str, int, str]]:
        return [
            (str(s.server_address[0]), int(s.server_address[1]), s.listener.profile) for s in self.servers
        ]

    def start(self) -> None:
        for s in self.servers:
            t = threading.Thread(target=s.serve_forever, name=f"proxy-{s.listener.profile}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._refresh_loop, name="proxy-refresh", daemon=True)
        t.start()
        self._threads.append(t)
        for host, port, profile in self.addresses:
            log.info("metastore proxy listening on %s:%d (profile %s)", host, port, profile)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.proxy.mount_refresh_s):
            self.state.refresh()

    def stop(self) -> None:
        self._stop.set()
        for s in self.servers:
            s.shutdown()
            s.server_close()


def default_flips_source(config: Config) -> Callable[[], Mapping[str, str]]:
    """Flips recorded by the migration loop in the state DB (none when it never ran)."""

    def load() -> Mapping[str, str]:
        try:
            from metaproxy.migrate.flips import load_flips
        except ImportError:
            return {}
        return load_flips(config.state_path)

    return load

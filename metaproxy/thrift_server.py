"""The metastore proxy: a Thrift server in front of the on-prem Hive Metastore.

Trino's (or Spark's) ``hive.metastore.uri`` points here. Each configured listener accepts
client connections, one thread and one upstream connection per client connection (Trino keeps
a pool of them); a listener's *profile* says how locations are rewritten for its clients.

This module knows sockets, threads and the process's lifecycle: what happens to one call is
:mod:`metaproxy.proxy.session`, the rules in force :mod:`metaproxy.proxy.shared`, the HMS
connections :mod:`metaproxy.proxy.upstream`, location rules :mod:`metaproxy.rewrite`, the wire
format :mod:`metaproxy.wire`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import Any

from metaproxy.config import Config, ConfigError, ListenerConfig
from metaproxy.proxy.metrics import CALLS
from metaproxy.proxy.session import Session
from metaproxy.proxy.shared import ProxyState
from metaproxy.proxy.warmup import Warmup, ask_through
from metaproxy.proxy.watch import Watch
from metaproxy.security.sasl import PlainThriftClient, SaslError, ServerPolicy, server_handshake
from metaproxy.state import shown, state_url
from metaproxy.wire import binary

log = logging.getLogger("metaproxy.proxy")
audit = logging.getLogger("metaproxy.audit")

#: how long a client may take to finish TLS and Kerberos before it is dropped
HANDSHAKE_TIMEOUT_S = 30.0


class _Handler(socketserver.BaseRequestHandler):
    server: _ThreadingServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        conn = self._authenticate(sock, peer)
        if conn is None:
            return
        Session(self.server.state, self.server.listener, conn, peer, getattr(conn, "principal", "-")).serve()

    def _authenticate(self, sock: socket.socket, peer: str) -> Any:
        """TLS and Kerberos as the listener asks; None (and the connection closed, the reason
        audited and, where the client can read it, sent) when the client does not pass."""
        srv, listener = self.server, self.server.listener
        conn: Any = sock
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            if srv.tls is not None:
                conn = srv.tls.wrap_socket(sock, server_side=True)
            if listener.auth == "kerberos":
                login = srv.state.security.login
                assert login is not None  # checked at start
                policy = ServerPolicy(listener.sasl_qop, listener.principals)
                conn = server_handshake(
                    conn, login.acceptor(), policy, srv.state.config.proxy.max_message_bytes + 4096
                )
            conn.settimeout(None)
            return conn
        except PlainThriftClient as e:
            self._refuse_plain(conn, e)
            why = str(e)
        except (SaslError, ssl.SSLError, OSError) as e:
            why = str(e) or type(e).__name__
        CALLS.labels("<authentication>", "unauthenticated").inc()
        audit.info(
            "client=%s profile=%s principal=- method=<authentication> outcome=unauthenticated detail=%r",
            peer,
            listener.profile,
            why[:300],
        )
        with contextlib.suppress(OSError):
            conn.close()
        return None

    def _refuse_plain(self, conn: Any, e: PlainThriftClient) -> None:
        """A plain Thrift call to a kerberos listener: answered with an exception that says why."""
        data = bytearray(e.data)
        with contextlib.suppress(OSError, binary.WireError):
            conn.settimeout(1.0)
            while True:
                try:
                    header = binary.parse_header(data)
                    break
                except binary.WireError:
                    chunk = conn.recv(65536)
                    if not chunk or len(data) > 65536:
                        return
                    data += chunk
            conn.sendall(
                binary.encode_application_exception(
                    header.name,
                    header.seqid,
                    binary.PROTOCOL_ERROR,
                    "metaproxy: this listener requires Kerberos authentication (SASL GSSAPI); "
                    "the client connected without it",
                )
            )


class _ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, listener: ListenerConfig, state: ProxyState) -> None:
        self.listener = listener
        self.state = state
        if listener.auth == "kerberos" and state.security.login is None:
            raise ConfigError(
                f'{state.config.source}: [[proxy.listener]] port {listener.port} has auth = "kerberos": '
                "set [metastore] kerberos_principal and keytab (the principal it accepts clients as)"
            )
        self.tls = state.security.server_tls() if listener.tls else None
        super().__init__((listener.host, listener.port), _Handler)


class MetastoreProxy:
    """All listeners of one proxy, plus the thread that keeps mounts and flips fresh."""

    def __init__(self, config: Config, flips_source: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.config = config
        self.state = ProxyState(config, flips_source)
        self.servers = [_ThreadingServer(lc, self.state) for lc in config.proxy.listeners]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._refresher: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        #: follows the notification log, keeps the metadata cache fresh and the HMS watched
        self.watch = Watch(config, self.state.health, self.state.metacache)
        px = config.proxy
        if px.metadata_warm_up and px.metadata_cache_bytes > 0:
            self.state.warmup = Warmup(ask_through(self._session_for, px.max_message_bytes))
            self.watch.subscribe(self.state.warmup)  # after the cache: it asks what was dropped

    def _session_for(self, profile: str, sock: socket.socket) -> Session | None:
        """A session of the first listener of ``profile``, on ``sock`` (for the warm-up)."""
        for s in self.servers:
            if s.listener.profile == profile:
                return Session(self.state, s.listener, sock, "metaproxy-warmup")
        return None

    @property
    def addresses(self) -> list[tuple[str, int, str]]:
        return [
            (str(s.server_address[0]), int(s.server_address[1]), s.listener.profile) for s in self.servers
        ]

    def start(self) -> None:
        # logged in before the first client arrives: a KDC that refuses stops start-up here
        self.state.security.start()
        for s in self.servers:
            t = threading.Thread(target=s.serve_forever, name=f"proxy-{s.listener.profile}", daemon=True)
            t.start()
            self._threads.append(t)
        self._refresher = threading.Thread(target=self._refresh_loop, name="proxy-refresh", daemon=True)
        self._refresher.start()
        self._watcher = threading.Thread(
            target=self.watch.run, args=(self._stop,), name="proxy-watch", daemon=True
        )
        self._watcher.start()
        for host, port, profile in self.addresses:
            log.info("metastore proxy listening on %s:%d (profile %s)", host, port, profile)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.config.proxy.mount_refresh_s):
            self.state.refresh()
            self.state.pool.sweep()

    def health(self) -> dict[str, Any]:
        """``/health``: whether the upstream HMS answers (503 while it does not; the proxy then
        serves what it has cached), the notification log, the cache, the listeners, the rules."""
        watch = self.watch.status()
        return {
            "ok": watch["upstream"]["answering"],
            **watch,
            "listeners": [f"{h}:{p} {prof}" for h, p, prof in self.addresses],
            "mounts": [m.path for m in self.state.mounts],
            "rules_version": self.state.version,
            "upstream_pool_idle": self.state.pool.idle,
            "upstream_versions": self.state.dialects.versions(),
            "not_served_by_upstream": self.state.dialects.lacking(),
            "kerberos": self.state.security.status(),
            "state": {
                "where": shown(state_url(self.config.state)),
                "reachable": not self.state.state_problem,
                "problem": self.state.state_problem,
            },
        }

    def stop(self) -> None:
        self._stop.set()
        self.state.security.stop()
        for s in self.servers:
            s.shutdown()
            s.server_close()
        for t in (self._refresher, self._watcher):
            if t is not None:
                t.join(10)
        self.state.close()

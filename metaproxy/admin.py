"""The admin HTTP endpoint of a metaproxy service: ``/health``, ``/metrics`` (Prometheus), and
the service's own JSON documents and commands (the gateway's ``/report`` and ``/cache/*``).

A small threaded server from the standard library: it serves an operator, the CLI or a
scraper, off the data path, so it needs nothing more. It listens on loopback by default
(``[proxy] admin_host``): its commands change the cache, not data, but they are not for the
whole network.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

MAX_COMMAND = 1024 * 1024


class Labelled:
    """A view of a registry whose samples all carry some more labels (``node="g1"``): every
    metric of a cluster node says which node it is, without a label on each metric's code."""

    def __init__(self, registry: Any, labels: dict[str, str]) -> None:
        self.registry = registry
        self.labels = dict(labels)

    def collect(self) -> Iterator[Any]:
        for family in self.registry.collect():
            family.samples = [s._replace(labels={**s.labels, **self.labels}) for s in family.samples]
            yield family


class AdminServer:
    """Serves ``/health`` (JSON from ``health()``; 503 when its ``ok`` is false), ``/metrics``,
    and any extra JSON documents (``routes``: path → function)."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]],
        routes: dict[str, Callable[[], dict[str, Any]]] | None = None,
        commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
        labels: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``labels`` are added to every sample of ``/metrics`` (a cluster node's ``node``)."""
        outer = self
        registry: Any = Labelled(REGISTRY, labels) if labels else REGISTRY
        extra = dict(routes or {})
        posts = dict(commands or {})

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc, sort_keys=True).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                fn = posts.get(path)
                if fn is None:
                    self._send(404, {"error": f"no command {path}"})
                    return
                try:
                    n = int(self.headers.get("Content-Length") or 0)
                    if not 0 <= n <= MAX_COMMAND:
                        raise ValueError(f"a command body is at most {MAX_COMMAND} bytes")
                    args = json.loads(self.rfile.read(n) or b"{}")
                    if not isinstance(args, dict):
                        raise ValueError("a command body is a JSON object")
                except ValueError as e:
                    self._send(400, {"error": f"bad command body: {e}"})
                    return
                try:
                    self._send(200, fn(args))
                except (ValueError, KeyError, TypeError) as e:  # the caller's mistake
                    self._send(400, {"error": str(e)})
                except Exception as e:  # a UFS that is down, a disk that failed: say so, keep serving
                    self._send(503, {"error": f"{type(e).__name__}: {e}"})

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
                elif path in extra:
                    body = json.dumps(extra[path](), sort_keys=True).encode()
                    ctype, code = "application/json", 200
                elif path in ("/health", "/"):
                    report = outer.health()
                    body = json.dumps(report, sort_keys=True).encode()
                    ctype, code = "application/json", 200 if report.get("ok") else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.health = health
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:
            # the handshake happens in the request's thread, not in the one that accepts
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="admin", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

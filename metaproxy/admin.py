"""The admin HTTP endpoint of a metaproxy service: ``/health`` and ``/metrics`` (Prometheus).

A tiny threaded server from the standard library: it serves two small documents to an
operator or a scraper, off the data path, so it needs nothing more.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class AdminServer:
    """Serves ``/health`` (JSON from ``health()``; 503 when its ``ok`` is false), ``/metrics``,
    and any extra JSON documents (``routes``: path → function)."""

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], dict[str, Any]],
        routes: dict[str, Callable[[], dict[str, Any]]] | None = None,
    ) -> None:
        outer = self
        extra = dict(routes or {})

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="admin", daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

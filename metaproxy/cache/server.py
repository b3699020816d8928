"""The gateway process: the S3 endpoint on its own event-loop thread, the admin endpoint
(``/health``, ``/metrics``, ``/report``, ``/cache/*``), and the background work — TTL sweeps,
read-time flushes, listing refreshes. Start, stop, and the port it listens on; nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY

from metaproxy.admin import AdminServer
from metaproxy.cache.gateway import Gateway
from metaproxy.cache.metrics import CacheCollector
from metaproxy.cache.prefetch import Prefetcher
from metaproxy.cache.reads import FLUSH_EVERY_S
from metaproxy.cache.routes import make_app
from metaproxy.cache.watch import EventRefresher, probe_loop
from metaproxy.config import Config
from metaproxy.events import EventLog
from metaproxy.security import security_for
from metaproxy.ufs import UfsNotFound, UfsSet

log = logging.getLogger("metaproxy.gateway")

#: how long the S3 endpoint's event loop may take to run a task before /health says it is stuck
LOOP_HEALTH_S = 1.0


def _probe(ufs: UfsSet, uri: str) -> None:
    """A UFS answers if it says anything about ``uri`` — "not found" included."""
    with contextlib.suppress(UfsNotFound):
        ufs.stat(uri)


class GatewayServer:
    """One gateway: ``start()`` returns once it serves; ``stop()`` ends every thread it began."""

    def __init__(self, config: Config, node: str = "") -> None:
        """``node``: this gateway's name in a cluster (its responses and metrics carry it)."""
        self.node = node
        self.draining = False
        self.gateway = Gateway(config)
        if not self.gateway.keys:
            self.gateway.close()
            raise ValueError("[gateway] access_key and secret_key are required")
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._runner: web.AppRunner | None = None
        self.admin: AdminServer | None = None
        self._collector: CacheCollector | None = None
        self._stopping = threading.Event()
        self._background: list[threading.Thread] = []
        self.events: EventLog | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(make_app(self.gateway, self.node), access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        # TLS from [tls] cert_file and key_file: cached blocks are then written, not sendfile'd
        tls = security_for(self.config).server_tls() if self.config.gateway.tls else None
        site = web.TCPSite(self._runner, self.config.gateway.host, self.config.gateway.port, ssl_context=tls)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def start(self) -> GatewayServer:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the gateway did not start")
        self.admin = self._admin()
        self.admin.start()
        gw = self.gateway
        self._collector = CacheCollector(gw.cache, gw.ufs_bytes)
        REGISTRY.register(self._collector)
        g = self.config.gateway
        probes = UfsSet(self.config.hdfs, self.config.s3, timeout_s=g.probe_timeout_s)
        self._background = [
            threading.Thread(target=self._sweep, name="cache-ttl", daemon=True),
            threading.Thread(
                target=probe_loop,
                args=(gw.ufs_roots, partial(_probe, probes), gw.health, g.probe_interval_s, self._stopping),
                name="ufs-probe",
                daemon=True,
            ),
        ]
        if g.events_interval_s > 0:
            self.events = self._event_log()
            self._background.append(
                threading.Thread(
                    target=self.events.run, args=(self._stopping,), name="gateway-events", daemon=True
                )
            )
        if self.config.gateway.refresh_listings_for_s > 0:
            self._background.append(
                threading.Thread(
                    target=gw.metadata.run_refresher,
                    args=(self._stopping,),
                    name="listing-refresh",
                    daemon=True,
                )
            )
        for t in self._background:
            t.start()
        return self

    def _event_log(self) -> EventLog:
        """The metastore's notification log, its data events refreshing what they name."""
        from metaproxy.hms import connect_first

        ms, g = self.config.metastore, self.config.gateway
        log_ = EventLog(lambda: connect_first(ms.uris, g.probe_timeout_s), g.events_interval_s)
        prefetch = Prefetcher(self.gateway, self.gateway.background)
        log_.subscribe(EventRefresher(self.gateway.metadata.forget_under, on_event=prefetch.on_event))
        return log_

    def _admin(self) -> AdminServer:
        gw = self.gateway
        m = gw.manager

        def ttl(args: dict[str, Any]) -> dict[str, Any]:
            value = args.get("ttl_s")
            return m.set_ttl(str(args["path"]), None if value is None else float(value))

        return AdminServer(
            self.config.proxy.admin_host,
            self.config.gateway.admin_port,
            lambda: {
                **self._loop_health(),
                "node": self.node,
                "port": self.port,
                "mounts": [mt.path for mt in gw.mounts],
                "ufs_not_answering": gw.health.status(),
                "notification_log": self.events.status() if self.events is not None else {"followed": False},
                "kerberos": security_for(self.config).status(),
            },
            {"/report": gw.report, "/cache/rules": m.rules},
            {
                "/cache/plan": lambda a: m.plan(str(a["path"])),
                "/cache/load": lambda a: m.load_file(str(a["key"])),
                "/cache/pin": lambda a: m.pin(str(a["path"])),
                "/cache/unpin": lambda a: m.unpin(str(a["path"])),
                "/cache/free": lambda a: m.free(str(a["path"])),
                "/cache/ttl": ttl,
                "/drain": self._drain,
            },
            labels={"node": self.node} if self.node else None,
            tls=security_for(self.config).server_tls() if self.config.gateway.admin_tls else None,
        )

    def _drain(self, args: dict[str, Any]) -> dict[str, Any]:
        """``{"drain": true}``: /health answers 503, so the balancer sends this node nothing
        new (before it is stopped); ``false`` takes it back. It keeps serving meanwhile."""
        self.draining = bool(args.get("drain", True))
        return {"node": self.node, "draining": self.draining}

    def _loop_health(self) -> dict[str, Any]:
        """``ok`` while the S3 endpoint's event loop runs a task within a second and the node
        is not draining: a node whose loop is stuck is reported, and a balancer's health check
        takes it out."""
        if self.draining:
            return {"ok": False, "error": "draining: taken out of the balancer on purpose"}
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), self.loop).result(timeout=LOOP_HEALTH_S)
            return {"ok": True}
        except Exception as e:  # a timeout, or a loop that has stopped
            return {"ok": False, "error": f"the S3 endpoint's event loop did not answer: {type(e).__name__}"}

    def _sweep(self) -> None:
        """Flush read times every few seconds; free TTL'd versions every ``ttl_check_interval``."""
        every = min(self.config.gateway.ttl_check_interval_s, FLUSH_EVERY_S)
        last_ttl = time.monotonic()
        while not self._stopping.wait(every):
            try:
                self.gateway.reads.flush()
            except Exception as e:
                log.warning("could not record read times: %s", e)
            if time.monotonic() - last_ttl >= self.config.gateway.ttl_check_interval_s:
                last_ttl = time.monotonic()
                try:
                    self.gateway.manager.expire()
                except Exception as e:
                    log.warning("cache: TTL sweep failed: %s", e)
        with contextlib.suppress(Exception):
            self.gateway.reads.flush()

    def stop(self) -> None:
        self._stopping.set()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        if self.admin is not None:
            self.admin.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        for t in self._background:  # the last read times are flushed before the state closes
            t.join(30)
        self.gateway.close()

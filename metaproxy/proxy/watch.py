"""Keeping watch on the upstream metastore: is it answering, and what has changed.

One thread polls the HMS every ``events_interval``: the next batch of its notification log when
it keeps one (:mod:`metaproxy.events`), else a cheap ``getVersion``. Each poll waits at most
``probe_timeout``, so an HMS that has stopped answering — down, or frozen with its port still
open — is known within a few seconds, not after a client's call timed out.

:class:`UpstreamHealth` is the verdict every session reads: while the HMS is down, calls are
answered from the metadata cache (stale-if-error) or refused at once with a clear error; the
first answer it gives again — to the watch or to any call — ends the outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from metaproxy.config import Config
from metaproxy.events import EventLog, Unsupported
from metaproxy.hms import connect_first
from metaproxy.proxy.metacache import MetadataCache
from metaproxy.security import security_for

log = logging.getLogger("metaproxy.proxy")

UPSTREAM_DOWN_SINCE = Gauge(
    "metaproxy_proxy_upstream_down_since_seconds",
    "When the metastore stopped answering (Unix time); 0 while it answers",
)


class UpstreamHealth:
    """Whether the upstream metastore answers, and since when it has not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic
        self._down_wall = 0.0
        self.reason = ""
        #: called (outside the lock) each time the HMS is found not answering
        self.on_failure: list[Callable[[], object]] = []

    @property
    def down_since(self) -> float | None:
        with self._lock:
            return self._down_since

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since, self._down_wall = time.monotonic(), time.time()
                log.warning("the metastore is not answering: %s", reason)
                UPSTREAM_DOWN_SINCE.set(self._down_wall)
            self.reason = reason
        for hook in self.on_failure:
            try:
                hook()
            except Exception as e:
                log.warning("after the metastore failed to answer: %s", e)

    def ok(self) -> None:
        with self._lock:
            if self._down_since is not None:
                log.warning("the metastore answers again after %.1fs", time.monotonic() - self._down_since)
                UPSTREAM_DOWN_SINCE.set(0)
            self._down_since, self.reason = None, ""

    def describe(self) -> str:
        with self._lock:
            if self._down_since is None:
                return "answering"
            return f"not answering for {time.monotonic() - self._down_since:.0f}s ({self.reason})"

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "answering": self._down_since is None,
                "down_since": self._down_wall if self._down_since is not None else None,
                "reason": self.reason,
            }


class Watch:
    """The thread that follows the notification log (or probes) and keeps :class:`UpstreamHealth`."""

    def __init__(self, config: Config, health: UpstreamHealth, cache: MetadataCache) -> None:
        px, ms = config.proxy, config.metastore
        self.config = config
        self.health = health
        self.cache = cache
        self.interval_s = px.events_interval_s if px.events_interval_s > 0 else 1.0
        self.follow = px.events_interval_s > 0
        self.uris = ms.uris
        self.timeout_s = min(px.probe_timeout_s, ms.call_timeout_s)
        self.events = EventLog(self._connect, self.interval_s, subscribers=[cache])

    def _connect(self) -> Any:
        # the first HMS of the list that takes a connection, as the sessions fail over; they all
        # share one metastore database, so one notification log
        return connect_first(self.uris, self.timeout_s, security_for(self.config))

    def subscribe(self, subscriber: Any) -> None:
        self.events.subscribe(subscriber)

    def poll(self) -> None:
        """One look: new events (or a probe); the health verdict and the cache's footing follow."""
        if self.follow:
            try:
                self.events.poll()
            except Unsupported as e:
                self.follow = False
                self.cache.fresh_by_events = False
                log.warning("%s; answers are cached for [proxy] metadata_stale_after only", e)
                self.health.ok()
                return
            except Exception as e:
                self.cache.fresh_by_events = False
                self.health.failed(f"{type(e).__name__}: {e}")
                return
            self.cache.fresh_by_events = True
            self.health.ok()
            return
        self._probe()

    def _probe(self) -> None:
        try:
            with self._connect() as c:
                c.getVersion()
        except Exception as e:
            self.health.failed(f"{type(e).__name__}: {e}")
        else:
            self.health.ok()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll()
            stop.wait(self.interval_s)
        self.events._close()

    def status(self) -> dict[str, Any]:
        return {
            "upstream": self.health.status(),
            "notification_log": {**self.events.status(), "followed": self.follow},
            "metadata_cache": self.cache.stats(),
        }

"""Pre-fetch: files that appear on-prem under a ``cacheLoad`` policy are loaded into the cache as
soon as the metastore's notification log reports them — before the first query asks.

A new partition (``ADD_PARTITION``), an insert (``INSERT``), a new table or a moved partition
names locations; those under a mount path that a ``cacheLoad(newerThan(d)[, pinFor(d)])``
policy covers are listed (through the gateway's metadata cache, so the first query's listing
needs no round trip either) and every file modified within ``d`` is loaded, on the gateway's
background pool, then pinned for the policy's ``pinFor`` if it has one. A load that fails is only logged
(the first reader fetches the file as any miss).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from prometheus_client import Counter

from metaproxy.events import Event
from metaproxy.migrate.policy import PolicyExpr, list_policies, parse_policy

if TYPE_CHECKING:
    from metaproxy.cache.gateway import Gateway

log = logging.getLogger("metaproxy.gateway")

PREFETCHED = Counter(
    "metaproxy_gateway_prefetched_files", "Files loaded ahead of any reader by cacheLoad policies"
)

#: events that bring files a pre-fetch policy may load
ADDING = frozenset({"ADD_PARTITION", "INSERT", "CREATE_TABLE", "ALTER_PARTITION"})
#: how long the policies read from the state DB are used before they are read again
POLICIES_FOR_S = 5.0


class Prefetcher:
    def __init__(self, gw: Gateway, pool: Executor) -> None:
        self.gw = gw
        self.pool = pool
        self._lock = threading.Lock()
        self._policies: list[tuple[str, PolicyExpr]] = []
        self._read_at = 0.0

    def policies(self) -> list[tuple[str, PolicyExpr]]:
        """``(gateway key prefix, policy)`` of every enabled cacheLoad policy."""
        with self._lock:
            if time.monotonic() - self._read_at < POLICIES_FOR_S:
                return self._policies
        found = []
        for row in list_policies(self.gw.db):
            expr = parse_policy(row.expr)
            if row.enabled and expr.action == "cacheLoad":
                found.append((row.path.strip("/"), expr))
        with self._lock:
            self._policies, self._read_at = found, time.monotonic()
        return found

    def on_event(self, e: Event) -> None:
        """An event of the notification log: start loading what it adds under a policy."""
        if e.type not in ADDING:
            return
        policies = self.policies()
        if not policies:
            return
        for location in e.locations():
            key = self.gw.mounts.gateway_key(location)
            if key is None:
                continue
            for prefix, expr in policies:
                if key == prefix or key.startswith(prefix + "/"):
                    self.pool.submit(self._load, location, key, expr)
                    break

    def _load(self, location: str, key: str, expr: PolicyExpr) -> None:
        try:
            window = expr.newer_than()
            cutoff_ms = (time.time() - window) * 1000 if window is not None else 0
            loaded = 0
            for f in self.gw.metadata.listing(location):
                if f.mtime_ms >= cutoff_ms:
                    self.gw.manager.load_file(f"{key}/{f.path}")
                    loaded += 1
            PREFETCHED.inc(loaded)
            if loaded and expr.pin_s:
                self.gw.manager.pin(key, for_s=expr.pin_s)
            log.info("cache: pre-fetched %d files of /%s", loaded, key)
        except Exception as e:
            log.warning("cache: pre-fetching /%s failed: %s", key, e)

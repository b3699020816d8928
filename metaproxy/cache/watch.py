"""The gateway's watch over what it reads from: is each UFS answering, and what changed on-prem.

* :class:`UfsHealth` — one verdict per UFS root (``hdfs://nn:8020``, ``s3://bucket``), kept by a
  probe of each mount member every ``probe_interval`` that may wait at most ``probe_timeout``:
  an HDFS that stops answering (down, or frozen with its port open) is known in seconds. While
  a UFS is down, the gateway serves what it has cached — listings, statuses, blocks — for
  ``stale_if_error``, and fails the rest at once (503) instead of after a long timeout.
* :class:`EventRefresher` — a subscriber of the metastore's notification log
  (:mod:`metaproxy.events`): an ``INSERT``, ``ADD_PARTITION`` or ``ALTER_*`` event drops the
  listings and statuses under the locations it names, so the next read sees the change at once
  instead of after ``stale_after``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import Counter, Gauge

from metaproxy.events import DATA_EVENTS, Event
from metaproxy.uri import split_uri

log = logging.getLogger("metaproxy.gateway")

UFS_UP = Gauge("metaproxy_gateway_ufs_up", "1 while a UFS answers the gateway's probe", ["ufs"])
EVENT_REFRESHES = Counter(
    "metaproxy_gateway_event_refreshes", "Listings and statuses dropped because an event named them"
)


def root_of(uri: str) -> str:
    """``scheme://authority`` of a UFS URI (what one verdict covers)."""
    parts = split_uri(uri)
    return f"{parts[0]}://{parts[1]}" if parts else uri


class UfsHealth:
    """Which UFS roots are not answering, and since when."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, tuple[float, float, str]] = {}  # root → (monotonic, wall, reason)

    def down_since(self, uri: str) -> float | None:
        """When the UFS holding ``uri`` stopped answering (monotonic), None while it answers."""
        with self._lock:
            hit = self._down.get(root_of(uri))
        return hit[0] if hit else None

    def failed(self, root: str, reason: str) -> None:
        with self._lock:
            if root not in self._down:
                self._down[root] = (time.monotonic(), time.time(), reason)
                log.warning("gateway: %s is not answering: %s", root, reason)
        UFS_UP.labels(root).set(0)

    def ok(self, root: str) -> None:
        with self._lock:
            gone = self._down.pop(root, None)
        if gone is not None:
            log.warning("gateway: %s answers again after %.1fs", root, time.monotonic() - gone[0])
        UFS_UP.labels(root).set(1)

    def describe(self, uri: str) -> str:
        with self._lock:
            hit = self._down.get(root_of(uri))
        if hit is None:
            return f"{root_of(uri)} answers"
        return f"{root_of(uri)} has not answered for {time.monotonic() - hit[0]:.0f}s ({hit[2]})"

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {root: {"down_since": wall, "reason": why} for root, (_, wall, why) in self._down.items()}


def probe_loop(
    roots: Callable[[], Iterable[tuple[str, str]]],
    probe: Callable[[str], None],
    health: UfsHealth,
    interval_s: float,
    stop: threading.Event,
) -> None:
    """Every ``interval_s``: ``probe(uri)`` one URI of each UFS root (``roots()`` gives (root,
    uri) pairs); a probe that raises marks its root down, one that returns marks it up."""
    while not stop.wait(interval_s):
        for root, uri in roots():
            try:
                probe(uri)
            except Exception as e:
                health.failed(root, f"{type(e).__name__}: {e}")
            else:
                health.ok(root)


class EventRefresher:
    """Drops the gateway's listings and statuses under the locations data events name."""

    def __init__(
        self, forget_under: Callable[[str], int], on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.forget_under = forget_under
        self.on_event = on_event

    def events(self, batch: list[Event]) -> None:
        for e in batch:
            if e.type not in DATA_EVENTS:
                continue
            for location in e.locations():
                n = self.forget_under(location)
                if n:
                    EVENT_REFRESHES.inc(n)
            if self.on_event is not None:
                self.on_event(e)

    def lost(self) -> None:
        """Events were lost: nothing says which listings changed; ``stale_after`` bounds them."""
        log.warning("gateway: notification events were lost; listings age out after stale_after")

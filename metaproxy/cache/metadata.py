"""What the gateway knows about UFS files without asking: statuses and directory listings,
each fresh for ``stale_after`` (the consistency bound), and a refresher that re-lists the
listings engines keep using before they go stale.

A file's status is re-read once older than the bound, and blocks are keyed by the version a
status names, so a rewritten file is never served from old blocks. An engine lists a
directory, then reads its files: the statuses a listing brings are kept as fresh ones, since
across a slow link a second round trip per file is what stating each one again would cost.
A write through the gateway drops what it may have changed, and bumps a generation so no
listing fetched before it is stored after it; so does an event of the metastore's notification
log that names a location (:meth:`MetadataCache.forget_under`).

While the UFS holding a URI does not answer (:class:`~metaproxy.cache.watch.UfsHealth`), what
is known of it is served as it is, for ``stale_if_error``; what is not known fails at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import replace

from metaproxy.cache.metrics import LISTING_REFRESHES, STALE_AGE, STALE_SERVED
from metaproxy.cache.watch import UfsHealth
from metaproxy.ufs import FileStatus, Ufs, UfsUnavailable

log = logging.getLogger("metaproxy.gateway")

#: directory listings kept (each for at most ``stale_after``)
MAX_LISTINGS = 10_000
#: at most this many listings are kept fresh in the background (the most recently served)
MAX_REFRESHED_LISTINGS = 2048


class MetadataCache:
    """Statuses and listings of UFS URIs, with a bound on their age."""

    def __init__(
        self,
        ufs: Ufs,
        stale_after_s: float,
        refresh_listings_for_s: float,
        pool: Executor,
        health: UfsHealth | None = None,
        stale_if_error_s: float = 0.0,
    ) -> None:
        self.ufs = ufs
        self.health = health or UfsHealth()
        self.stale_if_error_s = stale_if_error_s
        self.stale_after_s = stale_after_s
        self.refresh_listings_for_s = refresh_listings_for_s
        self.pool = pool
        self._lock = threading.Lock()
        #: UFS URI → (taken, status)
        self._statuses: dict[str, tuple[float, FileStatus]] = {}
        #: UFS URI of a directory → (taken, its files, paths relative to it)
        self._listings: OrderedDict[str, tuple[float, list[FileStatus]]] = OrderedDict()
        #: when each listing was last served (for the background refresh), and those being re-read
        self._served: OrderedDict[str, float] = OrderedDict()
        self._refreshing: set[str] = set()
        self._generation = 0
        #: statuses and listings served stale (their UFS not answering), the last one's age
        self.stale_served = 0
        self.last_stale_age_s: float | None = None

    # -- statuses ---------------------------------------------------------------------------

    def fresh_status(self, uri: str) -> FileStatus | None:
        """The status of ``uri`` if one within the bound is known (no UFS call), else None."""
        with self._lock:
            known = self._statuses.get(uri)
        if known is None or time.monotonic() - known[0] >= self.stale_after_s:
            return None
        return known[1]

    def status(self, uri: str) -> FileStatus:
        """A file's status, re-read from the UFS once older than the bound."""
        hit = self.fresh_status(uri)
        if hit is not None:
            return hit
        with self._lock:
            known = self._statuses.get(uri)
        now = time.monotonic()
        try:
            self._up_or_fail(uri, known is not None)
            st = self.ufs.stat(uri)
        except UfsUnavailable:
            if known is not None and self._may_serve_stale(uri, now):
                self._served_stale("status", known[0])
                return known[1]
            raise
        with self._lock:
            self._statuses[uri] = (now, st)
        return st

    def _up_or_fail(self, uri: str, known: bool) -> None:
        """Fail at once (not after a timeout) when the UFS holding ``uri`` is known to be down."""
        if self.health.down_since(uri) is not None:
            raise UfsUnavailable(self.health.describe(uri) + ("" if known else f"; {uri} is not cached"))

    def _served_stale(self, what: str, taken: float) -> None:
        age = time.monotonic() - taken
        with self._lock:
            self.stale_served += 1
            self.last_stale_age_s = age
        STALE_SERVED.labels(what).inc()
        STALE_AGE.set(age)

    def _may_serve_stale(self, uri: str, failed_at: float) -> bool:
        since = self.health.down_since(uri) or failed_at
        return self.stale_if_error_s > 0 and time.monotonic() - since <= self.stale_if_error_s

    def forget(self, uris: Iterable[str]) -> None:
        """A write changed these files: drop their statuses and every listing."""
        with self._lock:
            self._listings.clear()
            self._generation += 1
            for uri in uris:
                self._statuses.pop(uri, None)

    # -- listings ---------------------------------------------------------------------------

    def listing(self, uri: str) -> list[FileStatus]:
        """Every file below a UFS directory, re-listed once older than the bound."""
        now = time.monotonic()
        with self._lock:
            hit = self._listings.get(uri)
            gen = self._generation
            if self.refresh_listings_for_s > 0:
                self._served[uri] = now
                self._served.move_to_end(uri)
                while len(self._served) > MAX_LISTINGS:
                    self._served.popitem(last=False)
        if hit is not None and now - hit[0] < self.stale_after_s:
            return hit[1]
        try:
            self._up_or_fail(uri, hit is not None)
            return self._relist(uri, gen)
        except UfsUnavailable:
            if hit is not None and self._may_serve_stale(uri, now):
                self._served_stale("listing", hit[0])
                return hit[1]
            raise

    def forget_under(self, location: str) -> int:
        """Something changed at ``location``: drop the listings that contain it or lie below it,
        and the statuses below it; how many were dropped."""
        loc = location.rstrip("/")

        def related(uri: str) -> bool:
            u = uri.rstrip("/")
            return u == loc or u.startswith(loc + "/") or loc.startswith(u + "/")

        with self._lock:
            self._generation += 1
            listings = [u for u in self._listings if related(u)]
            for u in listings:
                del self._listings[u]
            statuses = [u for u in self._statuses if u == loc or u.startswith(loc + "/")]
            for u in statuses:
                del self._statuses[u]
        return len(listings) + len(statuses)

    def _relist(self, uri: str, gen: int) -> list[FileStatus]:
        started = time.monotonic()  # the listing is as old as the request that fetched it
        files = self.ufs.list_files(uri)
        base = uri.rstrip("/")
        with self._lock:
            if gen != self._generation:  # a write since: this listing may predate it
                return files
            self._listings[uri] = (started, files)
            self._listings.move_to_end(uri)
            while len(self._listings) > MAX_LISTINGS:
                self._listings.popitem(last=False)
            for f in files:
                full = f"{base}/{f.path}"
                self._statuses[full] = (started, replace(f, path=full))
        return files

    def refresh_listings(self) -> int:
        """Start re-listing, on the pool, the listings served within ``refresh_listings_for``
        that are past three quarters of their freshness; returns how many. A served listing is
        never older than the bound either way — this only takes round trips off the query path."""
        if self.refresh_listings_for_s <= 0:
            return 0
        now = time.monotonic()
        due: list[str] = []
        with self._lock:
            gen = self._generation
            for uri, served in reversed(self._served.items()):  # most recent first
                if now - served > self.refresh_listings_for_s or len(due) >= MAX_REFRESHED_LISTINGS:
                    break
                hit = self._listings.get(uri)
                # about to go stale; one already stale is the next reader's to re-list
                if (
                    uri not in self._refreshing
                    and hit is not None
                    and 0.75 <= (now - hit[0]) / self.stale_after_s < 1
                    and self.health.down_since(uri) is None  # it would only wait for a timeout
                ):
                    due.append(uri)
            while self._served:  # forget what has not been served for a while
                oldest, served = next(iter(self._served.items()))
                if now - served <= self.refresh_listings_for_s:
                    break
                del self._served[oldest]
            self._refreshing.update(due)
        for uri in due:
            try:
                self.pool.submit(self._refresh_one, uri, gen)
            except RuntimeError:  # shutting down
                with self._lock:
                    self._refreshing.discard(uri)
        return len(due)

    def _refresh_one(self, uri: str, gen: int) -> None:
        try:
            self._relist(uri, gen)
            LISTING_REFRESHES.labels("ok").inc()
        except Exception as e:  # the listing simply goes stale: a reader re-lists it and sees why
            LISTING_REFRESHES.labels("failed").inc()
            log.debug("gateway: background re-listing of %s failed: %s", uri, e)
        finally:
            with self._lock:
                self._refreshing.discard(uri)

    def run_refresher(self, stop: threading.Event) -> None:
        """Look for listings to refresh eight times per freshness period (so each is re-read at
        75–87.5 % of its life) until ``stop`` is set."""
        every = max(0.05, self.stale_after_s / 8)
        while not stop.wait(every):
            try:
                self.refresh_listings()
            except Exception as e:
                log.warning("gateway: listing refresh failed: %s", e)

"""Cache management: load, pin, unpin, free and TTLs — what ``metaproxy cache`` asks a gateway.

A target is a mount path (``/tpcds/x``), a UFS URI under a mount, or a gateway location
(``s3://<bucket>/…``); it names one file or every file below a directory. Pins and TTLs are
kept by path prefix in the state DB, so they survive a restart and cover file versions that
appear later; the block cache itself pins and frees by file *version*. This module keeps the
map between the two: which versions this process has cached, under which key, since when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from metaproxy.cache import s3api
from metaproxy.cache.blocks import BlockCache
from metaproxy.cache.files import FileSource, Resolved
from metaproxy.state.cache import PIN, PIN_UNTIL, TTL, cache_rules, save_cache_rule
from metaproxy.ufs import UfsError

log = logging.getLogger("metaproxy.cache")


class ManagementError(ValueError):
    """A cache management request that cannot be carried out (a bad path, the pin cap)."""


def under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix.rstrip("/") + "/")


def under_any(key: str, prefixes: Iterable[str]) -> bool:
    return any(under(key, p) for p in prefixes)


def ttl_for(key: str, ttls: dict[str, float]) -> float | None:
    """The TTL of the longest TTL'd prefix of a key."""
    best: tuple[int, float] | None = None
    for p, ttl in ttls.items():
        if under(key, p) and (best is None or len(p) > best[0]):
            best = (len(p), ttl)
    return best[1] if best else None


def _release(f: Any) -> None:
    """Done-callback for a future of a lease: close it (a failure is only consumed)."""
    if not f.cancelled() and f.exception() is None:
        f.result().close()


class CacheManager:
    def __init__(self, gw: FileSource, cache: BlockCache) -> None:
        self.gw = gw
        self.cache = cache
        self._lock = threading.Lock()
        #: file versions this process has cached: digest → (gateway key, first cached, wall clock)
        self._versions: dict[str, tuple[str, float]] = {}
        #: pinned and TTL'd path prefixes (gateway keys), persisted in the state DB
        self.pins: dict[str, float] = {}
        self.ttls: dict[str, float] = {}
        #: pins that end (pre-fetched files pinned for a while): key → when, wall clock
        self.pin_until: dict[str, float] = {}

    def load_rules(self) -> None:
        """Read the pins and TTLs from the state DB; re-pin in the background."""
        try:
            rules = cache_rules(self.gw.db)
            self.pins, self.ttls, self.pin_until = rules[PIN], rules[TTL], rules[PIN_UNTIL]
        except Exception as e:
            log.warning("could not load cache pins and TTLs: %s", e)
        if self.pins:
            threading.Thread(target=self._repin, name="cache-repin", daemon=True).start()

    def rules(self) -> dict[str, Any]:
        return {
            "pins": sorted(self.pins),
            "ttls": dict(sorted(self.ttls.items())),
            "pins_until": dict(sorted(self.pin_until.items())),
        }

    # -- versions ---------------------------------------------------------------------------

    def note_version(self, r: Resolved) -> None:
        """A version of a file is being cached: remember it, and pin it if its path is pinned."""
        digest = r.digest
        if digest in self._versions:
            return
        with self._lock:
            self._versions.setdefault(digest, (r.key, time.time()))
        if self.pins and under_any(r.key, self.pins) and not self.cache.is_pinned(digest):
            self._pin_version(r)

    def _versions_under(self, key: str) -> set[str]:
        with self._lock:
            return {d for d, (k, _) in self._versions.items() if under(k, key)}

    def _repin(self) -> None:
        """Pins survive a restart: mark the current versions of pinned paths again."""
        for path in list(self.pins):
            try:
                for r in self.files_under(path):
                    self._pin_version(r)
            except Exception as e:
                log.warning("could not re-pin %s: %s", path, e)

    def _pin_version(self, r: Resolved) -> bool:
        cap = self.gw.config.gateway.pinned_max
        if self.cache.pinned_bytes + r.status.length > cap:
            log.warning("cache: not pinning %s: the pinned bytes would pass the cap (%d)", r.key, cap)
            return False
        self.cache.pin(r.digest, r.status.length)
        return True

    # -- targets ----------------------------------------------------------------------------

    def target_key(self, target: str) -> str:
        """A management target as a gateway key. Raises :class:`ManagementError`."""
        mounts = self.gw.mounts
        t = target.strip()
        if "://" in t:
            if (
                t.lower().startswith(("s3://", "s3a://"))
                and t.split("://", 1)[1].split("/", 1)[0] == self.gw.config.gateway.bucket
            ):
                key = t.split("://", 1)[1].partition("/")[2].strip("/")
            else:
                found = mounts.gateway_key(t.rstrip("/"))
                if found is None:
                    raise ManagementError(f"{target!r} is under no mount")
                key = found
        else:
            key = t.strip("/")
        if not key or mounts.resolve_key(key) is None:
            raise ManagementError(f"{target!r} is under no mount (mounts: {[m.path for m in mounts]})")
        return key

    def files_under(self, target: str) -> list[Resolved]:
        """Every file a target names (the file itself, or all files below a directory), each
        from the member that serves it in read priority."""
        key = self.target_key(target)
        hit = self.gw.mounts.resolve_key(key)
        assert hit is not None
        mount, rest = hit
        if rest:
            try:
                return [self.gw.resolve(key)]
            except s3api.NoSuchKey:
                pass
        found: dict[str, Resolved] = {}
        for member in reversed(mount.read_priority):  # earlier priority wins
            uri = self.gw.mounts.ufs_location(mount, rest, member)
            for f in self.gw.ufs.list_files(uri):
                k = f"{key}/{f.path}"
                full = f"{uri}/{f.path}"
                found[k] = Resolved(mount, full, replace(f, path=full), k)
        return [found[k] for k in sorted(found)]

    def _files_quietly(self, key: str) -> list[Resolved]:
        try:
            return self.files_under(key)
        except (UfsError, ManagementError) as e:
            log.warning("cache: could not list %s: %s", key, e)
            return []

    # -- commands ---------------------------------------------------------------------------

    def plan(self, target: str) -> dict[str, Any]:
        """The files a target names, with their size and how much of each is cached."""
        self.cache.flush()
        return {
            "key": self.target_key(target),
            "files": [
                {
                    "key": r.key,
                    "uri": r.ufs_uri,
                    "length": r.status.length,
                    "cached": self.cache.cached_bytes(r.digest),
                }
                for r in self.files_under(target)
            ],
        }

    def load_file(self, key: str) -> dict[str, Any]:
        """Read every block of one file into the cache; returns bytes fetched and already cached."""
        try:
            r = self.gw.resolve(self.target_key(key))
        except s3api.NoSuchKey:
            raise ManagementError(f"{key!r}: no such file") from None
        before = self.cache.cached_bytes(r.digest)
        n = (r.status.length + self.cache.block_size - 1) // self.cache.block_size
        futures = [self.gw.pool.submit(self.gw.block, r, i) for i in range(n)]
        for f in futures:
            f.add_done_callback(_release)
        for f in futures:
            f.result()
        return {
            "key": r.key,
            "length": r.status.length,
            "already_cached": before,
            "fetched": r.status.length - before,
        }

    def pin(self, target: str, for_s: float | None = None) -> dict[str, Any]:
        """Pin what ``target`` names (for ``for_s`` seconds, or until unpinned)."""
        key = self.target_key(target)
        files = self.files_under(key)
        new = [r for r in files if not self.cache.is_pinned(r.digest)]
        need = sum(r.status.length for r in new)
        cap = self.gw.config.gateway.pinned_max
        have = self.cache.pinned_bytes
        if have + need > cap:
            raise ManagementError(
                f"pinning /{key} needs {need} bytes; {have} of the {cap} allowed ([gateway] pinned_max) are pinned already"
            )
        for r in new:
            self.cache.pin(r.digest, r.status.length)
        self.pins[key] = time.time()
        save_cache_rule(self.gw.db, PIN, key, self.pins[key])
        if for_s is not None:
            self.pin_until[key] = max(self.pin_until.get(key, 0.0), time.time() + for_s)
            save_cache_rule(self.gw.db, PIN_UNTIL, key, self.pin_until[key])
        return {"key": key, "files": len(files), "pinned_bytes": self.cache.pinned_bytes}

    def unpin(self, target: str) -> dict[str, Any]:
        key = self.target_key(target)
        removed = self.pins.pop(key, None) is not None
        save_cache_rule(self.gw.db, PIN, key, None)
        if self.pin_until.pop(key, None) is not None:
            save_cache_rule(self.gw.db, PIN_UNTIL, key, None)
        n = 0
        digests = self._versions_under(key) | {r.digest for r in self._files_quietly(key)}
        for d in digests:
            if self.cache.is_pinned(d) and not under_any(self._versions.get(d, (key, 0))[0], self.pins):
                self.cache.unpin(d)
                n += 1
        return {
            "key": key,
            "was_pinned": removed,
            "files_unpinned": n,
            "pinned_bytes": self.cache.pinned_bytes,
        }

    def free(self, target: str) -> dict[str, Any]:
        key = self.target_key(target)
        self.cache.flush()
        digests = self._versions_under(key) | {r.digest for r in self._files_quietly(key)}
        freed, kept = self._free_versions(digests)
        return {"key": key, "freed_bytes": freed, "pinned_files_kept": kept}

    def _free_versions(self, digests: set[str]) -> tuple[int, int]:
        """Free file versions (pinned ones stay) and forget them; returns (bytes, pinned kept)."""
        pinned = {d for d in digests if self.cache.is_pinned(d)}
        freed = self.cache.free(digests)
        with self._lock:
            for d in digests - pinned:
                self._versions.pop(d, None)
        return freed, len(pinned)

    def set_ttl(self, target: str, ttl_s: float | None) -> dict[str, Any]:
        key = self.target_key(target)
        if ttl_s is None:
            self.ttls.pop(key, None)
        else:
            if ttl_s <= 0:
                raise ManagementError("a TTL must be positive")
            self.ttls[key] = ttl_s
        save_cache_rule(self.gw.db, TTL, key, ttl_s)
        return {"key": key, "ttl_s": ttl_s}

    def expire(self, now: float | None = None) -> int:
        """Free the cached versions whose path has a TTL they have outlived; returns bytes.

        The clock of a version starts when this gateway process first caches it.
        """
        now = time.time() if now is None else now
        for key, until in list(self.pin_until.items()):
            if until <= now:
                log.info("cache: the pin of /%s ends", key)
                self.unpin(key)
        if not self.ttls:
            return 0
        with self._lock:
            due = {
                d
                for d, (k, since) in self._versions.items()
                if (ttl := ttl_for(k, self.ttls)) is not None and now - since >= ttl
            }
        if not due:
            return 0
        freed, kept = self._free_versions(due)
        if freed:
            log.info("cache: TTL freed %d bytes of %d file versions", freed, len(due) - kept)
        return freed

"""The gateway: an S3-compatible HTTP endpoint serving mounted UFS files from the block cache.

Object keys are ``<mount>/<rest of the path>`` in the configured gateway bucket (path-style
addressing: ``/<bucket>/<key>``). Every request must carry a valid AWS Signature V4. Reads go
through the :class:`~metaproxy.cache.blocks.BlockCache`; a file's status is re-read from its
UFS once it is older than ``stale_after`` (the consistency bound), and blocks are keyed by the
version, so a rewritten file is never served from old blocks.

The data path of a ranged GET, on one event loop:

* blocks in the memory tier are leased (a descriptor of their sealed memory file) and go to the
  socket with ``sendfile`` — no copy through Python; pieces under ``SENDFILE_MIN`` are written;
* missing blocks are claimed as runs: each run of consecutive misses is one streamed UFS read on
  the I/O pool, and the loop awaits each block's flight without holding a thread;
* a reader that continues its previous read gets read-ahead, as a continuation of its own run
  first, then as runs that double (up to ``4 × read_ahead_blocks``) while it stays sequential.

Listings served within ``refresh_listings_for`` are re-read in the background before they go
stale, so engines that list the same partitions query after query wait no round trip for them.

UFS failures become ``503 SlowDown`` (clients retry), a missing file ``404 NoSuchKey``, a
key outside every mount ``404 NoSuchKey`` without touching any UFS.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from aiohttp import web
from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from metaproxy.cache import s3api
from metaproxy.cache.blocks import (
    BlockCache,
    BlockKey,
    BlockShort,
    Lease,
    Stream,
    version_digest,
)
from metaproxy.config import Config
from metaproxy.mounts import Mount, MountTable, load_mount_table, scheme_of
from metaproxy.ufs import FileStatus, UfsError, UfsNotFound, UfsUnavailable
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path

log = logging.getLogger("metaproxy.gateway")

REQUESTS = Counter("metaproxy_gateway_requests", "S3 requests to the gateway", ["op", "status"])
BYTES = Counter("metaproxy_gateway_bytes_served", "Bytes served by the gateway", ["mount"])
#: how often read times (for ``unusedFor`` policies) are written to the state DB
READS_FLUSH_S = 5.0
#: bytes handed to the transport at a time when sending a block
WRITE_SLICE = 1024 * 1024
#: the largest single PutObject body accepted (held in memory while it is checked and written)
MAX_PUT = 256 * 1024 * 1024
#: directory listings kept (each for at most ``stale_after``)
MAX_LISTINGS = 10_000
#: request ids: this process's random prefix and a counter (unique, and cheaper than a UUID each)
_RID_PREFIX = uuid.uuid4().hex[:8]
_request_numbers = itertools.count()
#: pieces smaller than this are written from a copy: sendfile's hand-over of the connection
#: costs more than copying a Parquet footer
SENDFILE_MIN = 128 * 1024
#: at most this many listings are kept fresh in the background (the most recently served)
MAX_REFRESHED_LISTINGS = 2048
UFS_CALLS = Counter("metaproxy_gateway_ufs_calls", "Calls the gateway made to a UFS", ["ufs", "op"])
READ_AHEAD = Counter("metaproxy_gateway_read_ahead_blocks", "Blocks fetched ahead of sequential readers")
LISTING_REFRESHES = Counter(
    "metaproxy_gateway_listing_refreshes",
    "Listings re-read in the background before going stale",
    ["outcome"],
)


class ManagementError(ValueError):
    """A cache management request that cannot be carried out (a bad path, the pin cap)."""


@dataclass
class Resolved:
    """A gateway key resolved to the UFS file serving it."""

    mount: Mount
    ufs_uri: str
    status: FileStatus
    key: str = ""  # the gateway key: ``<mount name>/<rest>``

    @property
    def digest(self) -> str:
        return version_digest(self.ufs_uri, self.status.length, self.status.mtime_ms)


class _S3Stream:
    """An S3 object body read into caller-owned buffers (botocore hands out bytes: one copy)."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readinto(self, buf: memoryview, /) -> int:
        import botocore.exceptions

        try:
            data = self._body.read(len(buf))
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise UfsUnavailable(f"S3 GET {self._uri}: read interrupted: {e}") from e
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()


class _Counted:
    """A UFS stream that adds what it reads to the gateway's bytes-per-UFS figures."""

    def __init__(self, stream: Stream, gw: Gateway, scheme: str) -> None:
        self._stream = stream
        self._gw = gw
        self._scheme = scheme

    def readinto(self, buf: memoryview, /) -> int:
        n = self._stream.readinto(buf)
        self._gw.note_ufs_bytes(self._scheme, n)
        return n

    def close(self) -> None:
        self._stream.close()


class UfsReaders:
    """Stat, list and read on the members of a mount (HDFS through WebHDFS, S3 through boto3)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.webhdfs = WebHdfs(config.hdfs.webhdfs, config.hdfs.user, config.hdfs.timeout_s)
        self._s3: Any = None
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        with self._lock:
            if self._s3 is None:
                from metaproxy.ufs.s3 import s3_client

                self._s3 = s3_client(self.config.s3)
            return self._s3

    @staticmethod
    def _bucket_key(uri: str) -> tuple[str, str]:
        rest = uri.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        return bucket, key

    def stat(self, uri: str) -> FileStatus:
        UFS_CALLS.labels(scheme_of(uri), "stat").inc()
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                h = self.s3.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise UfsNotFound(uri) from None
                raise UfsUnavailable(f"S3 HEAD {uri}: {e}") from e
            except botocore.exceptions.BotoCoreError as e:
                raise UfsUnavailable(f"S3 HEAD {uri}: {e}") from e
            return FileStatus(uri, int(h["ContentLength"]), int(h["LastModified"].timestamp() * 1000))
        return self.webhdfs.status(hdfs_path(uri))

    def open_read(self, uri: str, start: int, length: int) -> Stream:
        """Bytes ``[start, start+length)`` as a stream (WebHDFS receives them in place)."""
        UFS_CALLS.labels(scheme_of(uri), "read").inc()
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                r = self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise UfsUnavailable(f"S3 GET {uri}: {e}") from e
            return _S3Stream(r["Body"], uri)
        return self.webhdfs.open_read(hdfs_path(uri), start, length)

    def write(self, uri: str, body: bytes) -> None:
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise UfsUnavailable(f"S3 PUT {uri}: {e}") from e
            return
        self.webhdfs.create(hdfs_path(uri), body)

    def delete(self, uri: str) -> None:
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                self.s3.delete_object(Bucket=bucket, Key=key)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise UfsUnavailable(f"S3 DELETE {uri}: {e}") from e
            return
        self.webhdfs.delete(hdfs_path(uri))

    def list_files(self, uri: str) -> list[FileStatus]:
        """Every file below a directory (recursively), with paths relative to ``uri``."""
        UFS_CALLS.labels(scheme_of(uri), "list").inc()
        if scheme_of(uri) == "s3":
            bucket, key = self._bucket_key(uri)
            prefix = key.rstrip("/") + "/" if key else ""
            out = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    out.append(
                        FileStatus(
                            o["Key"][len(prefix) :], int(o["Size"]), int(o["LastModified"].timestamp() * 1000)
                        )
                    )
            return out
        base = hdfs_path(uri).rstrip("/")
        try:
            files = self.webhdfs.walk_files(base)
        except UfsNotFound:
            return []
        return [FileStatus(f.path[len(base) + 1 :], f.length, f.mtime_ms) for f in files if f.path != base]


class Gateway:
    """The gateway's state: mounts, readers, the cache and the status cache."""

    def __init__(self, config: Config) -> None:
        self.config = config
        g = config.gateway
        self.cache = BlockCache(
            g.block_size, g.memory.capacity, g.disk.path or None, g.disk.capacity, write_behind=True
        )
        self.readers = UfsReaders(config)
        self.mounts: MountTable = load_mount_table(config, None)
        self._statuses: dict[str, tuple[float, FileStatus]] = {}
        #: directory listings, fresh for ``stale_after`` like statuses: UFS URI → (taken, files)
        self._listings: OrderedDict[str, tuple[float, list[FileStatus]]] = OrderedDict()
        #: when each listing was last served (for the background refresh), and the listings
        #: being refreshed; writes bump the generation so no listing from before one is kept
        self._listing_served: OrderedDict[str, float] = OrderedDict()
        self._refreshing: set[str] = set()
        self._listing_gen = 0
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=g.io_threads, thread_name_prefix="gateway-io")
        self.keys = {g.access_key: g.secret_key} if g.access_key and g.secret_key else {}
        self.bytes_by_mount: dict[str, int] = {}
        self.bytes_by_ufs: dict[str, int] = {}
        #: file versions this run has cached: digest → (gateway key, first cached, wall clock)
        self._versions: dict[str, tuple[str, float]] = {}
        #: pinned and TTL'd path prefixes (gateway keys), persisted in the state DB
        self.pins: dict[str, float] = {}
        self.ttls: dict[str, float] = {}
        #: where each file's last read ended, to spot sequential readers
        #: per file version: where its last read ended, and the length of its next read-ahead run
        self._last_end: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: read times not yet written to the state DB: gateway key → wall clock
        self._reads: dict[str, float] = {}
        self.refresh_mounts()
        self._load_rules()

    def note_ufs_bytes(self, scheme: str, n: int) -> None:
        """Add ``n`` bytes read from a UFS of ``scheme`` to the report's figures."""
        with self._lock:
            self.bytes_by_ufs[scheme] = self.bytes_by_ufs.get(scheme, 0) + n

    def count(self, mount: str, served: int) -> None:
        with self._lock:
            self.bytes_by_mount[mount] = self.bytes_by_mount.get(mount, 0) + served

    def report(self) -> dict[str, Any]:
        """What an operator wants to know about the cache (``metaproxy report``)."""
        self.cache.flush(5.0)
        st = self.cache.stats
        with self._lock:
            by_mount = dict(self.bytes_by_mount)
            by_ufs = dict(self.bytes_by_ufs)
        return {
            "tiers": self.cache.usage(),
            "block_size": self.cache.block_size,
            "hit_ratio": st.hit_ratio,
            "hit_ratio_definition": "bytes served from cache / bytes served",
            "bytes_from_memory": st.bytes_from_memory,
            "bytes_from_disk": st.bytes_from_disk,
            "bytes_from_ufs": st.bytes_from_ufs,
            "bytes_read_per_ufs": by_ufs,
            "bytes_served_per_mount": by_mount,
            "memory_hits": st.memory_hits,
            "disk_hits": st.disk_hits,
            "misses": st.misses,
            "evictions_memory": st.evictions_memory,
            "evictions_disk": st.evictions_disk,
            "disk_errors": st.disk_errors,
            "corrupt_blocks": st.corrupt_blocks,
            "mounts": [m.path for m in self.mounts],
            "pins": sorted(self.pins),
            "ttls": dict(sorted(self.ttls.items())),
        }

    def refresh_mounts(self) -> None:
        from metaproxy.state import open_state

        try:
            db = open_state(self.config.state_path)
            self.mounts = load_mount_table(self.config, db)
            db.conn.close()
        except Exception as e:
            log.warning("could not reload mounts: %s", e)

    def resolve(self, key: str) -> Resolved:
        """The file a key names: the first member (in read priority) that has it."""
        hit = self.mounts.resolve_key(key)
        if hit is None:
            raise s3api.NoSuchKey("no such key", key)
        mount, rest = hit
        if not rest:
            raise s3api.NoSuchKey("no such key", key)
        for member in mount.read_priority:
            uri = self.mounts.ufs_location(mount, rest, member)
            try:
                st = self.status(uri)
            except UfsNotFound:
                continue
            if st.is_dir:
                break
            return Resolved(mount, uri, st, key)
        raise s3api.NoSuchKey("no such key", key)

    def resolve_fresh(self, key: str) -> Resolved | None:
        """What :meth:`resolve` would answer, when that needs no UFS call (the first member's
        status is fresh in memory) — so a warm read is served without a thread hop; else None."""
        hit = self.mounts.resolve_key(key)
        if hit is None or not hit[1]:
            return None
        mount, rest = hit
        uri = self.mounts.ufs_location(mount, rest, mount.read_priority[0])
        with self._lock:
            known = self._statuses.get(uri)
        if (
            known is None
            or known[1].is_dir
            or time.monotonic() - known[0] >= self.config.gateway.stale_after_s
        ):
            return None
        return Resolved(mount, uri, known[1], key)

    def status(self, uri: str) -> FileStatus:
        """A file's status, re-read from the UFS once older than ``stale_after``."""
        now = time.monotonic()
        with self._lock:
            hit = self._statuses.get(uri)
        if hit is not None and now - hit[0] < self.config.gateway.stale_after_s:
            return hit[1]
        st = self.readers.stat(uri)
        with self._lock:
            self._statuses[uri] = (now, st)
        return st

    def listing(self, uri: str) -> list[FileStatus]:
        """Every file below a UFS directory, re-listed once older than ``stale_after``.

        Queries that follow each other within the bound list the same partitions; across a
        slow link each listing is a round trip. Listings in use are also re-listed in the
        background before they go stale (:meth:`refresh_listings`)."""
        now = time.monotonic()
        with self._lock:
            hit = self._listings.get(uri)
            gen = self._listing_gen
            if self.config.gateway.refresh_listings_for_s > 0:
                self._listing_served[uri] = now
                self._listing_served.move_to_end(uri)
                while len(self._listing_served) > MAX_LISTINGS:
                    self._listing_served.popitem(last=False)
        if hit is not None and now - hit[0] < self.config.gateway.stale_after_s:
            return hit[1]
        return self._relist(uri, gen)

    def _relist(self, uri: str, gen: int) -> list[FileStatus]:
        started = time.monotonic()  # the listing is as old as the request that fetched it
        files = self.readers.list_files(uri)
        with self._lock:
            if gen != self._listing_gen:  # a write since: this listing may predate it
                return files
            self._listings[uri] = (started, files)
            self._listings.move_to_end(uri)
            while len(self._listings) > MAX_LISTINGS:
                self._listings.popitem(last=False)
        self.note_listed(uri, files, started)
        return files

    def refresh_listings(self) -> int:
        """Start re-listing, on the I/O pool, the listings served within ``refresh_listings_for``
        that are past three quarters of their freshness; returns how many. A served listing is never older
        than ``stale_after`` either way — this only takes the round trips off the query path."""
        g = self.config.gateway
        if g.refresh_listings_for_s <= 0:
            return 0
        now = time.monotonic()
        due: list[str] = []
        with self._lock:
            gen = self._listing_gen
            for uri, served in reversed(self._listing_served.items()):  # most recent first
                if now - served > g.refresh_listings_for_s or len(due) >= MAX_REFRESHED_LISTINGS:
                    break
                hit = self._listings.get(uri)
                # about to go stale; one already stale is the next reader's to re-list
                if (
                    uri not in self._refreshing
                    and hit is not None
                    and 0.75 <= (now - hit[0]) / g.stale_after_s < 1
                ):
                    due.append(uri)
            while self._listing_served:  # forget what has not been served for a while
                oldest, served = next(iter(self._listing_served.items()))
                if now - served <= g.refresh_listings_for_s:
                    break
                del self._listing_served[oldest]
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

    def note_listed(self, base_uri: str, files: list[FileStatus], now: float | None = None) -> None:
        """Keep the statuses a listing brought as fresh ones (as of ``now``, when the listing was
        requested): an engine lists a directory, then reads its files, and across a slow link a
        second round trip per file is what it would cost to stat each one again."""
        now = time.monotonic() if now is None else now
        base = base_uri.rstrip("/")
        s3 = scheme_of(base_uri) == "s3"
        with self._lock:
            for f in files:
                uri = f"{base}/{f.path}"
                path = uri if s3 else hdfs_path(uri)
                self._statuses[uri] = (now, FileStatus(path, f.length, f.mtime_ms))

    def block(self, r: Resolved, index: int) -> Lease:
        """A lease on one block of ``r`` (memory, disk, or the UFS); the caller closes it."""
        key = BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, index)
        self._note_version(r, key.digest)

        return self.cache.open(key, open_stream=self.open_stream)

    def open_stream(self, first: BlockKey, nbytes: int) -> Stream:
        """The UFS bytes of blocks from ``first`` on (the block cache's run reader)."""
        stream = self.readers.open_read(first.path, first.index * self.cache.block_size, nbytes)
        return _Counted(stream, self, scheme_of(first.path))

    def fetch_run(self, r: Resolved, first: int, last: int) -> int:
        """Start fetching blocks ``first..last`` of ``r`` that no tier holds, each run of
        consecutive ones with a single UFS read; returns how many blocks were started. Readers
        of those blocks wait for them as for any miss."""
        keys = [BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, i) for i in range(first, last + 1)]
        if not keys:
            return 0
        self._note_version(r, keys[0].digest)
        started = 0
        for run in self.cache.claim_run(keys):
            try:
                self.pool.submit(self.cache.load_run, run, self.open_stream)
            except RuntimeError as e:  # shutting down: release the waiters
                self.cache.abandon_run(run, UfsUnavailable(f"the gateway is stopping: {e}"))
                continue
            started += len(run)
        return started

    @staticmethod
    def key(r: Resolved, index: int) -> BlockKey:
        """The cache key of block ``index`` of the version of the file ``r`` resolved to."""
        return BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, index)

    def _note_version(self, r: Resolved, digest: str) -> None:
        if digest not in self._versions:
            with self._lock:
                self._versions.setdefault(digest, (r.key, time.time()))
            if self.pins and _under_any(r.key, self.pins) and not self.cache.is_pinned(digest):
                self._pin_version(r)

    def note_read(self, key: str) -> None:
        """Remember that ``key`` was read (for ``unusedFor`` policies); flushed in batches."""
        with self._lock:
            self._reads[key] = time.time()

    def flush_reads(self) -> None:
        """Write the read times noted since the last flush to the state DB (``reads``)."""
        with self._lock:
            batch, self._reads = self._reads, {}
        if not batch:
            return
        from metaproxy.state import open_state

        db = open_state(self.config.state_path)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS reads (key TEXT PRIMARY KEY, last_read REAL NOT NULL)")
            db.conn.executemany(
                "INSERT INTO reads (key, last_read) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET last_read = max(last_read, excluded.last_read)",
                list(batch.items()),
            )
        finally:
            db.conn.close()

    def put_object(self, mount: Mount, rest: str, uri: str, body: bytes) -> FileStatus:
        """Write one object to the mount's create target; later reads see it at once."""
        self.readers.write(uri, body)
        self._forget_status(mount, rest)
        return self.status(uri)

    def delete_object(self, mount: Mount, rest: str, uri: str) -> None:
        """Delete an object's copy on the create target (other members are never touched)."""
        self.readers.delete(uri)
        self._forget_status(mount, rest)

    def _forget_status(self, mount: Mount, rest: str) -> None:
        with self._lock:
            self._listings.clear()  # a write changes some directory's listing
            self._listing_gen += 1
            for member in mount.read_priority:
                self._statuses.pop(self.mounts.ufs_location(mount, rest, member), None)

    def cached_block(self, r: Resolved, index: int) -> Lease | None:
        """A lease on a block of ``r`` if it is in the memory tier (no UFS read, no waiting)."""
        return self.cache.open_cached(BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, index))

    def sequential_ahead(self, r: Resolved, start: int, end: int) -> int:
        """Note a read of ``[start, end)``; how many blocks past its end to read ahead: the
        configured number if it continues the previous read of this file, else none."""
        n = self.config.gateway.read_ahead_blocks
        if n <= 0 or end >= r.status.length:
            return 0
        with self._lock:
            last_end, run = self._last_end.get(r.digest, (-1, n))
            sequential = last_end == start
            self._last_end[r.digest] = (end, run if sequential else n)
            self._last_end.move_to_end(r.digest)
            while len(self._last_end) > 4096:
                self._last_end.popitem(last=False)
        return n if sequential else 0

    def take_ramp(self, r: Resolved) -> int:
        """The length of the next read-ahead run for a sequential reader of ``r``, and double it
        for the one after (up to ``4 × read_ahead_blocks``): a long scan becomes a few streams
        that barely overlap instead of many short ones."""
        n = self.config.gateway.read_ahead_blocks
        with self._lock:
            last_end, run = self._last_end.get(r.digest, (-1, n))
            if r.digest in self._last_end:
                self._last_end[r.digest] = (last_end, min(4 * n, 2 * run))
        return run

    def fetch_ahead(self, r: Resolved, end: int, n: int) -> None:
        """Read ahead from offset ``end``: the first of the next ``n`` blocks that nobody holds
        or fetches starts a run (of :meth:`take_ramp` blocks) — one UFS round trip per run,
        not per block or two."""
        bs = self.cache.block_size
        first = (end + bs - 1) // bs
        final = (r.status.length - 1) // bs
        for i in range(first, min(final, first + n - 1) + 1):
            key = self.key(r, i)
            if not self.cache.contains(key) and self.cache.in_flight(key) is None:
                # a read-ahead that fails costs nothing: a reader of its blocks fetches them again
                READ_AHEAD.inc(self.fetch_run(r, i, min(final, i + self.take_ramp(r) - 1)))
                return

    # -- management: load, pin, unpin, free, TTL ------------------------------------------

    def _rules_db(self) -> Any:
        from metaproxy.state import open_state

        db = open_state(self.config.state_path)
        if "cache_rules" not in db.table_names():
            db.table("cache_rules").create({"kind": str, "path": str, "value": float}, pk=("kind", "path"))
        return db

    def _load_rules(self) -> None:
        try:
            db = self._rules_db()
            try:
                for row in db.table("cache_rules").rows:
                    (self.pins if row["kind"] == "pin" else self.ttls)[row["path"]] = float(row["value"])
            finally:
                db.conn.close()
        except Exception as e:
            log.warning("could not load cache pins and TTLs: %s", e)
        if self.pins:
            threading.Thread(target=self._repin, name="cache-repin", daemon=True).start()

    def _save_rule(self, kind: str, path: str, value: float | None) -> None:
        db = self._rules_db()
        try:
            if value is None:
                db.execute("DELETE FROM cache_rules WHERE kind = ? AND path = ?", [kind, path])
            else:
                db.table("cache_rules").upsert(
                    {"kind": kind, "path": path, "value": value}, pk=("kind", "path")
                )
        finally:
            db.conn.close()

    def _repin(self) -> None:
        """Pins survive a restart: mark the current versions of pinned paths again."""
        for path in list(self.pins):
            try:
                for r in self.files_under(path):
                    self._pin_version(r)
            except Exception as e:
                log.warning("could not re-pin %s: %s", path, e)

    def _pin_version(self, r: Resolved) -> bool:
        cap = self.config.gateway.pinned_max
        if self.cache.pinned_bytes + r.status.length > cap:
            log.warning("cache: not pinning %s: the pinned bytes would pass the cap (%d)", r.key, cap)
            return False
        self.cache.pin(r.digest, r.status.length)
        return True

    def target_key(self, target: str) -> str:
        """A management target — a mount path (``/tpcds/x``), a UFS URI, or a gateway
        location (``s3://<bucket>/…``) — as a gateway key. Raises ManagementError."""
        t = target.strip()
        if "://" in t:
            if (
                t.lower().startswith(("s3://", "s3a://"))
                and t.split("://", 1)[1].split("/", 1)[0] == self.config.gateway.bucket
            ):
                key = t.split("://", 1)[1].partition("/")[2].strip("/")
            else:
                found = self.mounts.gateway_key(t.rstrip("/"))
                if found is None:
                    raise ManagementError(f"{target!r} is under no mount")
                key = found
        else:
            key = t.strip("/")
        if not key or self.mounts.resolve_key(key) is None:
            raise ManagementError(f"{target!r} is under no mount (mounts: {[m.path for m in self.mounts]})")
        return key

    def files_under(self, target: str) -> list[Resolved]:
        """Every file a target names (the file itself, or all files below a directory), each
        from the member that serves it in read priority."""
        key = self.target_key(target)
        hit = self.mounts.resolve_key(key)
        assert hit is not None
        mount, rest = hit
        if rest:
            try:
                return [self.resolve(key)]
            except s3api.NoSuchKey:
                pass
        found: dict[str, Resolved] = {}
        for member in reversed(mount.read_priority):  # earlier priority wins
            uri = self.mounts.ufs_location(mount, rest, member)
            for f in self.readers.list_files(uri):
                k = f"{key}/{f.path}"
                found[k] = Resolved(
                    mount, f"{uri}/{f.path}", FileStatus(f"{uri}/{f.path}", f.length, f.mtime_ms), k
                )
        return [found[k] for k in sorted(found)]

    def plan(self, target: str) -> dict[str, Any]:
        """The files a target names, with their size and how much of each is cached."""
        self.cache.flush()
        files = self.files_under(target)
        return {
            "key": self.target_key(target),
            "files": [
                {
                    "key": r.key,
                    "uri": r.ufs_uri,
                    "length": r.status.length,
                    "cached": self.cache.cached_bytes(r.digest),
                }
                for r in files
            ],
        }

    def load_file(self, key: str) -> dict[str, Any]:
        """Read every block of one file into the cache; returns bytes fetched and already cached."""
        try:
            r = self.resolve(self.target_key(key))
        except s3api.NoSuchKey:
            raise ManagementError(f"{key!r}: no such file") from None
        before = self.cache.cached_bytes(r.digest)
        n = (r.status.length + self.cache.block_size - 1) // self.cache.block_size
        futures = [self.pool.submit(self.block, r, i) for i in range(n)]
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

    def pin(self, target: str) -> dict[str, Any]:
        key = self.target_key(target)
        files = self.files_under(key)
        new = [r for r in files if not self.cache.is_pinned(r.digest)]
        need = sum(r.status.length for r in new)
        cap = self.config.gateway.pinned_max
        have = self.cache.pinned_bytes
        if have + need > cap:
            raise ManagementError(
                f"pinning /{key} needs {need} bytes; {have} of the {cap} allowed ([gateway] pinned_max) are pinned already"
            )
        for r in new:
            self.cache.pin(r.digest, r.status.length)
        self.pins[key] = time.time()
        self._save_rule("pin", key, self.pins[key])
        return {"key": key, "files": len(files), "pinned_bytes": self.cache.pinned_bytes}

    def unpin(self, target: str) -> dict[str, Any]:
        key = self.target_key(target)
        removed = self.pins.pop(key, None) is not None
        self._save_rule("pin", key, None)
        n = 0
        with self._lock:
            versions = [d for d, (k, _) in self._versions.items() if _under(k, key)]
        digests = set(versions) | {r.digest for r in self._files_quietly(key)}
        for d in digests:
            if self.cache.is_pinned(d) and not _under_any(self._versions.get(d, (key, 0))[0], self.pins):
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
        with self._lock:
            digests = {d for d, (k, _) in self._versions.items() if _under(k, key)}
        digests |= {r.digest for r in self._files_quietly(key)}
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
        self._save_rule("ttl", key, ttl_s)
        return {"key": key, "ttl_s": ttl_s}

    def rules(self) -> dict[str, Any]:
        return {"pins": sorted(self.pins), "ttls": dict(sorted(self.ttls.items()))}

    def expire(self, now: float | None = None) -> int:
        """Free the cached versions whose path has a TTL they have outlived; returns bytes.

        The clock of a version starts when this gateway process first caches it.
        """
        if not self.ttls:
            return 0
        now = time.time() if now is None else now
        with self._lock:
            due = {
                d
                for d, (k, since) in self._versions.items()
                if (ttl := _ttl_for(k, self.ttls)) is not None and now - since >= ttl
            }
        if not due:
            return 0
        freed, kept = self._free_versions(due)
        if freed:
            log.info("cache: TTL freed %d bytes of %d file versions", freed, len(due) - kept)
        return freed

    def _files_quietly(self, key: str) -> list[Resolved]:
        try:
            return self.files_under(key)
        except (UfsError, ManagementError) as e:
            log.warning("cache: could not list %s: %s", key, e)
            return []


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix.rstrip("/") + "/")


def _under_any(key: str, prefixes: Any) -> bool:
    return any(_under(key, p) for p in prefixes)


def _ttl_for(key: str, ttls: dict[str, float]) -> float | None:
    """The TTL of the longest TTL'd prefix of a key."""
    best: tuple[int, float] | None = None
    for p, ttl in ttls.items():
        if _under(key, p) and (best is None or len(p) > best[0]):
            best = (len(p), ttl)
    return best[1] if best else None


class CacheCollector:
    """Per-tier figures of one gateway as Prometheus metrics, read at scrape time."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        u = self.gw.cache.usage()
        st = self.gw.cache.stats
        cap = GaugeMetricFamily("metaproxy_cache_capacity_bytes", "Capacity of a cache tier", labels=["tier"])
        used = GaugeMetricFamily("metaproxy_cache_used_bytes", "Bytes held by a cache tier", labels=["tier"])
        blocks = GaugeMetricFamily("metaproxy_cache_blocks", "Blocks held by a cache tier", labels=["tier"])
        for tier in ("memory", "disk"):
            cap.add_metric([tier], u[f"{tier}_capacity"])
            used.add_metric([tier], u[f"{tier}_used"])
            blocks.add_metric([tier], u[f"{tier}_blocks"])
        yield cap
        yield used
        yield blocks
        yield GaugeMetricFamily(
            "metaproxy_cache_pinned_bytes", "Bytes of pinned file versions", value=u["pinned_bytes"]
        )
        yield GaugeMetricFamily(
            "metaproxy_cache_hit_ratio", "Bytes served from cache / bytes served", value=st.hit_ratio
        )
        served = CounterMetricFamily(
            "metaproxy_cache_served_bytes", "Bytes served, by source", labels=["source"]
        )
        served.add_metric(["memory"], st.bytes_from_memory)
        served.add_metric(["disk"], st.bytes_from_disk)
        served.add_metric(["ufs"], st.bytes_from_ufs)
        yield served
        ev = CounterMetricFamily("metaproxy_cache_evictions", "Blocks evicted, by tier", labels=["tier"])
        ev.add_metric(["memory"], st.evictions_memory)
        ev.add_metric(["disk"], st.evictions_disk)
        yield ev
        yield CounterMetricFamily(
            "metaproxy_cache_disk_errors", "Disk tier failures read through to the UFS", value=st.disk_errors
        )
        yield CounterMetricFamily(
            "metaproxy_cache_corrupt_blocks",
            "Disk blocks that failed their checksum",
            value=st.corrupt_blocks,
        )
        ufs = CounterMetricFamily(
            "metaproxy_cache_ufs_read_bytes", "Bytes read from each UFS", labels=["ufs"]
        )
        with self.gw._lock:
            by_ufs = dict(self.gw.bytes_by_ufs)
        for name, n in sorted(by_ufs.items()):
            ufs.add_metric([name], n)
        yield ufs


def _release(f: Any) -> None:
    """Done-callback for a future of a :class:`Lease`: close it (a failure is only consumed)."""
    if not f.cancelled() and f.exception() is None:
        f.result().close()


async def _wait_block(gw: Gateway, r: Resolved, index: int) -> Lease:
    """A lease on a block being fetched, waited for on the event loop (no thread held while the
    UFS answers); a block on disk, or one evicted meanwhile, is read on the pool."""
    flight = gw.cache.in_flight(gw.key(r, index))
    if flight is not None:
        await asyncio.wrap_future(flight.done)
        lease = gw.cache.landed(flight)
        if lease is not None:
            return lease
    lease = await _run(gw, gw.block, r, index)
    assert isinstance(lease, Lease)
    return lease


async def _send_block(
    request: web.Request, resp: web.StreamResponse, lease: Lease, offset: int, count: int
) -> None:
    """Send ``count`` bytes of a block from ``offset``: a block in a memory file goes to the socket
    with ``sendfile`` (the bytes never pass through Python); bytes go through the response."""
    transport = request.transport
    if (
        count >= SENDFILE_MIN
        and lease.file is not None
        and transport is not None
        and not transport.is_closing()
    ):
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_write_buffer_size() == 0:
            # first try: the socket usually takes the whole piece at once, and then none of the
            # event loop's sendfile hand-over (pause reading, wait for writable, resume) is due;
            # the loop is single-threaded and the transport's buffer is empty, so nothing else
            # writes to this socket meanwhile
            try:
                sent = os.sendfile(sock.fileno(), lease.file.fileno(), offset, count)
            except (BlockingIOError, InterruptedError):
                sent = 0
            offset, count = offset + sent, count - sent
            if not count:
                return
        try:
            await asyncio.get_running_loop().sendfile(transport, lease.file, offset, count, fallback=False)
            return
        except (NotImplementedError, asyncio.SendfileNotAvailableError):  # before any byte left
            pass
    data = memoryview(lease.read_range(offset, count))
    for at in range(0, len(data), WRITE_SLICE):  # small writes: less buffering
        await resp.write(data[at : at + WRITE_SLICE])


async def _run(gw: Gateway, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(gw.pool, fn, *args)


def make_app(gw: Gateway) -> web.Application:
    g = gw.config.gateway

    async def handle(request: web.Request) -> web.StreamResponse:
        rid = f"{_RID_PREFIX}{next(_request_numbers):08x}"
        op = "unknown"
        try:
            raw_path, _, raw_query = request.raw_path.partition("?")
            headers = {k.lower(): v for k, v in request.headers.items()}
            if request.method not in ("GET", "HEAD", "PUT", "DELETE", "POST"):
                raise s3api.MethodNotAllowed(f"{request.method} is not supported by this gateway")
            s3api.verify_sigv4(
                s3api.SignedRequest(request.method, raw_path, raw_query, headers), gw.keys, g.region
            )
            parts = raw_path.lstrip("/").split("/", 1)
            bucket = unquote(parts[0])
            key = unquote(parts[1]) if len(parts) > 1 else ""
            if not bucket:
                raise s3api.AccessDenied("listing buckets is not supported")
            if bucket != g.bucket:
                raise s3api.NoSuchBucket("no such bucket", bucket)
            query = parse_qs(raw_query, keep_blank_values=True)
            if request.method == "POST":
                op = "Post"
                raise s3api.NotImplementedS3(
                    "multipart uploads and multi-object deletes are not supported by this gateway", key
                )
            if request.method in ("PUT", "DELETE"):
                op = "PutObject" if request.method == "PUT" else "DeleteObject"
                return await write_object(request, key, query, headers)
            if not key:
                if "location" in query:
                    op = "GetBucketLocation"
                    body = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
                        f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{g.region}</LocationConstraint>'
                    ).encode()
                    return web.Response(body=body, content_type="application/xml")
                if request.method == "HEAD":
                    op = "HeadBucket"
                    return web.Response(status=200)
                op = "ListObjectsV2"
                return await list_objects(query)
            op = "HeadObject" if request.method == "HEAD" else "GetObject"
            return await get_object(request, key)
        except s3api.S3Error as e:
            REQUESTS.labels(op, str(e.status)).inc()
            if request.method == "HEAD":
                return web.Response(status=e.status, headers={"x-amz-request-id": rid})
            return web.Response(
                status=e.status,
                body=e.xml(rid),
                content_type="application/xml",
                headers={"x-amz-request-id": rid},
            )
        except UfsNotFound:
            REQUESTS.labels(op, "404").inc()
            missing = s3api.NoSuchKey("no such key")
            return web.Response(status=404, body=missing.xml(rid), content_type="application/xml")
        except (UfsUnavailable, UfsError, BlockShort) as e:  # BlockShort: changed under us
            log.warning("gateway: UFS failed for %s: %s", request.path, e)
            REQUESTS.labels(op, "503").inc()
            err = s3api.SlowDown(f"the under file system is unavailable; retry: {e}")
            return web.Response(status=503, body=err.xml(rid), content_type="application/xml")

    async def get_object(request: web.Request, key: str) -> web.StreamResponse:
        r: Resolved = gw.resolve_fresh(key) or await _run(gw, gw.resolve, key)
        gw.note_read(r.key)
        length = r.status.length
        headers = {
            "ETag": s3api.etag(r.ufs_uri, length, r.status.mtime_ms),
            "Last-Modified": s3api.http_date(r.status.mtime_ms),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            REQUESTS.labels("HeadObject", "200").inc()
            return web.Response(status=200, headers={**headers, "Content-Length": str(length)})
        rng = s3api.parse_range(request.headers.get("Range"), length)
        start, end = rng if rng else (0, length)
        status = 206 if rng else 200
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        bs = gw.cache.block_size
        # a read continuing the previous one gets blocks beyond its end fetched too
        ahead = gw.sequential_ahead(r, start, end)
        # blocks of this range are fetched up to read_ahead_blocks ahead of the one being sent
        window = max(0, g.read_ahead_blocks)
        last_index = (end - 1) // bs
        final = (length - 1) // bs
        pending: dict[int, asyncio.Future[Lease]] = {}
        loop = asyncio.get_running_loop()
        try:
            pos = start
            while pos < end:
                index = pos // bs
                for i in range(index, min(last_index, index + window) + 1):
                    if i in pending:
                        continue
                    hit = gw.cached_block(r, i)  # memory hits need no thread hop
                    if hit is not None:
                        done: asyncio.Future[Lease] = loop.create_future()
                        done.set_result(hit)
                        pending[i] = done
                        continue
                    if not gw.cache.in_flight(gw.key(r, i)):
                        # a miss starts a run: this block and the window's worth after it come
                        # from the UFS in one read, and the next blocks will find it under way;
                        # a run that reaches the range's end carries the read-ahead on (one
                        # stream, the reader's blocks first)
                        run_last = min(last_index, i + window)
                        if ahead and run_last == last_index:
                            run_last = min(final, last_index + gw.take_ramp(r))
                            ahead = 0
                        started = gw.fetch_run(r, i, run_last)
                        READ_AHEAD.inc(max(0, started - (min(last_index, run_last) - i + 1)))
                    pending[i] = asyncio.ensure_future(_wait_block(gw, r, i))
                if ahead and index + window >= last_index:  # the range's end is under way
                    gw.fetch_ahead(r, end, ahead)
                    ahead = 0
                with await pending.pop(index) as lease:
                    if not resp.prepared:  # only now: a UFS that fails the first block gets a 503
                        await resp.prepare(request)
                    off = pos - index * bs
                    n = min(lease.size, end - index * bs) - off
                    await _send_block(request, resp, lease, off, n)
                BYTES.labels(r.mount.path).inc(n)
                gw.count(r.mount.path, n)
                pos += n
        finally:
            for f in pending.values():  # a reader gone early: the blocks still land in the cache
                f.add_done_callback(_release)
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()
        REQUESTS.labels("GetObject", str(status)).inc()
        return resp

    async def write_object(
        request: web.Request, key: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> web.Response:
        if "uploads" in query or "uploadId" in query:
            raise s3api.NotImplementedS3("multipart uploads are not supported by this gateway", key)
        if not key:
            raise s3api.AccessDenied("creating or deleting buckets is not allowed")
        if request.method == "PUT" and "x-amz-copy-source" in headers:
            raise s3api.NotImplementedS3("CopyObject is not supported by this gateway", key)
        hit = gw.mounts.resolve_key(key)
        if hit is None:
            raise s3api.AccessDenied("the key is under no mount", key)
        mount, rest = hit
        if mount.path not in g.writable_mounts:
            raise s3api.AccessDenied(
                f"mount {mount.path} is read-only at the gateway ([gateway] writable_mounts)", key
            )
        if not rest:
            raise s3api.AccessDenied("a mount's root is not an object", key)
        uri = gw.mounts.ufs_location(mount, rest, mount.create_target)
        if request.method == "DELETE":
            await _run(gw, gw.delete_object, mount, rest, uri)
            REQUESTS.labels("DeleteObject", "204").inc()
            return web.Response(status=204)
        declared = request.content_length
        if declared is None:
            raise s3api.MissingContentLength("Content-Length is required", key)
        if declared > MAX_PUT:
            raise s3api.EntityTooLarge(f"a single PutObject may carry at most {MAX_PUT} bytes here", key)
        body = await request.content.readexactly(declared) if declared else b""
        s3api.check_payload(headers, body)
        st: FileStatus = await _run(gw, gw.put_object, mount, rest, uri, body)
        REQUESTS.labels("PutObject", "200").inc()
        return web.Response(status=200, headers={"ETag": s3api.etag(uri, st.length, st.mtime_ms)})

    async def list_objects(query: dict[str, list[str]]) -> web.Response:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        try:
            max_keys = int(query.get("max-keys", ["1000"])[0])
        except ValueError:
            raise s3api.InvalidArgument("max-keys must be an integer") from None
        max_keys = max(0, min(max_keys, 1000))
        token = query.get("continuation-token", [""])[0]
        start_after = query.get("start-after", [""])[0]
        after = start_after
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                raise s3api.InvalidArgument("bad continuation token") from None
        entries = await _run(gw, collect, prefix)
        keys = sorted((e for e in entries if e.key.startswith(prefix) and e.key > after), key=lambda e: e.key)
        contents: list[s3api.ListEntry] = []
        prefixes: list[str] = []
        truncated = False
        last = ""
        for e in keys:
            if delimiter:
                i = e.key.find(delimiter, len(prefix))
                if i >= 0:
                    cp = e.key[: i + len(delimiter)]
                    if cp in prefixes or (after and cp <= after):
                        continue
                    if len(contents) + len(prefixes) >= max_keys:
                        truncated = True
                        break
                    prefixes.append(cp)
                    last = cp + "\uffff"  # resume after every key under this common prefix
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            contents.append(e)
            last = e.key
        next_token = base64.urlsafe_b64encode(last.encode()).decode() if truncated else ""
        body = s3api.list_objects_v2_xml(
            g.bucket,
            prefix,
            delimiter,
            max_keys,
            contents,
            prefixes,
            truncated,
            next_token,
            token,
            start_after,
            query.get("encoding-type", [""])[0] == "url",
        )
        REQUESTS.labels("ListObjectsV2", "200").inc()
        return web.Response(body=body, content_type="application/xml")

    def collect(prefix: str) -> list[s3api.ListEntry]:
        """Every object under the mount directory the prefix falls in (filtered by the caller)."""
        if "/" not in prefix:
            out = []
            for m in gw.mounts:
                if m.name.startswith(prefix):
                    out.extend(collect(m.name + "/"))
            return out
        hit = gw.mounts.resolve_key(prefix[: prefix.rfind("/")])
        if hit is None:
            return []
        mount, rest = hit
        base_key = f"{mount.name}/{rest}".rstrip("/")
        seen: dict[str, s3api.ListEntry] = {}
        for member in reversed(mount.read_priority):  # earlier priority wins
            uri = gw.mounts.ufs_location(mount, rest, member)
            for f in gw.listing(uri):
                k = f"{base_key}/{f.path}"
                seen[k] = s3api.ListEntry(
                    k, f.length, f.mtime_ms, s3api.etag(f"{uri}/{f.path}", f.length, f.mtime_ms)
                )
        return list(seen.values())

    app = web.Application(client_max_size=MAX_PUT)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class GatewayServer:
    """The gateway on its own event-loop thread: start, stop, and the port it listens on."""

    def __init__(self, config: Config) -> None:
        self.gateway = Gateway(config)
        if not self.gateway.keys:
            raise ValueError("[gateway] access_key and secret_key are required")
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._runner: web.AppRunner | None = None
        self.admin: Any = None
        self._collector: CacheCollector | None = None
        self._stopping = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(make_app(self.gateway), access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.config.gateway.host, self.config.gateway.port)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def start(self) -> GatewayServer:
        from metaproxy.admin import AdminServer

        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the gateway did not start")
        g = self.config.gateway
        gw = self.gateway

        def ttl(args: dict[str, Any]) -> dict[str, Any]:
            value = args.get("ttl_s")
            return gw.set_ttl(str(args["path"]), None if value is None else float(value))

        self.admin = AdminServer(
            self.config.proxy.admin_host,
            g.admin_port,
            lambda: {"ok": True, "port": self.port, "mounts": [m.path for m in gw.mounts]},
            {"/report": gw.report, "/cache/rules": gw.rules},
            {
                "/cache/plan": lambda a: gw.plan(str(a["path"])),
                "/cache/load": lambda a: gw.load_file(str(a["key"])),
                "/cache/pin": lambda a: gw.pin(str(a["path"])),
                "/cache/unpin": lambda a: gw.unpin(str(a["path"])),
                "/cache/free": lambda a: gw.free(str(a["path"])),
                "/cache/ttl": ttl,
            },
        )
        self.admin.start()
        self._collector = CacheCollector(gw)
        REGISTRY.register(self._collector)
        threading.Thread(target=self._sweep, name="cache-ttl", daemon=True).start()
        if self.config.gateway.refresh_listings_for_s > 0:
            threading.Thread(target=self._refresh_listings, name="listing-refresh", daemon=True).start()
        return self

    def _refresh_listings(self) -> None:
        # eight looks per freshness period: a listing is re-read at 75-87.5 % of its life
        every = max(0.05, self.config.gateway.stale_after_s / 8)
        while not self._stopping.wait(every):
            try:
                self.gateway.refresh_listings()
            except Exception as e:
                log.warning("gateway: listing refresh failed: %s", e)

    def _sweep(self) -> None:
        every = min(self.config.gateway.ttl_check_interval_s, READS_FLUSH_S)
        last_ttl = time.monotonic()
        while not self._stopping.wait(every):
            try:
                self.gateway.flush_reads()
            except Exception as e:
                log.warning("could not record read times: %s", e)
            if time.monotonic() - last_ttl >= self.config.gateway.ttl_check_interval_s:
                last_ttl = time.monotonic()
                try:
                    self.gateway.expire()
                except Exception as e:
                    log.warning("cache: TTL sweep failed: %s", e)
        with contextlib.suppress(Exception):
            self.gateway.flush_reads()

    def stop(self) -> None:
        self._stopping.set()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None
        if self.admin is not None:
            self.admin.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.gateway.pool.shutdown(wait=False)
        self.gateway.cache.close()

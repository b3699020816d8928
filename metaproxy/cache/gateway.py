"""The gateway's state: from a gateway key to cached blocks of the UFS file it names.

A key is ``<mount>/<rest of the path>`` in the gateway bucket. :class:`Gateway` resolves it to
the first mount member (in read priority) that has the file, through the metadata caches
(:mod:`~metaproxy.cache.metadata`), and hands out leases on the file's blocks from the block
cache (:mod:`~metaproxy.cache.blocks`), filling misses from the UFS (:mod:`metaproxy.ufs`) one
streamed read per run of missing blocks. Read-ahead (:mod:`~metaproxy.cache.readahead`)
decides how far ahead of a sequential reader to fetch; cache management
(:mod:`~metaproxy.cache.manage`) pins, frees and loads.

It knows no HTTP: the S3 routes (:mod:`~metaproxy.cache.routes`) and the server
(:mod:`~metaproxy.cache.server`) sit on top of it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from metaproxy.cache import s3api
from metaproxy.cache.blocks import BlockCache, BlockKey, Lease
from metaproxy.cache.files import Resolved
from metaproxy.cache.listing import ListEntry
from metaproxy.cache.manage import CacheManager
from metaproxy.cache.metadata import MetadataCache
from metaproxy.cache.metrics import BYTES, READ_AHEAD, count_ufs_call
from metaproxy.cache.readahead import ReadAhead
from metaproxy.cache.reads import ReadLog
from metaproxy.cache.watch import UfsHealth, root_of
from metaproxy.config import Config
from metaproxy.mounts import Mount, MountTable, load_mount_table
from metaproxy.security import security_for
from metaproxy.state import open_state
from metaproxy.ufs import FileStatus, Stream, UfsNotFound, UfsSet, UfsUnavailable
from metaproxy.uri import scheme_of

log = logging.getLogger("metaproxy.gateway")

#: threads for work no reader waits on: listing re-reads and pre-fetch loads
BACKGROUND_THREADS = 4


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

    def read(self, n: int, /) -> bytes:
        data = self._stream.read(n)
        self._gw.note_ufs_bytes(self._scheme, len(data))
        return data

    def close(self) -> None:
        self._stream.close()


class Gateway:
    """Mounts, the UFS clients, the block cache and what sits beside it, for one process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        g = config.gateway
        self.cache = BlockCache(
            g.block_size, g.memory.capacity, g.disk.path or None, g.disk.capacity, write_behind=True
        )
        security_for(config)  # Kerberos and TLS for its WebHDFS and HMS clients
        self.ufs = UfsSet(config.hdfs, config.s3, on_call=count_ufs_call)
        #: UFS calls (stat, list, block reads) wait a round trip each across a slow link
        self.pool = ThreadPoolExecutor(max_workers=g.io_threads, thread_name_prefix="gateway-io")
        #: listing re-reads and pre-fetch loads wait here, never ahead of a reader's blocks (a
        #: pre-fetch load itself waits for blocks on ``pool``: sharing it could starve both)
        self.background = ThreadPoolExecutor(max_workers=BACKGROUND_THREADS, thread_name_prefix="gateway-bg")
        #: which UFS answers (probed by the server); while one does not, cached data serves
        self.health = UfsHealth()
        self.metadata = MetadataCache(
            self.ufs,
            g.stale_after_s,
            g.refresh_listings_for_s,
            self.background,
            self.health,
            g.stale_if_error_s,
        )
        self.read_ahead = ReadAhead(g.read_ahead_blocks)
        # connected on first use: a state database that is down does not keep the gateway from
        # serving (mounts from the config, pins once it answers)
        self.db = open_state(config.state, lazy=True)
        self.reads = ReadLog(self.db)
        self.keys = {g.access_key: g.secret_key} if g.access_key and g.secret_key else {}
        self.mounts: MountTable = load_mount_table(config, None)
        self._lock = threading.Lock()
        self.bytes_by_mount: dict[str, int] = {}
        self.bytes_by_ufs: dict[str, int] = {}
        self.manager = CacheManager(self, self.cache)
        self.refresh_mounts()
        self.manager.load_rules()

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.background.shutdown(wait=False)
        self.cache.close()
        self.db.close()

    def refresh_mounts(self) -> None:
        try:
            self.mounts = load_mount_table(self.config, self.db)
        except Exception as e:
            log.warning("could not reload mounts: %s", e)

    # -- figures ----------------------------------------------------------------------------

    def note_ufs_bytes(self, scheme: str, n: int) -> None:
        """Add ``n`` bytes read from a UFS of ``scheme`` to the report's figures."""
        with self._lock:
            self.bytes_by_ufs[scheme] = self.bytes_by_ufs.get(scheme, 0) + n

    def ufs_bytes(self) -> dict[str, int]:
        with self._lock:
            return dict(self.bytes_by_ufs)

    def served(self, mount: str, n: int) -> None:
        """``n`` bytes of a file under ``mount`` went to a client."""
        BYTES.labels(mount).inc(n)
        with self._lock:
            self.bytes_by_mount[mount] = self.bytes_by_mount.get(mount, 0) + n

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
            "ufs_not_answering": self.health.status(),
            "stale_served": self.metadata.stale_served,
            "last_stale_age_s": self.metadata.last_stale_age_s,
            **self.manager.rules(),
        }

    # -- keys to files ----------------------------------------------------------------------

    def resolve(self, key: str) -> Resolved:
        """The file a key names: the first member (in read priority) that has it."""
        hit = self.mounts.resolve_key(key)
        if hit is None or not hit[1]:
            raise s3api.NoSuchKey("no such key", key)
        mount, rest = hit
        for member in mount.read_priority:
            uri = self.mounts.ufs_location(mount, rest, member)
            try:
                st = self.metadata.status(uri)
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
        st = self.metadata.fresh_status(uri)
        if st is None or st.is_dir:
            return None
        return Resolved(mount, uri, st, key)

    def list_entries(self, prefix: str) -> list[ListEntry]:
        """Every object under the mount directory the prefix falls in (the caller filters)."""
        if "/" not in prefix:
            return [
                e for m in self.mounts if m.name.startswith(prefix) for e in self.list_entries(m.name + "/")
            ]
        hit = self.mounts.resolve_key(prefix[: prefix.rfind("/")])
        if hit is None:
            return []
        mount, rest = hit
        base_key = f"{mount.name}/{rest}".rstrip("/")
        seen: dict[str, ListEntry] = {}
        for member in reversed(mount.read_priority):  # earlier priority wins
            uri = self.mounts.ufs_location(mount, rest, member)
            for f in self.metadata.listing(uri):
                k = f"{base_key}/{f.path}"
                seen[k] = ListEntry(
                    k, f.length, f.mtime_ms, s3api.etag(f"{uri}/{f.path}", f.length, f.mtime_ms)
                )
        return list(seen.values())

    # -- blocks -----------------------------------------------------------------------------

    def block(self, r: Resolved, index: int) -> Lease:
        """A lease on one block of ``r`` (memory, disk, or the UFS); the caller closes it."""
        self.manager.note_version(r)
        return self.cache.open(r.block(index), open_stream=self.open_stream)

    def cached_block(self, r: Resolved, index: int) -> Lease | None:
        """A lease on a block of ``r`` if it is in the memory tier (no UFS read, no waiting)."""
        return self.cache.open_cached(r.block(index))

    def open_stream(self, first: BlockKey, nbytes: int) -> Stream:
        """The UFS bytes of blocks from ``first`` on (the block cache's run reader); at once an
        error while that UFS is known not to answer."""
        if self.health.down_since(first.path) is not None:
            raise UfsUnavailable(f"{self.health.describe(first.path)}; the block is not cached")
        stream = self.ufs.open_read(first.path, first.index * self.cache.block_size, nbytes)
        return _Counted(stream, self, scheme_of(first.path))

    def fetch_run(self, r: Resolved, first: int, last: int) -> int:
        """Start fetching blocks ``first..last`` of ``r`` that no tier holds, each run of
        consecutive ones with a single UFS read; returns how many blocks were started. Readers
        of those blocks wait for them as for any miss."""
        if last < first:
            return 0
        self.manager.note_version(r)
        started = 0
        for run in self.cache.claim_run([r.block(i) for i in range(first, last + 1)]):
            try:
                self.pool.submit(self.cache.load_run, run, self.open_stream)
            except RuntimeError as e:  # shutting down: release the waiters
                self.cache.abandon_run(run, UfsUnavailable(f"the gateway is stopping: {e}"))
                continue
            started += len(run)
        return started

    def fetch_ahead(self, r: Resolved, end: int, n: int) -> None:
        """Read ahead from offset ``end``: the first of the next ``n`` blocks that nobody holds
        or fetches starts a run (of :meth:`ReadAhead.take_run` blocks) — one UFS round trip per
        run, not per block."""
        bs = self.cache.block_size
        first = (end + bs - 1) // bs
        final = (r.status.length - 1) // bs
        for i in range(first, min(final, first + n - 1) + 1):
            key = r.block(i)
            if not self.cache.contains(key) and self.cache.in_flight(key) is None:
                # a read-ahead that fails costs nothing: a reader of its blocks fetches them again
                READ_AHEAD.inc(self.fetch_run(r, i, min(final, i + self.read_ahead.take_run(r.digest) - 1)))
                return

    # -- writes -----------------------------------------------------------------------------

    def put_object(self, mount: Mount, rest: str, uri: str, body: bytes) -> FileStatus:
        """Write one object to the mount's create target; later reads see it at once."""
        self.ufs.write(uri, body)
        self._forget(mount, rest)
        return self.metadata.status(uri)

    def delete_object(self, mount: Mount, rest: str, uri: str) -> None:
        """Delete an object's copy on the create target (other members are never touched)."""
        self.ufs.delete(uri)
        self._forget(mount, rest)

    def ufs_roots(self) -> list[tuple[str, str]]:
        """One URI of each UFS the mounts read from, by root (what the health probe looks at)."""
        roots: dict[str, str] = {}
        for m in self.mounts:
            for prefix in m.ufs:
                roots.setdefault(root_of(prefix), prefix)
        return sorted(roots.items())

    def _forget(self, mount: Mount, rest: str) -> None:
        self.metadata.forget(self.mounts.ufs_location(mount, rest, member) for member in mount.read_priority)

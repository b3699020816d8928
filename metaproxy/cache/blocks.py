"""The block cache: fixed-size blocks of UFS files in a memory tier and a disk tier.

A block is identified by :class:`BlockKey` — UFS path, file length, modification time and block
index — so a rewritten file (new length or mtime) can never be served from an older version's
blocks. The cache never speaks a UFS protocol: a miss is filled by the caller's
``open_stream(first_key, nbytes)`` (a stream of the bytes of one block or of a run of
consecutive blocks, received in place) or, in the simple form, ``fetch(key) -> bytes``.

* memory tier: LRU by bytes; blocks in sealed memory files (:mod:`metaproxy.cache.memfile`), so a
  sender hands them to the kernel with ``sendfile`` and a block can never change under a reader;
* disk tier: one checksummed file per block (:mod:`metaproxy.cache.disktier`), LRU by bytes;
* a block read from disk is promoted to memory;
* concurrent misses on one block wait for a single fetch (single flight), and a run of
  consecutive misses is claimed at once and read as one stream (:meth:`BlockCache.claim_run`);
* a disk tier that fails (full, read-only, broken) is bypassed — the cache never fails a read
  because of itself; the failure is counted and logged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from metaproxy.cache.disktier import LRU, DiskTier
from metaproxy.cache.memfile import BlockShort, Held, Lease
from metaproxy.ufs import Stream

log = logging.getLogger("metaproxy.cache")

__all__ = ["BlockCache", "BlockKey", "BlockShort", "CacheStats", "Flight", "Lease", "version_digest"]


@dataclass(frozen=True)
class BlockKey:
    """One block of one version of one file."""

    path: str
    length: int
    mtime_ms: int
    index: int

    @functools.cached_property
    def digest(self) -> str:
        """Names one version of one file: every block of it shares this."""
        return version_digest(self.path, self.length, self.mtime_ms)

    def file_name(self) -> str:
        d = self.digest
        return f"{d[:2]}/{d}.{self.index}"

    def describe(self) -> str:
        """For messages: ``block N of PATH``."""
        return f"block {self.index} of {self.path}"


def version_digest(path: str, length: int, mtime_ms: int) -> str:
    """The name of one version of one file in the cache (pins and frees are by version)."""
    return hashlib.sha256(f"{path}\0{length}\0{mtime_ms}".encode()).hexdigest()


def _digest_of_name(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


@dataclass
class CacheStats:
    """Counters of one cache (bytes, not requests: the hit ratio is bytes served from cache
    divided by bytes served)."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    bytes_from_memory: int = 0
    bytes_from_disk: int = 0
    bytes_from_ufs: int = 0
    evictions_memory: int = 0
    evictions_disk: int = 0
    disk_errors: int = 0
    corrupt_blocks: int = 0

    @property
    def hit_ratio(self) -> float:
        served = self.bytes_from_memory + self.bytes_from_disk + self.bytes_from_ufs
        return (self.bytes_from_memory + self.bytes_from_disk) / served if served else 0.0


@dataclass
class Flight:
    """One block being fetched: its waiters block on ``done`` (threads) or await it (an event
    loop, through ``asyncio.wrap_future``) — it always completes with None; the outcome is
    ``held`` or ``error``, read with :meth:`BlockCache.landed`."""

    done: Future[None] = field(default_factory=Future)
    held: Held | None = None
    error: BaseException | None = None


class BlockCache:
    """Memory + disk tiers of fixed-size blocks, filled by a fetcher on a miss."""

    def __init__(
        self,
        block_size: int,
        memory_capacity: int,
        disk_dir: str | os.PathLike[str] | None,
        disk_capacity: int,
        write_behind: bool = False,
    ) -> None:
        """``write_behind``: blocks go to the disk tier on a writer thread, off the reader's
        path (up to ``MAX_WRITE_BEHIND`` bytes queued; past that, writes are synchronous)."""
        self.block_size = block_size
        self.stats = CacheStats()
        self._lock = threading.RLock()
        self._memory: dict[BlockKey, Held] = {}
        self._mem_lru: LRU[BlockKey] = LRU(memory_capacity)
        #: pinned file versions (digest → declared bytes): their blocks are never evicted
        self._pinned: dict[str, int] = {}
        self._flights: dict[BlockKey, Flight] = {}
        self.disk: DiskTier | None = None
        if disk_dir and disk_capacity > 0:
            self.disk = DiskTier(
                disk_dir, disk_capacity, self._lock, self.stats, self._pinned_name, write_behind
            )

    @property
    def disk_ready(self) -> threading.Event:
        """Set once the disk tier's index is rebuilt (at once without a disk tier)."""
        if self.disk is None:
            done = threading.Event()
            done.set()
            return done
        return self.disk.ready

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: BlockKey, fetch: Callable[[BlockKey], bytes]) -> bytes:
        """The block's bytes: from memory, from disk, or fetched once however many ask."""
        with self.open(key, fetch) as lease:
            return lease.read()

    def open(
        self,
        key: BlockKey,
        fetch: Callable[[BlockKey], bytes] | None = None,
        *,
        open_stream: Callable[[BlockKey, int], Stream] | None = None,
    ) -> Lease:
        """A :class:`Lease` on the block (the caller closes it): from memory, from disk, or from
        the UFS once however many ask. The UFS is read through ``open_stream(key, nbytes)``
        (the block's bytes, received in place) or ``fetch(key)`` (which returns them)."""
        with self._lock:  # re-entrant: the hit check and the flight lookup are one step
            hit = self.open_cached(key)
            if hit is not None:
                return hit
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = Flight()
        assert flight is not None
        if not leader:
            flight.done.result()
            lease = self.landed(flight)
            # None: evicted before this reader woke; fetch it again
            return lease if lease is not None else self.open(key, fetch, open_stream=open_stream)
        try:
            from_disk = self.disk.read(key.file_name()) if self.disk is not None else None
            if from_disk is not None:
                held = Held.of(from_disk)
                with self._lock:
                    self.stats.disk_hits += 1
                    self.stats.bytes_from_disk += held.size
            else:
                if open_stream is not None:
                    size = self.block_length(key)
                    stream = open_stream(key, size)
                    try:
                        held = Held.received(size, stream, key.describe())
                    finally:
                        stream.close()
                elif fetch is not None:
                    held = Held.of(fetch(key))
                else:
                    raise ValueError("a block cache miss needs fetch or open_stream")
                with self._lock:
                    self.stats.misses += 1
                    self.stats.bytes_from_ufs += held.size
                self._store(key, held)
            lease = self._put_memory(key, held)
            flight.held = held
            return lease
        except BaseException as e:
            flight.error = e
            raise
        finally:
            self._land(key, flight)

    def claim_run(self, keys: list[BlockKey]) -> list[list[BlockKey]]:
        """Take the fetch of every block of ``keys`` (consecutive blocks of one file version)
        that no tier holds and nobody is fetching; returns them as runs of consecutive blocks,
        each to be passed to :meth:`load_run` — which must follow, or the claims would hang
        their waiters. Readers of a claimed block wait for it as for any single flight."""
        runs: list[list[BlockKey]] = []
        current: list[BlockKey] = []
        with self._lock:
            for key in keys:
                free = (
                    key not in self._memory
                    and key not in self._flights
                    and not self._on_disk(key)
                    and self.block_length(key) > 0
                )
                if free:
                    self._flights[key] = Flight()
                    current.append(key)
                elif current:
                    runs.append(current)
                    current = []
            if current:
                runs.append(current)
        return runs

    def load_run(self, keys: list[BlockKey], open_stream: Callable[[BlockKey, int], Stream]) -> None:
        """Fetch claimed consecutive blocks with one UFS read: ``open_stream(first, nbytes)``
        returns the bytes from the first block's start, and each block is received straight
        into its memory file and handed to its waiters as soon as it is complete. One stream
        instead of a request per block is what a sequential reader of a remote file needs: a
        round trip and a DataNode read set-up per run, not per block."""
        flights = [self._flights_get(k) for k in keys]
        total = sum(self.block_length(k) for k in keys)
        stream: Stream | None = None
        done = 0
        try:
            stream = open_stream(keys[0], total)
            for key, flight in zip(keys, flights, strict=True):
                held = Held.received(self.block_length(key), stream, key.describe())
                with self._lock:
                    self.stats.misses += 1
                    self.stats.bytes_from_ufs += held.size
                self._store(key, held)
                self._put_memory(key, held).close()
                flight.held = held
                self._land(key, flight)
                done += 1
        except BaseException as e:
            for key, flight in list(zip(keys, flights, strict=True))[done:]:
                flight.error = e
                self._land(key, flight)
            if not isinstance(e, Exception):
                raise
            log.debug("cache: a run of %d blocks of %s failed: %s", len(keys), keys[0].path, e)
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def abandon_run(self, keys: list[BlockKey], error: BaseException) -> None:
        """Release the claims of a run that will not be loaded: its waiters get ``error``."""
        for key in keys:
            flight = self._flights_get(key)
            flight.error = error
            self._land(key, flight)

    def in_flight(self, key: BlockKey) -> Flight | None:
        """The fetch of ``key`` under way, if there is one (to wait for it without a thread)."""
        with self._lock:
            return self._flights.get(key)

    def landed(self, flight: Flight) -> Lease | None:
        """After ``flight.done``: a lease on its block (counted as a memory hit), its error
        raised, or None if the block was evicted before this reader came for it."""
        if flight.error is not None:
            raise flight.error
        with self._lock:
            held = flight.held
            if held is None or (held.fd is None and held.data is None):
                return None
            self.stats.memory_hits += 1
            self.stats.bytes_from_memory += held.size
            return held.lease()

    def _flights_get(self, key: BlockKey) -> Flight:
        with self._lock:
            return self._flights[key]

    def _land(self, key: BlockKey, flight: Flight) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.done.set_result(None)

    def _on_disk(self, key: BlockKey) -> bool:
        return self.disk is not None and self.disk.may_hold(key.file_name())

    def block_length(self, key: BlockKey) -> int:
        """How many bytes block ``key.index`` of its file has (the last one may be short)."""
        start = key.index * self.block_size
        return max(0, min(self.block_size, key.length - start))

    def _store(self, key: BlockKey, held: Held) -> None:
        """Put a block fetched from the UFS on the disk tier, behind the reader if possible."""
        if self.disk is None:
            return
        with self._lock:
            lease = held.lease()  # the writer's own hold: eviction cannot pull it away
        self.disk.store(key.file_name(), lease)

    def open_cached(self, key: BlockKey) -> Lease | None:
        """A lease on the block if the memory tier holds it (counted as a hit), else None:
        no waiting, no UFS."""
        with self._lock:
            held = self._memory.get(key)
            if held is None:
                return None
            self._mem_lru.touch(key)
            self.stats.memory_hits += 1
            self.stats.bytes_from_memory += held.size
            return held.lease()

    def _put_memory(self, key: BlockKey, held: Held) -> Lease:
        """Keep ``held`` in the memory tier; returns a lease on it, taken before any eviction
        can close it."""
        with self._lock:
            previous = self._memory.pop(key, None)
            if previous is not None and previous is not held:
                previous.close()
            self._memory[key] = held
            leased = held.lease()
            # pinned blocks live on disk; with no disk tier they stay in memory instead
            guard = self._pinned_key if self.disk is None and self._pinned else None
            for old in self._mem_lru.add(key, held.size, guard):
                gone = self._memory.pop(old, None)
                if gone is not None:
                    gone.close()
                self.stats.evictions_memory += 1
            return leased

    def contains(self, key: BlockKey) -> bool:
        with self._lock:
            return key in self._memory or (self.disk is not None and self.disk.indexed(key.file_name()))

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until queued disk writes are done; False if they did not finish in time."""
        return self.disk.flush(timeout) if self.disk is not None else True

    def close(self) -> None:
        """Finish queued disk writes, release the memory tier's files (leases still out stay
        valid)."""
        if self.disk is not None:
            self.disk.close()
        with self._lock:
            for held in self._memory.values():
                held.close()
            self._memory.clear()
            self._mem_lru = LRU(self._mem_lru.capacity)

    # -- management -------------------------------------------------------------------------

    def _pinned_key(self, key: BlockKey) -> bool:
        return key.digest in self._pinned

    def _pinned_name(self, name: str) -> bool:
        return bool(self._pinned) and _digest_of_name(name) in self._pinned

    def pin(self, digest: str, nbytes: int) -> None:
        """Keep every block of one file version (it is loaded separately)."""
        with self._lock:
            self._pinned[digest] = nbytes

    def unpin(self, digest: str) -> None:
        with self._lock:
            self._pinned.pop(digest, None)

    def is_pinned(self, digest: str) -> bool:
        with self._lock:
            return digest in self._pinned

    @property
    def pinned_bytes(self) -> int:
        with self._lock:
            return sum(self._pinned.values())

    def free(self, digests: set[str]) -> int:
        """Evict every block of these file versions from both tiers; returns the bytes freed
        (a block held in both tiers counts once). Pinned versions are skipped (unpin first).
        """
        freed: dict[str, int] = {}
        self.flush()  # a block still queued for the disk tier would land there after the free
        with self._lock:
            targets = digests - self._pinned.keys()
            for k in [k for k in self._memory if k.digest in targets]:
                held = self._memory.pop(k)
                freed[k.file_name()] = held.size
                held.close()
                self._mem_lru.remove(k)
            doomed = [n for n in self._disk_names() if _digest_of_name(n) in targets]
        if self.disk is not None:
            freed.update(self.disk.remove(doomed))
        return sum(freed.values())

    def _disk_names(self) -> list[str]:
        with self._lock:
            return list(self.disk.lru.items) if self.disk is not None else []

    def cached_bytes(self, digest: str) -> int:
        """Bytes of one file version held in either tier (a block in both counts once)."""
        with self._lock:
            names = {n for n in self._disk_names() if _digest_of_name(n) == digest}
            total = self.disk.sizes(names) if self.disk is not None else 0
            for k, v in self._memory.items():
                if k.digest == digest and k.file_name() not in names:
                    total += v.size
            return total

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {
                "memory_used": self._mem_lru.used,
                "memory_capacity": self._mem_lru.capacity,
                "disk_used": self.disk.lru.used if self.disk is not None else 0,
                "disk_capacity": self.disk.lru.capacity if self.disk is not None else 0,
                "memory_blocks": len(self._memory),
                "disk_blocks": len(self.disk.lru.items) if self.disk is not None else 0,
                "pinned_bytes": sum(self._pinned.values()),
                "pinned_files": len(self._pinned),
            }

"""The block cache: fixed-size blocks of UFS files in a memory tier and a disk tier.

A block is identified by :class:`BlockKey` — UFS path, file length, modification time and block
index — so a rewritten file (new length or mtime) can never be served from an older version's
blocks. The cache knows nothing about the UFS but a fetcher ``fetch(key) -> bytes`` that
returns one block; everything protocol-specific lives in the fetchers.

* memory tier: LRU by bytes;
* disk tier: one file per block with a CRC32 checksum in its header, LRU by bytes, verified on
  every read (a corrupt block is dropped and refetched); its index is rebuilt from the files
  on start, in the background, while misses read through;
* a block read from disk is promoted to memory;
* concurrent misses on one block wait for a single fetch (single flight);
* a disk tier that fails (full, read-only, broken) is bypassed — the cache never fails a read
  because of itself; the failure is counted and logged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import struct
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

K = TypeVar("K")

log = logging.getLogger("metaproxy.cache")

_HEADER = struct.Struct(">4sIQ")  # magic, crc32, length
_MAGIC = b"MPB1"
#: the most bytes a write-behind cache keeps queued for its disk tier
MAX_WRITE_BEHIND = 64 * 1024 * 1024


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


class _LRU(Generic[K]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.items: OrderedDict[K, int] = OrderedDict()

    def touch(self, key: K) -> None:
        self.items.move_to_end(key)

    def add(self, key: K, size: int, protected: Callable[[K], bool] | None = None) -> list[K]:
        """Record a block; returns the keys evicted to stay within capacity.

        The oldest go first; ``protected`` keys (pinned blocks) and the new key itself are never
        evicted, so a tier full of pinned blocks holds at most one unpinned block beyond it.
        """
        if key in self.items:
            self.used -= self.items.pop(key)
        self.items[key] = size
        self.used += size
        evicted: list[K] = []
        if self.used <= self.capacity:
            return evicted
        for old in list(self.items):
            if self.used <= self.capacity:
                break
            if old == key or (protected is not None and protected(old)):
                continue
            self.used -= self.items.pop(old)
            evicted.append(old)
        return evicted

    def remove(self, key: K) -> None:
        size = self.items.pop(key, None)
        if size is not None:
            self.used -= size


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    data: bytes | None = None
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
        self._memory: dict[BlockKey, bytes] = {}
        self._mem_lru: _LRU[BlockKey] = _LRU(memory_capacity)
        self._disk_dir = Path(disk_dir) if disk_dir else None
        # the disk tier is accounted by file name: names are derived from keys, and an index
        # rebuilt after a restart knows only the files
        self._disk_lru: _LRU[str] = _LRU(disk_capacity)
        self._flights: dict[BlockKey, _Flight] = {}
        #: pinned file versions (digest → declared bytes): their blocks are never evicted
        self._pinned: dict[str, int] = {}
        # temporary files carry this instance's token, so the index rebuild can tell a crashed
        # run's leftovers from a write of ours in flight (file mtimes are too coarse for that)
        self._tmp_token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.disk_ready = threading.Event()
        if self._disk_dir is None or disk_capacity <= 0:
            self._disk_dir = None
            self.disk_ready.set()
        else:
            threading.Thread(target=self._rebuild_index, name="cache-index", daemon=True).start()
        self._writer = (
            ThreadPoolExecutor(1, thread_name_prefix="cache-disk-writer")
            if write_behind and self._disk_dir is not None
            else None
        )
        self._queued = 0
        self._queued_cv = threading.Condition()

    # -- reads ----------------------------------------------------------------------------

    def get(self, key: BlockKey, fetch: Callable[[BlockKey], bytes]) -> bytes:
        """The block's bytes: from memory, from disk, or fetched once however many ask."""
        with self._lock:  # re-entrant: the hit check and the flight lookup are one step
            data = self.get_cached(key)
            if data is not None:
                return data
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.data is not None
            with self._lock:
                self.stats.memory_hits += 1
                self.stats.bytes_from_memory += len(flight.data)
            return flight.data
        try:
            data = self._read_disk(key)
            if data is not None:
                with self._lock:
                    self.stats.disk_hits += 1
                    self.stats.bytes_from_disk += len(data)
            else:
                data = fetch(key)
                with self._lock:
                    self.stats.misses += 1
                    self.stats.bytes_from_ufs += len(data)
                if self._writer is not None and self._reserve(len(data)):
                    self._writer.submit(self._write_behind, key, data)
                else:
                    self._write_disk(key, data)
            self._put_memory(key, data)
            flight.data = data
            return data
        except BaseException as e:
            flight.error = e
            raise
        finally:
            flight.done.set()
            with self._lock:
                self._flights.pop(key, None)

    def get_cached(self, key: BlockKey) -> bytes | None:
        """The block if the memory tier holds it (counted as a hit), else None: no waiting."""
        with self._lock:
            data = self._memory.get(key)
            if data is not None:
                self._mem_lru.touch(key)
                self.stats.memory_hits += 1
                self.stats.bytes_from_memory += len(data)
            return data

    def _put_memory(self, key: BlockKey, data: bytes) -> None:
        with self._lock:
            self._memory[key] = data
            # pinned blocks live on disk; with no disk tier they stay in memory instead
            guard = self._pinned_key if self._disk_dir is None and self._pinned else None
            for old in self._mem_lru.add(key, len(data), guard):
                self._memory.pop(old, None)
                self.stats.evictions_memory += 1

    def contains(self, key: BlockKey) -> bool:
        with self._lock:
            return key in self._memory or key.file_name() in self._disk_lru.items

    # -- the disk tier ----------------------------------------------------------------------

    def _read_disk(self, key: BlockKey) -> bytes | None:
        if self._disk_dir is None:
            return None
        name = key.file_name()
        path = self._disk_dir / name
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._disk_failed("read", e)
            return None
        if len(raw) < _HEADER.size:
            self._drop_corrupt(name, path)
            return None
        magic, crc, length = _HEADER.unpack_from(raw)
        data = raw[_HEADER.size :]
        if magic != _MAGIC or length != len(data) or zlib.crc32(data) != crc:
            self._drop_corrupt(name, path)
            return None
        with self._lock:
            if name in self._disk_lru.items:
                self._disk_lru.touch(name)
            else:
                self._disk_lru.add(name, len(raw))
        return data

    def _drop_corrupt(self, name: str, path: Path) -> None:
        log.warning("cache: corrupt block %s dropped; refetching", path)
        with self._lock:
            self.stats.corrupt_blocks += 1
            self._disk_lru.remove(name)
        with contextlib.suppress(OSError):
            path.unlink()

    def _reserve(self, n: int) -> bool:
        with self._queued_cv:
            if self._queued + n > MAX_WRITE_BEHIND:
                return False
            self._queued += n
            return True

    def _write_behind(self, key: BlockKey, data: bytes) -> None:
        try:
            self._write_disk(key, data)
        except Exception as e:  # never lose the writer thread
            log.warning("cache: disk tier write failed: %s", e)
        finally:
            with self._queued_cv:
                self._queued -= len(data)
                self._queued_cv.notify_all()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until queued disk writes are done; False if they did not finish in time."""
        with self._queued_cv:
            return self._queued_cv.wait_for(lambda: self._queued == 0, timeout)

    def close(self) -> None:
        """Finish queued disk writes and stop the writer thread."""
        if self._writer is not None:
            self.flush()
            self._writer.shutdown(wait=True)

    def _write_disk(self, key: BlockKey, data: bytes) -> None:
        if self._disk_dir is None:
            return
        name = key.file_name()
        path = self._disk_dir / name
        tmp = path.with_name(f"{path.name}.tmp-{self._tmp_token}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, zlib.crc32(data), len(data)))
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            self._disk_failed("write", e)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            evicted = self._disk_lru.add(name, len(data) + _HEADER.size, self._pinned_name)
            self.stats.evictions_disk += len(evicted)
        for old in evicted:
            with contextlib.suppress(OSError):
                (self._disk_dir / old).unlink()

    def _disk_failed(self, what: str, e: OSError) -> None:
        with self._lock:
            self.stats.disk_errors += 1
        log.warning("cache: disk tier %s failed (%s); reading through to the UFS", what, e)

    def _rebuild_index(self) -> None:
        """Account the blocks an earlier run left on disk, oldest first so LRU order holds.

        Reads do not wait for this: a block's file name follows from its key, so a block on
        disk is found (and verified) whether or not it has been indexed yet.
        """
        assert self._disk_dir is not None
        try:
            self._disk_dir.mkdir(parents=True, exist_ok=True)
            found = []
            for sub in self._disk_dir.iterdir():
                if not sub.is_dir():
                    continue
                for f in sub.iterdir():
                    try:
                        st = f.stat()
                    except FileNotFoundError:
                        continue
                    if ".tmp-" in f.name:
                        if self._tmp_token not in f.name:  # left by a crash, not a write of ours
                            f.unlink(missing_ok=True)
                        continue
                    found.append((st.st_mtime, f"{sub.name}/{f.name}", st.st_size))
            found.sort()
            evicted: list[str] = []
            with self._lock:
                for _, name, size in found:
                    if name not in self._disk_lru.items:
                        evicted += self._disk_lru.add(name, size, self._pinned_name)
                self.stats.evictions_disk += len(evicted)
            for old in evicted:
                (self._disk_dir / old).unlink(missing_ok=True)
        except OSError as e:
            self._disk_failed("index rebuild", e)
        finally:
            self.disk_ready.set()

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
        doomed: list[str] = []
        with self._lock:
            targets = digests - self._pinned.keys()
            for k in [k for k in self._memory if k.digest in targets]:
                freed[k.file_name()] = len(self._memory.pop(k))
                self._mem_lru.remove(k)
            for name in [n for n in self._disk_lru.items if _digest_of_name(n) in targets]:
                freed[name] = self._disk_lru.items[name] - _HEADER.size
                self._disk_lru.remove(name)
                doomed.append(name)
        if self._disk_dir is not None:
            for name in doomed:
                with contextlib.suppress(OSError):
                    (self._disk_dir / name).unlink()
        return sum(freed.values())

    def cached_bytes(self, digest: str) -> int:
        """Bytes of one file version held in either tier (a block in both counts once)."""
        with self._lock:
            names = {n for n in self._disk_lru.items if _digest_of_name(n) == digest}
            total = sum(self._disk_lru.items[n] - _HEADER.size for n in names)
            for k, v in self._memory.items():
                if k.digest == digest and k.file_name() not in names:
                    total += len(v)
            return total

    def usage(self) -> dict[str, int]:
        with self._lock:
            return {
                "memory_used": self._mem_lru.used,
                "memory_capacity": self._mem_lru.capacity,
                "disk_used": self._disk_lru.used,
                "disk_capacity": self._disk_lru.capacity,
                "memory_blocks": len(self._memory),
                "disk_blocks": len(self._disk_lru.items),
                "pinned_bytes": sum(self._pinned.values()),
                "pinned_files": len(self._pinned),
            }

"""The disk tier of the block cache: one file per block, each with a CRC-32C in its header.

Files are named after their block's key, so a block on disk is found (and verified) whether or
not the index — rebuilt from the files in the background at start — knows it yet. LRU by
bytes; a block whose checksum fails is dropped (the cache refetches it). Writes can go behind
the reader on a writer thread. A disk that fails (full, read-only, broken) is counted and
bypassed: the cache reads through to the UFS instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from crc32c import crc32c

from metaproxy.cache.memfile import Lease, copy_file

K = TypeVar("K")

log = logging.getLogger("metaproxy.cache")

HEADER = struct.Struct(">4sIQ")  # magic, checksum, length
#: a block file: CRC-32C (HDFS's own block checksum; hardware-computed) of the bytes after the header
MAGIC = b"MPB2"
#: a block file written by earlier versions: zlib's CRC-32 (still read, so the disk tier stays warm)
MAGIC_V1 = b"MPB1"
#: the most bytes a write-behind tier keeps queued
MAX_WRITE_BEHIND = 64 * 1024 * 1024


class LRU(Generic[K]):
    """Sizes by key, oldest first; evicts to stay within a capacity in bytes."""

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


class DiskStats(Protocol):
    """The counters of the cache the tier belongs to."""

    evictions_disk: int
    disk_errors: int
    corrupt_blocks: int


class DiskTier:
    """Block files under one directory, accounted by file name.

    It shares its owner's lock (the cache answers questions about both tiers at once) and
    counters, and asks ``protected(name)`` before evicting a block (pinned versions).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        capacity: int,
        lock: threading.RLock,
        stats: DiskStats,
        protected: Callable[[str], bool],
        write_behind: bool,
    ) -> None:
        self.dir = Path(directory)
        self.lru: LRU[str] = LRU(capacity)
        self._lock = lock
        self._stats = stats
        self._protected = protected
        # temporary files carry this instance's token, so the index rebuild can tell a crashed
        # run's leftovers from a write of ours in flight (file mtimes are too coarse for that)
        self._tmp_token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ready = threading.Event()
        threading.Thread(target=self._rebuild_index, name="cache-index", daemon=True).start()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="cache-disk-writer") if write_behind else None
        self._queued = 0
        self._queued_cv = threading.Condition()

    def indexed(self, name: str) -> bool:
        return name in self.lru.items

    def may_hold(self, name: str) -> bool:
        """True if the block may be on disk (indexed, or unindexed while the index is rebuilt)."""
        return name in self.lru.items or (not self.ready.is_set() and (self.dir / name).exists())

    # -- reads ------------------------------------------------------------------------------

    def read(self, name: str) -> bytes | None:
        """A block's verified bytes, or None (not there, unreadable, or corrupt: dropped)."""
        path = self.dir / name
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            self.failed("read", e)
            return None
        if len(raw) < HEADER.size:
            self._drop_corrupt(name, path)
            return None
        magic, crc, length = HEADER.unpack_from(raw)
        data = raw[HEADER.size :]
        actual = crc32c(data) if magic == MAGIC else zlib.crc32(data) if magic == MAGIC_V1 else None
        if actual != crc or length != len(data):
            self._drop_corrupt(name, path)
            return None
        with self._lock:
            if name in self.lru.items:
                self.lru.touch(name)
                evicted = []
            else:  # not indexed yet (a rebuild under way, or a write landing right now)
                evicted = self.lru.add(name, len(raw), self._protected)
                self._stats.evictions_disk += len(evicted)
        self._unlink(evicted)
        return data

    def _drop_corrupt(self, name: str, path: Path) -> None:
        log.warning("cache: corrupt block %s dropped; refetching", path)
        with self._lock:
            self._stats.corrupt_blocks += 1
            self.lru.remove(name)
        with contextlib.suppress(OSError):
            path.unlink()

    # -- writes -----------------------------------------------------------------------------

    def store(self, name: str, lease: Lease) -> None:
        """Write a block (the lease is the tier's own and is closed here), behind the reader
        when the queue has room."""
        if self._writer is not None and self._reserve(lease.size):
            self._writer.submit(self._write_behind, name, lease)
            return
        with lease:
            self._write(name, lease)

    def _reserve(self, n: int) -> bool:
        with self._queued_cv:
            if self._queued + n > MAX_WRITE_BEHIND:
                return False
            self._queued += n
            return True

    def _write_behind(self, name: str, lease: Lease) -> None:
        try:
            self._write(name, lease)
        except Exception as e:  # never lose the writer thread
            log.warning("cache: disk tier write failed: %s", e)
        finally:
            lease.close()
            with self._queued_cv:
                self._queued -= lease.size
                self._queued_cv.notify_all()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until queued writes are done; False if they did not finish in time."""
        with self._queued_cv:
            return self._queued_cv.wait_for(lambda: self._queued == 0, timeout)

    def close(self) -> None:
        """Finish queued writes and stop the writer thread."""
        if self._writer is not None:
            self.flush()
            self._writer.shutdown(wait=True)

    def _write(self, name: str, lease: Lease) -> None:
        path = self.dir / name
        tmp = path.with_name(f"{path.name}.tmp-{self._tmp_token}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                if lease.crc is None or lease.file is None:
                    with lease.view() as data:
                        f.write(HEADER.pack(MAGIC, crc32c(data), len(data)))
                        f.write(data)
                else:  # memory file to disk file inside the kernel
                    f.write(HEADER.pack(MAGIC, lease.crc, lease.size))
                    f.flush()
                    copy_file(lease.file.fileno(), f.fileno(), lease.size, HEADER.size)
            os.replace(tmp, path)
        except OSError as e:
            self.failed("write", e)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            evicted = self.lru.add(name, lease.size + HEADER.size, self._protected)
            self._stats.evictions_disk += len(evicted)
        self._unlink(evicted)

    def failed(self, what: str, e: OSError) -> None:
        with self._lock:
            self._stats.disk_errors += 1
        log.warning("cache: disk tier %s failed (%s); reading through to the UFS", what, e)

    def _unlink(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    def _rebuild_index(self) -> None:
        """Account the blocks an earlier run left on disk, oldest first so LRU order holds."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            found = []
            for sub in self.dir.iterdir():
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
                    if name not in self.lru.items:
                        evicted += self.lru.add(name, size, self._protected)
                self._stats.evictions_disk += len(evicted)
            self._unlink(evicted)
        except OSError as e:
            self.failed("index rebuild", e)
        finally:
            self.ready.set()

    # -- management -------------------------------------------------------------------------

    def remove(self, names: list[str]) -> dict[str, int]:
        """Forget and delete blocks; the bytes each held."""
        freed: dict[str, int] = {}
        with self._lock:
            for name in names:
                if name in self.lru.items:
                    freed[name] = self.lru.items[name] - HEADER.size
                    self.lru.remove(name)
        self._unlink(list(freed))
        return freed

    def sizes(self, names: set[str]) -> int:
        """Bytes (without headers) of the indexed blocks among ``names``."""
        with self._lock:
            return sum(self.lru.items[n] - HEADER.size for n in names if n in self.lru.items)

"""The block cache: fixed-size blocks of UFS files in a memory tier and a disk tier.

A block is identified by :class:`BlockKey` — UFS path, file length, modification time and block
index — so a rewritten file (new length or mtime) can never be served from an older version's
blocks. The cache knows nothing about the UFS but a fetcher ``fetch(key) -> bytes`` that
returns one block; everything protocol-specific lives in the fetchers.

* memory tier: LRU by bytes; each block is a sealed memory file (``memfd``) where the platform
  has them, so a sender hands it to the kernel with ``sendfile`` — no copy through Python — and
  a block, once written, can never change under a reader (see :class:`Lease`);
* disk tier: one file per block with a CRC-32C checksum in its header, LRU by bytes, verified on
  every read (a corrupt block is dropped and refetched); its index is rebuilt from the files
  on start, in the background, while misses read through;
* a block read from disk is promoted to memory;
* concurrent misses on one block wait for a single fetch (single flight);
* a disk tier that fails (full, read-only, broken) is bypassed — the cache never fails a read
  because of itself; the failure is counted and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import logging
import mmap
import os
import struct
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from crc32c import crc32c

K = TypeVar("K")

log = logging.getLogger("metaproxy.cache")

_HEADER = struct.Struct(">4sIQ")  # magic, checksum, length
#: a block file: CRC-32C (HDFS's own block checksum; hardware-computed) of the bytes after the header
_MAGIC = b"MPB2"
#: a block file written by earlier versions: zlib's CRC-32 (still read, so the disk tier stays warm)
_MAGIC_V1 = b"MPB1"
#: the most bytes a write-behind cache keeps queued for its disk tier
MAX_WRITE_BEHIND = 64 * 1024 * 1024


#: memory files seal their blocks (no write, no resize) once filled
_SEALS = (
    getattr(fcntl, "F_SEAL_WRITE", 0) | getattr(fcntl, "F_SEAL_GROW", 0) | getattr(fcntl, "F_SEAL_SHRINK", 0)
)


def _new_memory_file(size: int) -> int | None:
    """An empty memory file of ``size`` bytes, or None where the platform has none (or the
    process is out of descriptors: the block is then kept as bytes — the cache never fails a
    read because of itself)."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("metaproxy-block", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as e:
        log.debug("cache: no memory file for a block (%s); keeping it as bytes", e)
        return None
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        log.debug("cache: could not size a memory file (%s); keeping the block as bytes", e)
        return None
    return fd


def _copy_file(src: int, dst: int, count: int, at: int) -> None:
    """``count`` bytes from the start of ``src`` to ``dst`` at ``at``, with ``sendfile``."""
    done = 0
    os.lseek(dst, at, os.SEEK_SET)
    while done < count:
        n = os.sendfile(dst, src, done, count - done)
        if n == 0:
            raise OSError(f"the block's memory file ended after {done} of {count} bytes")
        done += n


_scratch_local = threading.local()


#: the piece of a block received at a time (each reading thread keeps one such buffer)
RECEIVE_CHUNK = 1024 * 1024


def _scratch() -> memoryview:
    """This thread's receive buffer."""
    buf: bytearray | None = getattr(_scratch_local, "buf", None)
    if buf is None:
        buf = _scratch_local.buf = bytearray(RECEIVE_CHUNK)
    return memoryview(buf)


def _seal(fd: int) -> None:
    if _SEALS:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)


class _Held:
    """One block in the memory tier: a sealed memory file, or bytes where there is none.

    Only the cache touches it, under its lock: it closes the descriptor on eviction, and hands
    readers :class:`Lease` objects that hold descriptors of their own.
    """

    __slots__ = ("crc", "data", "fd", "size")

    def __init__(
        self, size: int, fd: int | None, data: bytes | bytearray | None, crc: int | None = None
    ) -> None:
        self.size = size
        self.fd = fd
        self.data = data
        #: CRC-32C of the bytes when known (computed while they are fresh in the CPU's cache)
        self.crc = crc

    @classmethod
    def of(cls, data: bytes | bytearray) -> _Held:
        """A held copy of ``data``."""
        fd = _new_memory_file(len(data))
        if fd is None:
            return cls(len(data), None, data)
        try:
            view = memoryview(data)
            at = 0
            while at < len(view):
                at += os.pwrite(fd, view[at:], at)
            _seal(fd)
        except OSError as e:
            os.close(fd)
            log.debug("cache: could not fill a memory file (%s); keeping the block as bytes", e)
            return cls(len(data), None, data)
        return cls(len(data), fd, None)

    @classmethod
    def received(cls, size: int, stream: Stream, key: BlockKey) -> _Held:
        """A block of ``size`` bytes read from ``stream``: received a chunk at a time into a
        buffer of this thread's (reused, so its pages stay mapped and warm), checksummed there
        and copied into a memory file with ``pwrite``. Receiving into the memory file's own
        mapping cost more: mapping a fresh file faults in every page, under the GIL."""
        fd = _new_memory_file(size)
        if fd is None:
            data = bytearray(size)
            read_exactly(stream, key, memoryview(data))
            return cls(size, None, data, crc32c(data))
        try:
            scratch = _scratch()
            crc = at = 0
            while at < size:
                piece = scratch[: min(len(scratch), size - at)]
                read_exactly(stream, key, piece)
                crc = crc32c(piece, crc)
                done = 0
                while done < len(piece):
                    done += os.pwrite(fd, piece[done:], at + done)
                at += len(piece)
            _seal(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(size, fd, None, crc)

    def lease(self) -> Lease:
        if self.fd is None:
            assert self.data is not None
            return Lease(self.size, data=self.data, crc=self.crc)
        return Lease(self.size, file=io.FileIO(os.dup(self.fd), "rb", closefd=True), crc=self.crc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Lease:
    """A reader's own hold on one block: valid until closed, whatever the cache evicts meanwhile.

    ``file`` (a descriptor of the block's sealed memory file, for ``sendfile``) or ``data``.
    Sealing matters: ``sendfile`` queues page references, not copies, so a block must never be
    rewritten in place while a socket may still be sending it — a sealed file cannot be, and an
    evicted block's pages live on until the last sender lets go of them.
    """

    __slots__ = ("crc", "data", "file", "size")

    def __init__(
        self,
        size: int,
        *,
        file: io.FileIO | None = None,
        data: bytes | bytearray | None = None,
        crc: int | None = None,
    ) -> None:
        self.size = size
        self.file = file
        self.data = data
        self.crc = crc

    def read(self) -> bytes:
        """The block's bytes (a copy out of its memory file)."""
        if self.data is not None:
            return bytes(self.data)
        assert self.file is not None
        return os.pread(self.file.fileno(), self.size, 0)

    def read_range(self, offset: int, count: int) -> bytes | memoryview:
        """``count`` bytes from ``offset`` of the block (a copy of just those)."""
        if self.data is not None:
            return memoryview(self.data)[offset : offset + count]
        assert self.file is not None
        return os.pread(self.file.fileno(), count, offset)

    @contextlib.contextmanager
    def view(self) -> Iterator[memoryview]:
        """The block's bytes in place, read-only, for as long as the ``with`` lasts."""
        if self.data is not None:
            yield memoryview(self.data)
            return
        assert self.file is not None
        if not self.size:
            yield memoryview(b"")
            return
        with mmap.mmap(self.file.fileno(), self.size, prot=mmap.PROT_READ) as mm:
            v = memoryview(mm)
            try:
                yield v
            finally:
                v.release()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


class Stream(Protocol):
    """The bytes of a UFS read, received into caller-owned buffers."""

    def readinto(self, buf: memoryview, /) -> int: ...

    def close(self) -> None: ...


def read_exactly(stream: Stream, key: BlockKey, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = stream.readinto(buf[got:])
        if not n:
            raise BlockShort(f"{key.path} ended {len(buf) - got} bytes early in block {key.index}")
        got += n


class BlockShort(OSError):
    """A UFS read ended before the block did: the file changed under the reader."""


@dataclass
class Flight:
    """One block being fetched: its waiters block on ``done`` (threads) or await it (an event
    loop, through ``asyncio.wrap_future``) — it always completes with None; the outcome is
    ``held`` or ``error``, read with :meth:`BlockCache.landed`."""

    done: Future[None] = field(default_factory=Future)
    held: _Held | None = None
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
        self._memory: dict[BlockKey, _Held] = {}
        self._mem_lru: _LRU[BlockKey] = _LRU(memory_capacity)
        self._disk_dir = Path(disk_dir) if disk_dir else None
        # the disk tier is accounted by file name: names are derived from keys, and an index
        # rebuilt after a restart knows only the files
        self._disk_lru: _LRU[str] = _LRU(disk_capacity)
        self._flights: dict[BlockKey, Flight] = {}
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
            from_disk = self._read_disk(key)
            if from_disk is not None:
                held = _Held.of(from_disk)
                with self._lock:
                    self.stats.disk_hits += 1
                    self.stats.bytes_from_disk += held.size
            else:
                if open_stream is not None:
                    size = self.block_length(key)
                    stream = open_stream(key, size)
                    try:
                        held = _Held.received(size, stream, key)
                    finally:
                        stream.close()
                elif fetch is not None:
                    held = _Held.of(fetch(key))
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
                held = _Held.received(self.block_length(key), stream, key)
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
        if self._disk_dir is None:
            return False
        name = key.file_name()
        if name in self._disk_lru.items:
            return True
        # until the index is rebuilt, a block may be on disk unindexed: look
        return not self.disk_ready.is_set() and (self._disk_dir / name).exists()

    def block_length(self, key: BlockKey) -> int:
        """How many bytes block ``key.index`` of its file has (the last one may be short)."""
        start = key.index * self.block_size
        return max(0, min(self.block_size, key.length - start))

    def _store(self, key: BlockKey, held: _Held) -> None:
        """Put a block fetched from the UFS on the disk tier, behind the reader if possible."""
        if self._disk_dir is None:
            return
        with self._lock:
            lease = held.lease()  # the writer's own hold: eviction cannot pull it away
        if self._writer is not None and self._reserve(held.size):
            self._writer.submit(self._write_behind, key, lease)
            return
        with lease:
            self._write_disk(key, lease)

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

    def _put_memory(self, key: BlockKey, held: _Held) -> Lease:
        """Keep ``held`` in the memory tier; returns a lease on it, taken before any eviction
        can close it."""
        with self._lock:
            previous = self._memory.pop(key, None)
            if previous is not None and previous is not held:
                previous.close()
            self._memory[key] = held
            leased = held.lease()
            # pinned blocks live on disk; with no disk tier they stay in memory instead
            guard = self._pinned_key if self._disk_dir is None and self._pinned else None
            for old in self._mem_lru.add(key, held.size, guard):
                gone = self._memory.pop(old, None)
                if gone is not None:
                    gone.close()
                self.stats.evictions_memory += 1
            return leased

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
        if magic == _MAGIC:
            actual = crc32c(data)
        elif magic == _MAGIC_V1:
            actual = zlib.crc32(data)
        else:
            actual = None
        if actual != crc or length != len(data):
            self._drop_corrupt(name, path)
            return None
        with self._lock:
            if name in self._disk_lru.items:
                self._disk_lru.touch(name)
                evicted = []
            else:  # not indexed yet (a rebuild under way, or a write landing right now)
                evicted = self._disk_lru.add(name, len(raw), self._pinned_name)
                self.stats.evictions_disk += len(evicted)
        for old in evicted:
            with contextlib.suppress(OSError):
                (self._disk_dir / old).unlink()
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

    def _write_behind(self, key: BlockKey, lease: Lease) -> None:
        try:
            self._write_disk(key, lease)
        except Exception as e:  # never lose the writer thread
            log.warning("cache: disk tier write failed: %s", e)
        finally:
            lease.close()
            with self._queued_cv:
                self._queued -= lease.size
                self._queued_cv.notify_all()

    def flush(self, timeout: float = 60.0) -> bool:
        """Wait until queued disk writes are done; False if they did not finish in time."""
        with self._queued_cv:
            return self._queued_cv.wait_for(lambda: self._queued == 0, timeout)

    def close(self) -> None:
        """Finish queued disk writes, stop the writer thread, release the memory tier's files
        (leases still out stay valid)."""
        if self._writer is not None:
            self.flush()
            self._writer.shutdown(wait=True)
        with self._lock:
            for held in self._memory.values():
                held.close()
            self._memory.clear()
            self._mem_lru = _LRU(self._mem_lru.capacity)

    def _write_disk(self, key: BlockKey, lease: Lease) -> None:
        if self._disk_dir is None:
            return
        name = key.file_name()
        path = self._disk_dir / name
        tmp = path.with_name(f"{path.name}.tmp-{self._tmp_token}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                if lease.crc is None or lease.file is None:
                    with lease.view() as data:
                        f.write(_HEADER.pack(_MAGIC, crc32c(data), len(data)))
                        f.write(data)
                else:  # memory file to disk file inside the kernel
                    f.write(_HEADER.pack(_MAGIC, lease.crc, lease.size))
                    f.flush()
                    _copy_file(lease.file.fileno(), f.fileno(), lease.size, _HEADER.size)
            os.replace(tmp, path)
        except OSError as e:
            self._disk_failed("write", e)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        with self._lock:
            evicted = self._disk_lru.add(name, lease.size + _HEADER.size, self._pinned_name)
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
        self.flush()  # a block still queued for the disk tier would land there after the free
        with self._lock:
            targets = digests - self._pinned.keys()
            for k in [k for k in self._memory if k.digest in targets]:
                held = self._memory.pop(k)
                freed[k.file_name()] = held.size
                held.close()
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
                    total += v.size
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

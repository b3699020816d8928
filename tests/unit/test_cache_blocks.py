"""The block cache with a one-line fake fetcher: tiers, eviction, checksums, single flight."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest

from metaproxy.cache.blocks import BlockCache, BlockKey, BlockShort

pytestmark = pytest.mark.unit

BS = 1024


def fetcher(calls: list[BlockKey], delay: float = 0.0):  # type: ignore[no-untyped-def]
    def fetch(key: BlockKey) -> bytes:
        calls.append(key)
        if delay:
            time.sleep(delay)
        return bytes([key.index % 256]) * BS

    return fetch


def key(i: int, mtime: int = 1) -> BlockKey:
    return BlockKey("hdfs://nn/f", 100 * BS, mtime, i)


def test_memory_hit_after_miss(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    assert cache.get(key(1), fetcher(calls)) == b"\x01" * BS
    assert cache.get(key(1), fetcher(calls)) == b"\x01" * BS
    assert len(calls) == 1
    assert cache.stats.misses == 1 and cache.stats.memory_hits == 1
    assert cache.stats.hit_ratio == 0.5


def test_new_version_is_a_different_block(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    cache.get(key(1, mtime=1), fetcher(calls))
    cache.get(key(1, mtime=2), fetcher(calls))
    assert [k.mtime_ms for k in calls] == [1, 2]


def test_memory_lru_evicts_and_disk_serves(tmp_path: Path) -> None:
    cache = BlockCache(BS, 2 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    for i in range(5):
        cache.get(key(i), fetcher(calls))
    assert cache.stats.evictions_memory == 3
    assert cache.usage()["memory_used"] <= 2 * BS
    assert cache.get(key(0), fetcher(calls)) == b"\x00" * BS  # from disk, promoted
    assert len(calls) == 5 and cache.stats.disk_hits == 1


def test_disk_lru_respects_capacity(tmp_path: Path) -> None:
    cache = BlockCache(BS, BS, tmp_path, 3 * (BS + 16))
    calls: list[BlockKey] = []
    for i in range(6):
        cache.get(key(i), fetcher(calls))
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(files) == 3 and cache.stats.evictions_disk == 3


def test_corrupt_disk_block_is_refetched(tmp_path: Path) -> None:
    cache = BlockCache(BS, BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    cache.get(key(7), fetcher(calls))
    cache.get(key(8), fetcher(calls))  # pushes block 7 out of memory
    path = tmp_path / key(7).file_name()
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert cache.get(key(7), fetcher(calls)) == b"\x07" * BS
    assert cache.stats.corrupt_blocks == 1 and len(calls) == 3


def test_disk_tier_survives_a_restart(tmp_path: Path) -> None:
    calls: list[BlockKey] = []
    first = BlockCache(BS, BS, tmp_path, 100 * BS)
    for i in range(3):
        first.get(key(i), fetcher(calls))
    second = BlockCache(BS, BS, tmp_path, 100 * BS)
    # served from disk even before the index rebuild finished
    assert second.get(key(1), fetcher(calls)) == b"\x01" * BS
    assert second.disk_ready.wait(10)
    assert second.usage()["disk_blocks"] == 3
    assert len(calls) == 3


def test_single_flight(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    fetch = fetcher(calls, delay=0.2)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(key(3), fetch))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [b"\x03" * BS] * 8


def test_fetch_errors_reach_every_waiter_and_are_not_cached(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)

    def broken(k: BlockKey) -> bytes:
        raise OSError("ufs down")

    with pytest.raises(OSError, match="ufs down"):
        cache.get(key(1), broken)
    calls: list[BlockKey] = []
    assert cache.get(key(1), fetcher(calls)) == b"\x01" * BS


def test_unwritable_disk_tier_reads_through(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cache = BlockCache(BS, BS, blocker, 100 * BS)
    calls: list[BlockKey] = []
    assert cache.get(key(1), fetcher(calls)) == b"\x01" * BS
    assert cache.stats.disk_errors >= 1


def test_restart_removes_crash_leftovers_but_not_writes_in_flight(tmp_path: Path) -> None:
    sub = tmp_path / "ab"
    sub.mkdir()
    leftover = sub / "abcd.0.tmp-1-deadbeef-7"
    leftover.write_bytes(b"half a block")
    cache = BlockCache(BS, BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    # writes race the index rebuild; none of them may be lost to it
    for i in range(20):
        cache.get(key(i), fetcher(calls))
    assert cache.disk_ready.wait(10)
    assert not leftover.exists()
    assert cache.stats.disk_errors == 0
    blocks = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert len(blocks) == 20 and not any(".tmp-" in f.name for f in blocks)


def test_pinned_blocks_are_never_evicted(tmp_path: Path) -> None:
    cache = BlockCache(BS, BS, tmp_path, 4 * (BS + 16))
    calls: list[BlockKey] = []
    pinned = [BlockKey("hdfs://nn/pinned", 2 * BS, 1, i) for i in range(2)]
    cache.pin(pinned[0].digest, 2 * BS)
    for k in pinned:
        cache.get(k, fetcher(calls))
    for i in range(10):  # churn far past the disk tier's capacity
        cache.get(key(i), fetcher(calls))
    assert cache.cached_bytes(pinned[0].digest) == 2 * BS
    assert cache.usage()["pinned_bytes"] == 2 * BS
    before = len(calls)
    for k in pinned:
        cache.get(k, fetcher(calls))
    assert len(calls) == before  # served from the cache
    cache.unpin(pinned[0].digest)
    for i in range(10, 20):
        cache.get(key(i), fetcher(calls))
    assert cache.cached_bytes(pinned[0].digest) == 0


def test_pins_hold_in_memory_without_a_disk_tier() -> None:
    cache = BlockCache(BS, 2 * BS, None, 0)
    calls: list[BlockKey] = []
    k = BlockKey("hdfs://nn/pinned", BS, 1, 0)
    cache.pin(k.digest, BS)
    cache.get(k, fetcher(calls))
    for i in range(5):
        cache.get(key(i), fetcher(calls))
    assert cache.cached_bytes(k.digest) == BS


def test_free_drops_a_version_from_both_tiers_but_keeps_pins(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    a = [BlockKey("hdfs://nn/a", 3 * BS, 1, i) for i in range(3)]
    b = BlockKey("hdfs://nn/b", BS, 1, 0)
    for k in [*a, b]:
        cache.get(k, fetcher(calls))
    cache.pin(b.digest, BS)
    assert cache.free({a[0].digest, b.digest}) == 3 * BS  # in both tiers, counted once
    assert cache.cached_bytes(a[0].digest) == 0
    assert cache.cached_bytes(b.digest) == BS
    assert not [f for f in tmp_path.rglob(f"{a[0].digest}.*")]
    cache.get(a[0], fetcher(calls))
    assert calls[-1] == a[0]  # refetched


# -- memory files, leases and runs ----------------------------------------------------------


class FakeStream:
    """The bytes of a UFS read: block i of the file is ``i`` repeated; ``cut`` ends it early."""

    def __init__(self, first: BlockKey, nbytes: int, opened: list[tuple[int, int]], cut: int | None = None):
        opened.append((first.index, nbytes))
        self.at = first.index * BS
        self.end = self.at + (nbytes if cut is None else min(nbytes, cut))
        self.closed = False

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.end - self.at, 300)  # short reads, as sockets give them
        for j in range(n):
            buf[j] = ((self.at + j) // BS) % 256
        self.at += n
        return n

    def close(self) -> None:
        self.closed = True


def opener(opened: list[tuple[int, int]], cut: int | None = None):  # type: ignore[no-untyped-def]
    return lambda first, nbytes: FakeStream(first, nbytes, opened, cut)


def test_a_lease_outlives_the_eviction_of_its_block() -> None:
    cache = BlockCache(BS, BS, None, 0)  # room for one block in memory, no disk
    calls: list[BlockKey] = []
    lease = cache.open(key(1), fetcher(calls))
    cache.get(key(2), fetcher(calls))
    cache.get(key(3), fetcher(calls))
    assert cache.stats.evictions_memory == 2 and not cache.contains(key(1))
    assert lease.read() == b"\x01" * BS  # the evicted block's memory file lives on for the lease
    lease.close()


@pytest.mark.skipif(
    not hasattr(os, "memfd_create") and os.environ.get("CI") != "true",
    reason="memory files are Linux's; CI runs on Linux, where their absence fails instead",
)
def test_a_cached_block_cannot_change_under_a_sender(tmp_path: Path) -> None:
    """Blocks are sent with sendfile, which queues page references: a sealed file cannot be
    written, so bytes on their way to a socket are the bytes that were cached."""
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    with cache.open(key(4), open_stream=opener([])) as lease:
        assert lease.file is not None
        with pytest.raises(PermissionError):
            os.pwrite(lease.file.fileno(), b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(lease.file.fileno(), 1)
        assert lease.read() == b"\x04" * BS


def test_a_run_of_misses_is_one_ufs_read(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    cache.get(key(2), fetcher([]))  # already held: splits the run
    opened: list[tuple[int, int]] = []
    runs = cache.claim_run([key(i) for i in range(6)])
    assert [[k.index for k in run] for run in runs] == [[0, 1], [3, 4, 5]]
    assert cache.claim_run([key(i) for i in range(6)]) == []  # all held or under way
    for run in runs:
        cache.load_run(run, opener(opened))
    assert opened == [(0, 2 * BS), (3, 3 * BS)]
    for i in range(6):
        assert cache.get(key(i), fetcher([])) == bytes([i]) * BS
    assert cache.stats.misses == 1 + 5  # block 2 by itself, then the runs


def test_readers_of_a_claimed_block_wait_for_its_run(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    (run,) = cache.claim_run([key(7), key(8)])
    got: list[bytes] = []
    calls: list[BlockKey] = []
    reader = threading.Thread(target=lambda: got.append(cache.get(key(8), fetcher(calls))))
    reader.start()
    time.sleep(0.05)
    assert not got  # still waiting: the block is claimed, not fetched by the reader itself
    cache.load_run(run, opener([]))
    reader.join(5)
    assert got == [b"\x08" * BS] and calls == []


def test_a_run_cut_short_fails_its_missing_blocks_only(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    (run,) = cache.claim_run([key(0), key(1), key(2)])
    flight = cache.in_flight(key(1))
    assert flight is not None
    cache.load_run(run, opener([], cut=BS + BS // 2))  # the file ended in block 1
    assert cache.get(key(0), fetcher([])) == b"\x00" * BS
    with pytest.raises(BlockShort):
        cache.landed(flight)
    assert cache.in_flight(key(2)) is None  # nobody is left waiting on a dead run
    calls: list[BlockKey] = []
    assert cache.get(key(1), fetcher(calls)) == b"\x01" * BS and len(calls) == 1  # fetched anew


def test_streamed_blocks_reach_the_disk_tier_intact(tmp_path: Path) -> None:
    first = BlockCache(BS, 10 * BS, tmp_path, 100 * BS, write_behind=True)
    for run in first.claim_run([key(i) for i in range(4)]):
        first.load_run(run, opener([]))
    first.close()
    second = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    second.disk_ready.wait(5)
    calls: list[BlockKey] = []
    assert [second.get(key(i), fetcher(calls)) for i in range(4)] == [bytes([i]) * BS for i in range(4)]
    assert calls == [] and second.stats.disk_hits == 4 and second.stats.corrupt_blocks == 0


def test_blocks_written_by_an_earlier_version_are_still_read(tmp_path: Path) -> None:
    """Blocks on disk from before CRC-32C carry zlib's CRC-32 under the old magic."""
    data = b"\x05" * BS
    path = tmp_path / key(5).file_name()
    path.parent.mkdir(parents=True)
    path.write_bytes(struct.pack(">4sIQ", b"MPB1", zlib.crc32(data), len(data)) + data)
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    calls: list[BlockKey] = []
    assert cache.get(key(5), fetcher(calls)) == data
    assert calls == [] and cache.stats.disk_hits == 1


def test_free_waits_for_blocks_queued_for_the_disk_tier(tmp_path: Path) -> None:
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS, write_behind=True)
    for i in range(8):
        cache.get(key(i), fetcher([]))
    cache.free({key(0).digest})
    cache.flush()
    assert cache.usage()["disk_blocks"] == 0 and not list(tmp_path.rglob("*.*"))


def test_without_memory_files_blocks_are_kept_as_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors (or not on Linux): the cache keeps working, on plain bytes."""

    def refuse(*args: object) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refuse)
    cache = BlockCache(BS, 10 * BS, tmp_path, 100 * BS)
    with cache.open(key(3), open_stream=opener([])) as lease:
        assert lease.file is None and lease.read() == b"\x03" * BS
    (run,) = cache.claim_run([key(4), key(5)])
    cache.load_run(run, opener([]))
    assert cache.get(key(5), fetcher([])) == b"\x05" * BS


def test_a_block_read_before_it_is_indexed_evicts_no_pinned_block(tmp_path: Path) -> None:
    """A reader can find a block file between its write landing and its indexing (or before
    the index is rebuilt after a restart): accounting it then must respect pins too."""
    cache = BlockCache(BS, BS, tmp_path, 2 * (BS + 16))
    assert cache.disk_ready.wait(10)  # the start's index rebuild is done: it indexes nothing later
    pinned = [BlockKey("hdfs://nn/pinned", 2 * BS, 1, i) for i in range(2)]
    cache.pin(pinned[0].digest, 2 * BS)
    for k in pinned:
        cache.get(k, fetcher([]))
    cache.get(key(9), fetcher([]))  # memory now holds key 9 only; the disk holds the pins
    assert cache.flush()  # written behind: on disk and indexed before the stray file appears
    data = b"\x07" * BS
    path = tmp_path / key(7).file_name()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">4sIQ", b"MPB1", zlib.crc32(data), len(data)) + data)
    calls: list[BlockKey] = []
    assert cache.get(key(7), fetcher(calls)) == data and calls == []
    assert cache.cached_bytes(pinned[0].digest) == 2 * BS
    assert all((tmp_path / k.file_name()).exists() for k in pinned)

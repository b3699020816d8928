"""The block cache with a one-line fake fetcher: tiers, eviction, checksums, single flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from metaproxy.cache.blocks import BlockCache, BlockKey

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

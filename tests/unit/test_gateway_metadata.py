"""The gateway's metadata cache: listings re-read in the background before they go stale — but
not while their UFS is known to be down (a re-read would only wait for a timeout and hold a
thread readers may need); served stale while down within ``stale_if_error``, refused at once
beyond it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from metaproxy.cache.metadata import MetadataCache
from metaproxy.cache.watch import UfsHealth, root_of
from metaproxy.ufs import FileStatus, UfsUnavailable

pytestmark = pytest.mark.unit

DIR = "hdfs://nn:8020/lake/t/d=1"


class ListingUfs:
    """A UFS that only lists, counting its calls; it fails while ``down``."""

    def __init__(self) -> None:
        self.lists = 0
        self.down = False

    def list_files(self, uri: str) -> list[FileStatus]:
        self.lists += 1
        if self.down:
            raise UfsUnavailable("no answer")
        return [FileStatus("part-0.parquet", 10, 1)]

    def stat(self, uri: str) -> FileStatus:
        raise AssertionError("not used")


def cache(stale_after_s: float, stale_if_error_s: float = 0.0) -> tuple[MetadataCache, ListingUfs, UfsHealth]:
    ufs = ListingUfs()
    health = UfsHealth()
    pool = ThreadPoolExecutor(1)
    fake: Any = ufs
    return MetadataCache(fake, stale_after_s, 60.0, pool, health, stale_if_error_s), ufs, health


def test_a_listing_about_to_go_stale_is_reread_in_the_background() -> None:
    md, ufs, _ = cache(stale_after_s=0.4)
    md.listing(DIR)
    time.sleep(0.32)  # past three quarters of its life
    assert md.refresh_listings() == 1
    md.pool.shutdown(wait=True)
    assert ufs.lists == 2


def test_no_background_reread_while_the_ufs_is_known_down() -> None:
    md, ufs, health = cache(stale_after_s=0.4)
    md.listing(DIR)
    health.failed(root_of(DIR), "frozen")
    time.sleep(0.32)
    assert md.refresh_listings() == 0
    md.pool.shutdown(wait=True)
    assert ufs.lists == 1
    health.ok(root_of(DIR))
    assert md.refresh_listings() == 1


def test_while_down_a_known_listing_is_served_stale_and_an_unknown_one_fails_at_once() -> None:
    md, ufs, health = cache(stale_after_s=0.05, stale_if_error_s=60.0)
    md.listing(DIR)
    time.sleep(0.06)
    ufs.down = True
    health.failed(root_of(DIR), "frozen")
    assert [f.path for f in md.listing(DIR)] == ["part-0.parquet"]
    assert md.stale_served == 1
    with pytest.raises(UfsUnavailable, match="is not cached"):
        md.listing("hdfs://nn:8020/lake/t/d=2")
    assert ufs.lists == 1  # neither asked the UFS

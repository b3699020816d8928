"""Every Prometheus metric of the gateway, in one place.

Counters that the data path bumps are module-level (one registry per process); the figures of
the block cache and the bytes read from each UFS are read at scrape time by
:class:`CacheCollector`, from the same numbers ``metaproxy report`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from metaproxy.cache.blocks import BlockCache

REQUESTS = Counter("metaproxy_gateway_requests", "S3 requests to the gateway", ["op", "status"])
BYTES = Counter("metaproxy_gateway_bytes_served", "Bytes served by the gateway", ["mount"])
UFS_CALLS = Counter("metaproxy_gateway_ufs_calls", "Calls the gateway made to a UFS", ["ufs", "op"])
READ_AHEAD = Counter("metaproxy_gateway_read_ahead_blocks", "Blocks fetched ahead of sequential readers")
LISTING_REFRESHES = Counter(
    "metaproxy_gateway_listing_refreshes",
    "Listings re-read in the background before going stale",
    ["outcome"],
)


STALE_SERVED = Counter(
    "metaproxy_gateway_stale_served",
    "Listings and statuses served stale because their UFS did not answer",
    ["what"],
)
STALE_AGE = Gauge(
    "metaproxy_gateway_stale_age_seconds",
    "Age of the last listing or status served stale because its UFS did not answer",
)


def count_ufs_call(scheme: str, op: str) -> None:
    """A :class:`~metaproxy.ufs.UfsSet` ``on_call`` hook."""
    UFS_CALLS.labels(scheme, op).inc()


class CacheCollector:
    """Per-tier figures of one gateway's cache, and bytes read per UFS, read at scrape time."""

    def __init__(self, cache: BlockCache, bytes_by_ufs: Callable[[], Mapping[str, int]]) -> None:
        self.cache = cache
        self.bytes_by_ufs = bytes_by_ufs

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        u = self.cache.usage()
        st = self.cache.stats
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
        for name, n in sorted(self.bytes_by_ufs().items()):
            ufs.add_metric([name], n)
        yield ufs

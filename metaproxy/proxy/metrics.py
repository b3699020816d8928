"""Every Prometheus metric of the metastore proxy."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter("metaproxy_proxy_calls", "Metastore calls through the proxy", ["method", "outcome"])
LATENCY = Histogram(
    "metaproxy_proxy_call_seconds",
    "Latency of metastore calls through the proxy",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REWRITTEN = Counter("metaproxy_proxy_locations_rewritten", "Locations rewritten", ["direction"])
UPSTREAM_UP = Gauge("metaproxy_proxy_upstream_up", "1 if the last attempt to reach this HMS worked", ["uri"])
CONNECTIONS = Gauge("metaproxy_proxy_client_connections", "Open client connections", ["profile"])
TRANSLATED = Counter(
    "metaproxy_proxy_translated_calls",
    "Calls sent upstream as another method the upstream serves",
    ["method", "as_method"],
)
STATE_UP = Gauge("metaproxy_proxy_state_up", "1 if the last read of the state (mounts, flips) worked")
POOL_IDLE = Gauge("metaproxy_proxy_upstream_pool_idle", "Open upstream connections waiting in the pool")
POOL_EVENTS = Counter(
    "metaproxy_proxy_upstream_pool",
    "Upstream connections opened, reused, checked, expired, evicted; calls retried on a new one, calls ended (aborted) when the HMS stopped answering",
    ["event"],
)

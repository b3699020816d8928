"""Gateway nodes behind a load balancer: one node's own config, and the management client that
reaches every node.

The balancer (HAProxy with ``balance uri`` and ``hash-type consistent``, see docs/cluster.md)
sends every request for one object to the node that owns it; this module never computes that
ownership itself. A file is loaded on its owner by a request the balancer routes like the
object's own GETs: ``POST /<bucket>/<key>?metaproxy-load``, signed like any S3 request (the
query is not hashed). Rules that every node must hold — pins, TTLs, frees — go to each listed
node's admin endpoint. The nodes are the ones ``[cluster]`` lists, never discovered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from metaproxy.config import Config, NodeConfig

#: the query parameter of the load request the balancer sends to the object's owner
LOAD_QUERY = "metaproxy-load"


class ClusterError(ValueError):
    """A node is unknown, or no node answered."""


def node_entry(cfg: Config, name: str) -> NodeConfig:
    for node in cfg.cluster.nodes:
        if node.name == name:
            return node
    listed = ", ".join(n.name for n in cfg.cluster.nodes) or "none"
    raise ClusterError(f"no node {name!r} in [cluster] (nodes: {listed})")


def node_config(cfg: Config, name: str) -> Config:
    """The config one node runs with: its own address, ports and disk tier; the rest shared."""
    node = node_entry(cfg, name)
    g = cfg.gateway
    disk_path = node.disk_path
    if not disk_path and g.disk.path:
        disk_path = str(Path(g.disk.path).with_name(f"{Path(g.disk.path).name}-{name}"))
    return replace(
        cfg,
        gateway=replace(
            g,
            host=node.host,
            port=node.port,
            admin_port=node.admin_port,
            disk=replace(g.disk, path=disk_path),
        ),
        proxy=replace(cfg.proxy, admin_host=node.host),
    )


@dataclass(frozen=True)
class NodeAddress:
    name: str
    s3: str
    admin: str


def nodes(cfg: Config) -> list[NodeAddress]:
    """Every node of the cluster; a single gateway (no ``[cluster]`` nodes) is one node, ``local``."""
    if not cfg.cluster.nodes:
        g = cfg.gateway
        return [
            NodeAddress("local", f"http://{g.host}:{g.port}", f"http://{cfg.proxy.admin_host}:{g.admin_port}")
        ]
    return [
        NodeAddress(n.name, f"http://{n.host}:{n.port}", f"http://{n.host}:{n.admin_port}")
        for n in cfg.cluster.nodes
    ]


def object_path(bucket: str, key: str) -> str:
    """The path of an object as S3 clients send it (the AWS SDKs and botocore percent-encode
    every byte but unreserved characters and ``/``), so the balancer hashes a load request like
    the object's own GETs."""
    return "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")


def signed_load(endpoint: str, cfg: Config, key: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """Ask the owner of ``key`` (through the balancer at ``endpoint``) to load it; its answer."""
    import requests
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    g = cfg.gateway
    url = f"{endpoint.rstrip('/')}{object_path(g.bucket, key)}?{LOAD_QUERY}"
    req = AWSRequest(method="POST", url=url, data=b"", headers={"x-amz-content-sha256": _EMPTY_SHA256})
    S3SigV4Auth(Credentials(g.access_key, g.secret_key), "s3", g.region).add_auth(req)
    r = requests.post(url, data=b"", headers=dict(req.headers), timeout=timeout_s)
    if r.status_code != 200:
        raise ClusterError(f"loading /{key} through {endpoint}: HTTP {r.status_code}: {r.text[:300]}")
    doc = dict(r.json())
    doc["node"] = r.headers.get(NODE_HEADER, "")
    return doc


_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: the response header naming the node that answered (set by every node of a cluster)
NODE_HEADER = "x-metaproxy-node"


class ClusterAdmin:
    """The admin endpoints of every node: one command to all, or to the first that answers."""

    def __init__(self, cfg: Config, call: Callable[[str, str, dict[str, Any]], dict[str, Any]]) -> None:
        """``call(admin_url, command, args)`` sends one command to one node (raising on failure)."""
        self.cfg = cfg
        self.nodes = nodes(cfg)
        self._call = call

    def each(self, command: str, **args: Any) -> dict[str, dict[str, Any]]:
        """``command`` on every node; each node's answer, or ``{"error": …}`` where it failed."""
        from concurrent.futures import ThreadPoolExecutor

        def one(n: NodeAddress) -> dict[str, Any]:
            try:
                return self._call(n.admin, command, args)
            except Exception as e:
                return {"error": str(e)}

        with ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            answers = list(pool.map(one, self.nodes))
        return {n.name: a for n, a in zip(self.nodes, answers, strict=True)}

    def any(self, command: str, **args: Any) -> dict[str, Any]:
        """``command`` on the first node that answers (for what every node answers alike)."""
        errors = []
        for n in self.nodes:
            try:
                return self._call(n.admin, command, args)
            except Exception as e:
                errors.append(f"{n.name}: {e}")
        raise ClusterError("no node answered: " + "; ".join(errors))


def merge_reports(reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The cluster's totals from each node's ``/report`` (nodes that did not answer are left
    out of the sums and listed under ``nodes_not_answering``)."""
    ok = {name: r for name, r in reports.items() if "error" not in r}
    tiers: dict[str, int] = {}
    sums: dict[str, int] = {}
    per_ufs: dict[str, int] = {}
    for r in ok.values():
        for k, v in r.get("tiers", {}).items():
            if isinstance(v, int | float):
                tiers[k] = tiers.get(k, 0) + int(v)
        for k in (
            "bytes_from_memory",
            "bytes_from_disk",
            "bytes_from_ufs",
            "evictions_memory",
            "evictions_disk",
        ):
            sums[k] = sums.get(k, 0) + int(r.get(k, 0))
        for ufs, n in r.get("bytes_read_per_ufs", {}).items():
            per_ufs[ufs] = per_ufs.get(ufs, 0) + int(n)
    served = sums.get("bytes_from_memory", 0) + sums.get("bytes_from_disk", 0) + sums.get("bytes_from_ufs", 0)
    hits = sums.get("bytes_from_memory", 0) + sums.get("bytes_from_disk", 0)
    return {
        "nodes": len(reports),
        "nodes_answering": len(ok),
        "nodes_not_answering": {name: r["error"] for name, r in reports.items() if "error" in r},
        "tiers": tiers,
        **sums,
        "hit_ratio": hits / served if served else 0.0,
        "bytes_read_per_ufs": per_ufs,
    }


def balancer_view(stats_url: str, timeout_s: float = 5.0) -> dict[str, dict[str, str]]:
    """Each server's state as the balancer sees it (HAProxy's CSV statistics): ``{node: {status,
    check, last_change_s}}``; a balancer that cannot be read gives ``{"": {"error": …}}``."""
    import csv
    import io

    import requests

    url = stats_url if stats_url.endswith(";csv") else stats_url.rstrip("/") + ";csv"
    try:
        r = requests.get(url, timeout=timeout_s)
        r.raise_for_status()
    except requests.RequestException as e:
        return {"": {"error": f"cannot read the balancer's statistics at {stats_url}: {e}"}}
    out: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(r.text.lstrip("# "))):
        name = row.get("svname", "")
        if name in ("FRONTEND", "BACKEND", ""):
            continue
        # a server appears in each backend; the one that runs its health check speaks for it
        if name not in out or (row.get("check_status") and not out[name]["check"]):
            out[name] = {
                "status": row.get("status", ""),
                "check": row.get("check_status", ""),
                "last_change_s": row.get("lastchg", ""),
            }
    return out

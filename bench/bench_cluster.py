"""The gateway cluster: capacity, affinity, failover and the balancer's own cost, in one run.

* capacity: the sample at a scale whose data is about 2.5x one node's memory tier (nodes with
  no disk tier, so the memory tiers are the whole cache), a Trino suite through ``onprem`` read
  once to fill and once warm, with 1, 2 and 3 nodes behind HAProxy: the warm pass's hit ratio
  and its time per N;
* affinity: three nodes, the data set loaded through the cluster (``cache load``), then bytes
  cached across the nodes / bytes of distinct data;
* failover: three nodes, the suite run three times; during the second, one node is killed
  (SIGKILL): failed queries, rows beside ``direct``, and the time that pass lost against the
  first;
* balancer overhead: one node read warm by 8 readers of 8 MiB ranges over a 64 MiB object
  (bench_gateway's warm client), straight and through HAProxy, rounds alternating.

The nodes and the balancer are the bench's own processes (``metaproxy gateway --node`` with a
config derived from the stack's, HAProxy with the config the stack writes for ``--gateways N``);
Trino's ``onprem`` catalog is pointed at them for the run (its S3 mapping is re-read every 2 s)
and back at the stack's gateway at the end. Ratios are printed; no timing is asserted.

    .venv/bin/python bench/bench_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_gateway as bg  # noqa: E402

from metaproxy.cache.cluster import balancer_view  # noqa: E402
from metaproxy_devstack import sample_data  # noqa: E402
from metaproxy_devstack.components.cluster import (  # noqa: E402
    cluster_toml,
    haproxy_binary,
    haproxy_config,
    node_name,
    node_ports,
)
from metaproxy_devstack.components.trino import MAPPING_REFRESH_S, write_gateway_mapping  # noqa: E402
from metaproxy_devstack.launcher import Stack  # noqa: E402
from metaproxy_devstack.layout import StackLayout  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
MiB = 1024 * 1024

QUERIES = [
    "SELECT ss_store_sk, count(*), sum(ss_quantity), sum(ss_net_profit) FROM store_sales GROUP BY 1 ORDER BY 1",
    "SELECT i.i_category, count(*), sum(s.ss_ext_sales_price) FROM store_sales s "
    "JOIN item i ON s.ss_item_sk = i.i_item_sk GROUP BY 1 ORDER BY 1",
    "SELECT d.d_moy, s.s_state, sum(ss.ss_net_profit) FROM store_sales ss "
    "JOIN date_dim d ON ss.ss_sold_date_sk = d.d_date_sk JOIN store s ON ss.ss_store_sk = s.s_store_sk "
    "GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT count(*), sum(ss_ext_sales_price) FROM store_sales WHERE ss_quantity > 50",
    "SELECT i_item_id, i_current_price FROM item ORDER BY i_current_price DESC, i_item_id LIMIT 10",
]


class Trino:
    def __init__(self, ep: dict[str, Any]) -> None:
        import trino

        host, port = ep["trino"].split("//", 1)[1].split(":")
        self.connect = lambda catalog: trino.dbapi.connect(
            host=host, port=int(port), user="bench", catalog=catalog, schema="tpcds", request_timeout=600
        )

    def run(self, sql: str, catalog: str) -> list[list[Any]]:
        conn = self.connect(catalog)
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return [list(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def suite(self, catalog: str = "onprem") -> tuple[float, list[list[list[Any]]]]:
        t0 = time.perf_counter()
        rows = [self.run(q, catalog) for q in QUERIES]
        return time.perf_counter() - t0, rows


class BenchCluster:
    """N gateway nodes of the bench's own, HAProxy in front (unless ``balancer`` is False)."""

    def __init__(
        self, ep: dict[str, Any], workdir: Path, n: int, memory: int, disk: int, balancer: bool = True
    ) -> None:
        self.ep, self.n, self.balanced = ep, n, balancer
        self.dir = workdir / f"cluster-{n}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.lay = StackLayout(dir=self.dir, gateways=n)
        text = Path(ep["config"]).read_text()
        text = re.sub(r"(\[gateway\.memory\]\ncapacity = )\"[^\"]*\"", rf'\g<1>"{memory}"', text)
        text = re.sub(
            r"(\[gateway\.disk\]\npath = )\"[^\"]*\"\ncapacity = \"[^\"]*\"",
            rf'\g<1>"{self.dir}/cache"\ncapacity = "{disk}"',
            text,
        )
        text = text.split("\n[cluster]")[0]  # the stack's own cluster, if it runs one
        # [cluster] as the stack writes it (for one node too: a layout of two sharing the ports,
        # its second node dropped), so `gateway --node` and HAProxy's config agree
        wide = StackLayout(dir=self.dir, gateways=max(n, 2), ports=self.lay.ports)
        text += "\n" + cluster_toml(wide)
        self.config = self.dir / "metaproxy.toml"
        self.config.write_text(_only_nodes(text, n))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def node_urls(self, i: int) -> tuple[str, str]:
        s3, admin = node_ports(self.lay, i)
        return f"http://127.0.0.1:{s3}", f"http://127.0.0.1:{admin}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.lay.port('balancer')}" if self.balanced else self.node_urls(1)[0]

    def start(self) -> BenchCluster:
        for i in range(1, self.n + 1):
            self.start_node(i)
        if self.balanced:
            cfg = self.dir / "haproxy.cfg"
            cfg.write_text(haproxy_config(self.lay))
            log = open(self.dir / "haproxy.log", "wb")  # noqa: SIM115
            self.procs["balancer"] = subprocess.Popen(
                [haproxy_binary(), "-db", "-f", str(cfg)], stdout=log, stderr=log, start_new_session=True
            )
            self.wait_up({node_name(i) for i in range(1, self.n + 1)})
        return self

    def start_node(self, i: int) -> None:
        log = open(self.dir / f"node{i}.log", "ab")  # noqa: SIM115
        self.procs[node_name(i)] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "metaproxy",
                "--config",
                str(self.config),
                "gateway",
                "--node",
                node_name(i),
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        s3, admin = self.node_urls(i)
        bg.wait_port(int(s3.rsplit(":", 1)[1]))
        bg.wait_port(int(admin.rsplit(":", 1)[1]))

    def wait_up(self, names: set[str], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = balancer_view(f"http://127.0.0.1:{self.lay.port('balancer_stats')}/stats")
            if all(view.get(n, {}).get("status") == "UP" for n in names):
                return
            time.sleep(0.3)
        raise SystemExit(f"the balancer did not find {sorted(names)} up")

    def kill(self, i: int) -> None:
        os.killpg(self.procs[node_name(i)].pid, signal.SIGKILL)

    def reports(self) -> dict[str, dict[str, Any]]:
        out = {}
        for i in range(1, self.n + 1):
            try:
                out[node_name(i)] = requests.get(f"{self.node_urls(i)[1]}/report", timeout=10).json()
            except requests.RequestException:
                out[node_name(i)] = {}
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def _only_nodes(text: str, n: int) -> str:
    """The config with the first ``n`` nodes of its ``[cluster]`` (the bench may run one node)."""
    head, sep, rest = text.partition("\n[[cluster.node]]")
    if not sep:
        return text
    nodes = ("[[cluster.node]]" + rest).split("\n[[cluster.node]]")
    nodes = [nodes[0]] + ["[[cluster.node]]" + b for b in nodes[1:]]
    return head + "\n" + "\n".join(nodes[:n]) + "\n"


def retried(stats_url: str) -> dict[str, int]:
    """HAProxy's counts of retried and redispatched requests, over its backends."""
    import csv
    import io

    text = requests.get(stats_url + ";csv", timeout=10).text.lstrip("# ")
    rows = [r for r in csv.DictReader(io.StringIO(text)) if r.get("svname") == "BACKEND"]
    return {
        "retries": sum(int(r.get("wretr") or 0) for r in rows),
        "redispatches": sum(int(r.get("wredis") or 0) for r in rows),
    }


def point_trino(ep: dict[str, Any], st: Stack, endpoint: str) -> None:
    write_gateway_mapping(st, Path(ep["config"]).parent / "trino", endpoint)
    time.sleep(MAPPING_REFRESH_S + 1.5)


def sums(reports: dict[str, dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in reports.values())


def hit_ratio(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> float:
    mem = sums(after, "bytes_from_memory") - sums(before, "bytes_from_memory")
    disk = sums(after, "bytes_from_disk") - sums(before, "bytes_from_disk")
    ufs = sums(after, "bytes_from_ufs") - sums(before, "bytes_from_ufs")
    served = mem + disk + ufs
    return (mem + disk) / served if served else 0.0


def data_bytes(ep: dict[str, Any]) -> int:
    r = requests.get(
        f"{ep['webhdfs']}/webhdfs/v1/warehouse/tpcds?op=GETCONTENTSUMMARY&user.name=hdfs", timeout=30
    )
    r.raise_for_status()
    return int(r.json()["ContentSummary"]["length"])


def capacity(
    ep: dict[str, Any], st: Stack, trino: Trino, work: Path, memory: int, expected: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (1, 2, 3):
        cl = BenchCluster(ep, work, n, memory, 0).start()
        try:
            point_trino(ep, st, cl.endpoint)
            cold_s, rows = trino.suite()
            assert rows == expected, f"{n} nodes: other rows than direct"
            before = cl.reports()
            warm = []
            for _ in range(2):
                t, rows = trino.suite()
                assert rows == expected
                warm.append(t)
            after = cl.reports()
            out[str(n)] = {
                "cold_s": round(cold_s, 2),
                "warm_s": round(statistics.median(warm), 2),
                "warm_hit_ratio": round(hit_ratio(before, after), 4),
                "memory_used": {k: r["tiers"]["memory_used"] for k, r in after.items()},
            }
            print(f"  capacity, {n} node(s): {out[str(n)]}", flush=True)
        finally:
            cl.stop()
    return out


def affinity(ep: dict[str, Any], st: Stack, trino: Trino, work: Path, expected: Any) -> dict[str, Any]:
    from metaproxy.cache.cli import Nodes
    from metaproxy.config import load_config

    cl = BenchCluster(ep, work, 3, 512 * MiB, 0).start()
    try:
        nodes = Nodes(load_config(cl.config), "")
        plan = nodes.any("/cache/plan", path="/tpcds")["files"]
        distinct = sum(int(f["length"]) for f in plan)
        t0 = time.perf_counter()
        for f in plan:
            nodes.load(f["key"])
        load_s = time.perf_counter() - t0
        loaded = cl.reports()
        cached = sums({k: r["tiers"] for k, r in loaded.items()}, "memory_used")
        point_trino(ep, st, cl.endpoint)
        _, rows = trino.suite()
        assert rows == expected
        after = cl.reports()
        return {
            "distinct_bytes": distinct,
            "cached_bytes": cached,
            "cached_over_distinct": round(cached / distinct, 4),
            "per_node_bytes": {k: r["tiers"]["memory_used"] for k, r in loaded.items()},
            "load_s": round(load_s, 2),
            "ufs_bytes_read_by_the_suite_after_load": sums(after, "bytes_from_ufs")
            - sums(loaded, "bytes_from_ufs"),
        }
    finally:
        cl.stop()


def failover(
    ep: dict[str, Any], st: Stack, trino: Trino, work: Path, expected: Any, trials: int
) -> dict[str, Any]:
    """Per trial: a fresh warm 3-node cluster, two calm suites, one during which node 2 is
    killed half-way through a calm suite's time, and one more after it (Trino runs faster with
    each pass, so the calm passes surround the killed one). What the killed pass lost is its
    time less the calm passes' median; the trials' median of that counts."""
    out: dict[str, Any] = {"trials": [], "failures": []}
    for _ in range(trials):
        cl = BenchCluster(ep, work, 3, 512 * MiB, 1024 * MiB).start()
        try:
            point_trino(ep, st, cl.endpoint)
            trino.suite()  # fill
            calm_runs = [trino.suite()[0] for _ in range(2)]
            calm = statistics.median(calm_runs)
            killed_at: list[float] = []
            t0 = time.perf_counter()

            def kill(cl: BenchCluster = cl, t0: float = t0, killed_at: list[float] = killed_at) -> None:
                killed_at.append(time.perf_counter() - t0)
                cl.kill(2)

            killer = threading.Timer(calm / 2, kill)
            killer.start()
            wrong = 0
            for q, want in zip(QUERIES, expected, strict=True):
                try:
                    wrong += trino.run(q, "onprem") != want
                except Exception as e:
                    out["failures"].append(f"{q[:50]}: {e}")
            hit = time.perf_counter() - t0
            killer.join()
            counts = retried(f"http://127.0.0.1:{cl.lay.port('balancer_stats')}/stats")
            after = trino.suite()[0]  # two nodes left; Trino as warm as in the killed pass
            calm = statistics.median([*calm_runs, after])
            out["trials"].append(
                {
                    "calm_before_s": [round(x, 2) for x in calm_runs],
                    "after_s": round(after, 2),
                    "calm_s": round(calm, 2),
                    "with_kill_s": round(hit, 2),
                    "lost_s": round(hit - calm, 2),
                    "killed_at_s": round(killed_at[0], 2) if killed_at else None,
                    "balancer_retries": counts["retries"],
                    "balancer_redispatches": counts["redispatches"],
                    "other_rows": wrong,
                }
            )
            print(f"  failover trial: {out['trials'][-1]}", flush=True)
        finally:
            cl.stop()
    tr = out["trials"]
    out.update(
        calm_suite_s=round(statistics.median(t["calm_s"] for t in tr), 2),
        suite_with_kill_s=round(statistics.median(t["with_kill_s"] for t in tr), 2),
        lost_s=round(statistics.median(t["lost_s"] for t in tr), 2),
        failed_queries=len(out["failures"]),
        queries_with_other_rows=sum(t["other_rows"] for t in tr),
    )
    return out


def overhead(
    ep: dict[str, Any], st: Stack, trino: Trino, work: Path, rounds: int, per_reader: int
) -> dict[str, Any]:
    """One node, warm: bench_gateway's readers straight to it and through HAProxy; then the
    Trino suite the same two ways."""
    from metaproxy.ufs.webhdfs import WebHdfs

    fs = WebHdfs(ep["webhdfs"])
    size, rng = 64 * MiB, 8 * MiB
    fs.write("/warehouse/tpcds/_bench_cluster/object.bin", os.urandom(size))
    cl = BenchCluster(ep, work, 1, 512 * MiB, 0, balancer=True).start()
    try:
        path = "/metaproxy/tpcds/_bench_cluster/object.bin"
        node = cl.node_urls(1)[0]
        bal = cl.endpoint
        nport, bport = int(node.rsplit(":", 1)[1]), int(bal.rsplit(":", 1)[1])
        bg.KEY, bg.SECRET = ep["gateway_access_key"], ep["gateway_secret_key"]
        bg.run_readers("127.0.0.1", nport, path, size, 1, size // rng, rng, node)  # fill
        got: dict[str, list[float]] = {"node": [], "haproxy": []}
        for _ in range(rounds):
            got["node"].append(bg.run_readers("127.0.0.1", nport, path, size, 8, per_reader, rng, node))
            got["haproxy"].append(bg.run_readers("127.0.0.1", bport, path, size, 8, per_reader, rng, bal))
        med = {k: statistics.median(v) for k, v in got.items()}
        # the same node under the Trino suite, warm, straight and through HAProxy, alternating
        suite: dict[str, list[float]] = {"node": [], "haproxy": []}
        point_trino(ep, st, node)
        trino.suite()  # fill: both sides read the same node
        for _ in range(rounds):
            for side, url in (("node", node), ("haproxy", bal)):
                point_trino(ep, st, url)
                suite[side].append(trino.suite()[0])
        smed = {k: statistics.median(v) for k, v in suite.items()}
        return {
            "mb_s": {k: round(v, 1) for k, v in med.items()},
            "rounds_mb_s": {k: [round(x, 1) for x in v] for k, v in got.items()},
            "haproxy_over_node": round(med["haproxy"] / med["node"], 3),
            "warm_suite_s": {k: round(v, 2) for k, v in smed.items()},
            "warm_suite_haproxy_over_node": round(smed["haproxy"] / smed["node"], 3),
        }
    finally:
        cl.stop()
        fs.delete("/warehouse/tpcds/_bench_cluster", recursive=True)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    hap = subprocess.run([haproxy_binary(), "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_mib": mem,
        "python": platform.python_version(),
        "haproxy": hap,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller data set and fewer rounds")
    ap.add_argument("--scale", type=float, default=0.0, help="the sample's scale (default 5, quick 2)")
    ap.add_argument(
        "--only",
        choices=("capacity", "affinity", "failover", "overhead"),
        action="append",
        help="run only these parts (repeatable)",
    )
    args = ap.parse_args()
    parts = set(args.only or ("capacity", "affinity", "failover", "overhead"))
    scale = args.scale or (2.0 if args.quick else 5.0)
    st = Stack()
    ep = st.up()
    st._adopt(ep)
    trino = Trino(ep)
    wanted = sample_data.sample_id(scale, sample_data.DEFAULT_SEED, sample_data.DEFAULT_PARTITIONS)
    if sample_data.loaded_sample(ep["hms"]) != wanted:
        print(f"loading the sample at scale {scale} ...", flush=True)
        sample_data.load(ep["hms"], ep["hdfs"], ep["webhdfs"], scale=scale)
    size = data_bytes(ep)
    memory = int(size / 2.5)
    print(f"data {size / MiB:.1f} MiB; memory tier per node {memory / MiB:.1f} MiB (data = 2.5x)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    results: dict[str, Any] = {
        "machine": machine(),
        "scale": scale,
        "data_bytes": size,
        "memory_per_node": memory,
    }
    try:
        _, expected = trino.suite("direct")
        if "capacity" in parts:
            results["capacity"] = capacity(ep, st, trino, work, memory, expected)
        if "affinity" in parts:
            results["affinity"] = affinity(ep, st, trino, work, expected)
            print(f"  affinity: {results['affinity']}", flush=True)
        if "failover" in parts:
            results["failover"] = failover(ep, st, trino, work, expected, 1 if args.quick else 3)
            print(f"  failover: {results['failover']}", flush=True)
        if "overhead" in parts:
            results["overhead"] = overhead(
                ep, st, trino, work, 3 if args.quick else 7, 4 if args.quick else 8
            )
            print(f"  balancer overhead: {results['overhead']}", flush=True)
    finally:
        write_gateway_mapping(st)  # Trino back on the stack's own gateway(s)
        shutil.rmtree(work, ignore_errors=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_cluster.json").write_text(json.dumps(results, indent=2))
    summary(results)


def summary(results: dict[str, Any]) -> None:
    if "capacity" in results:
        print("\nnodes | warm hit ratio | warm suite (s) | cold suite (s)")
        for n, r in results["capacity"].items():
            print(f"{n} | {r['warm_hit_ratio']:.1%} | {r['warm_s']:.2f} | {r['cold_s']:.2f}")
    if "affinity" in results:
        print(f"affinity: cached / distinct = {results['affinity']['cached_over_distinct']:.3f}")
    if "failover" in results:
        f = results["failover"]
        print(
            f"failover: {f['failed_queries']} failed, {f['queries_with_other_rows']} with other rows; "
            f"suite {f['suite_with_kill_s']:.2f}s against {f['calm_suite_s']:.2f}s calm (lost {f['lost_s']:.2f}s)"
        )
    if "overhead" in results:
        o = results["overhead"]
        print(
            f"balancer: {o['mb_s']['haproxy']:.0f} MB/s through HAProxy, {o['mb_s']['node']:.0f} straight "
            f"({o['haproxy_over_node']:.3f}x); warm suite {o['warm_suite_s']['haproxy']:.2f}s through it, "
            f"{o['warm_suite_s']['node']:.2f}s straight ({o['warm_suite_haproxy_over_node']:.3f}x)"
        )
    print(f"results: {OUT / 'bench_cluster.json'}")


if __name__ == "__main__":
    main()

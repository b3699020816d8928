"""Metastore proxy overhead: the same calls straight to the HMS and through the proxy, in one run.

Calls: ``get_table_req``; ``get_table`` through the proxy, which translates it for a Hive 4
upstream, beside ``get_table_req`` straight to the HMS (what the translation costs); and
``get_partitions_by_names`` of 100, 1,000 and 10,000 partitions (20 columns each, every location
under a mount, so every one of them is rewritten — the worst case). Direct and proxied calls
alternate in small rounds so drift on a shared machine hits both sides alike.

Two proxies, each a separate ``metaproxy serve`` process with a ``cloud`` listener: ``proxy``
with its metadata cache off, so every call goes to the HMS (what the proxy itself adds), and
``cached``, the local stack's own, whose event-driven cache answers repeated reads itself.

    .venv/bin/python bench/bench_proxy.py [--quick]

Prints a table and writes ``bench/out/proxy.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hive_metastore import ttypes as tt

from metaproxy.hms import connect
from metaproxy_devstack.launcher import Stack
from metaproxy_devstack.procs import free_port, port_open

OUT = Path(__file__).resolve().parent / "out"
DB = "bench_proxy"


def make_table(stack: dict[str, Any], name: str, partitions: int) -> list[str]:
    """A partitioned table with ``partitions`` partitions under the /tpcds mount; returns names."""
    base = f"{stack['hdfs']}/warehouse/tpcds/{DB}/{name}"
    cols = [tt.FieldSchema(name=f"col_{i:02d}", type="bigint", comment=f"column {i}") for i in range(20)]

    def sd(location: str) -> tt.StorageDescriptor:
        return tt.StorageDescriptor(
            cols=cols,
            location=location,
            inputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            outputFormat="org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            compressed=False,
            numBuckets=-1,
            serdeInfo=tt.SerDeInfo(
                serializationLib="org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                parameters={"serialization.format": "1"},
            ),
            bucketCols=[],
            sortCols=[],
            parameters={},
        )

    with connect(stack["hms"], timeout_s=600) as hms:
        existing = hms.get_all_tables(DB) if DB in hms.get_all_databases() else None
        if existing is None:
            hms.create_database(tt.Database(name=DB, locationUri=f"{stack['hdfs']}/warehouse/tpcds/{DB}"))
            existing = []
        if name in existing:
            names = hms.get_partition_names(DB, name, -1)
            if len(names) == partitions:
                return list(names)
            hms.drop_table(DB, name, False)
        hms.create_table(
            tt.Table(
                tableName=name,
                dbName=DB,
                owner="bench",
                sd=sd(base),
                partitionKeys=[tt.FieldSchema(name="dt", type="string")],
                parameters={"EXTERNAL": "TRUE"},
                tableType="EXTERNAL_TABLE",
            )
        )
        t0 = time.monotonic()
        for start in range(0, partitions, 250):
            batch = [
                tt.Partition(
                    values=[f"d{i:05d}"],
                    dbName=DB,
                    tableName=name,
                    sd=sd(f"{base}/dt=d{i:05d}"),
                    parameters={"numRows": str(i), "totalSize": str(i * 1000), "numFiles": "1"},
                )
                for i in range(start, min(start + 250, partitions))
            ]
            hms.add_partitions(batch)
        print(f"  registered {partitions} partitions in {time.monotonic() - t0:.1f}s", flush=True)
        return list(hms.get_partition_names(DB, name, -1))


@contextmanager
def uncached_proxy(stack: dict[str, Any]) -> Iterator[str]:
    """A proxy process with the metadata cache off, over the stack's HMS and /tpcds mount."""
    port, admin = free_port(), free_port()
    OUT.mkdir(exist_ok=True)
    config = OUT / "proxy-uncached.toml"
    config.write_text(
        f"""[state]
path = "{OUT / "proxy-uncached.db"}"
[metastore]
uris = ["{stack["hms"]}"]
[proxy]
admin_port = {admin}
metadata_cache_size = "0"
[[proxy.listener]]
port = {port}
profile = "cloud"
[[mount]]
path = "/tpcds"
ufs = "{stack["hdfs"]}/warehouse/tpcds"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaproxy", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the uncached proxy did not start (config {config})")
            time.sleep(0.1)
        yield f"thrift://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def measure(clients: dict[str, Any], call: Any, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Samples per side; ``call`` is one function of a client, or one per side (by label)."""
    samples: dict[str, list[float]] = {k: [] for k in clients}
    for _ in range(rounds):
        for label, client in clients.items():
            fn = call[label] if isinstance(call, dict) else call
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn(client)
                samples[label].append(time.perf_counter() - t0)
    return samples


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, up to 1,000 partitions")
    args = ap.parse_args()
    stack = Stack().up()
    sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    tables = {n: make_table(stack, f"parts_{n}", n) for n in sizes}
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {__import__('os').cpu_count()} cores",
        "python": platform.python_version(),
        "accelerated_walker": __import__("metaproxy.wire.binary", fromlist=["x"]).ACCELERATED,
        "calls": {},
    }
    with (
        uncached_proxy(stack) as uncached,
        connect(stack["hms"], 600) as direct,
        connect(uncached, 600) as proxied,
        connect(stack["proxy"], 600) as cached,
    ):
        clients = {"direct": direct, "proxy": proxied, "cached": cached}
        req = tt.GetTableRequest(dbName=DB, tblName=f"parts_{sizes[0]}")
        measure(clients, lambda c: c.get_table_req(req), 2, 20)  # warm-up (JIT, caches)
        cases: list[tuple[str, Any, int, int]] = [
            ("get_table_req", lambda c: c.get_table_req(req), 30 if not args.quick else 10, 20),
            # an old client's get_table, which Hive 4 does not serve: the proxy sends get_table_req
            # (as a Hive 4 client would directly) and answers in get_table's form
            (
                "get_table, translated (direct: get_table_req)",
                {
                    "direct": lambda c: c.get_table_req(req),
                    "proxy": lambda c: c.get_table(DB, req.tblName),
                    "cached": lambda c: c.get_table(DB, req.tblName),
                },
                30 if not args.quick else 10,
                20,
            ),
        ]
        for n in sizes:
            names = tables[n]
            rounds = (20 if n <= 100 else 10 if n <= 1000 else 4) if not args.quick else 3
            cases.append(
                (
                    f"get_partitions_by_names ({n:,} partitions)",
                    lambda c, names=names, n=n: c.get_partitions_by_names(DB, f"parts_{n}", names),
                    rounds,
                    2,
                )
            )
        for label, call, rounds, per_round in cases:
            measure(clients, call, 1, 1)
            s = measure(clients, call, rounds, per_round)
            row: dict[str, Any] = {
                side: {
                    "p50_ms": pct(v, 0.5),
                    "p99_ms": pct(v, 0.99),
                    "n": len(v),
                    "mean_ms": statistics.mean(v) * 1000,
                }
                for side, v in s.items()
            }
            row["added_p50_ms"] = row["proxy"]["p50_ms"] - row["direct"]["p50_ms"]
            row["ratio_p50"] = row["proxy"]["p50_ms"] / row["direct"]["p50_ms"]
            row["cached_ratio_p50"] = row["cached"]["p50_ms"] / row["direct"]["p50_ms"]
            results["calls"][label] = row
    OUT.mkdir(exist_ok=True)
    (OUT / "proxy.json").write_text(json.dumps(results, indent=2))
    print(
        f"\n{'call':46s} {'direct p50/p99 ms':>20s} {'proxy p50/p99 ms':>20s} {'added p50':>10s} {'ratio':>6s}"
        f" {'cached p50/p99 ms':>20s} {'ratio':>6s}"
    )
    for label, row in results["calls"].items():
        d, p, c = row["direct"], row["proxy"], row["cached"]
        print(
            f"{label:46s} {d['p50_ms']:9.2f}/{d['p99_ms']:<9.2f}  {p['p50_ms']:9.2f}/{p['p99_ms']:<9.2f} "
            f"{row['added_p50_ms']:+9.2f} {row['ratio_p50']:6.3f}"
            f"  {c['p50_ms']:9.2f}/{c['p99_ms']:<9.2f} {row['cached_ratio_p50']:6.3f}"
        )


if __name__ == "__main__":
    main()

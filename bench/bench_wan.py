"""The hybrid-cloud scenario, measured: Trino in the "cloud", HDFS and the HMS "on-prem", a
simulated wide-area link between them.

The local stack starts with the link (``metaproxy stack up --wan``): HDFS's and the HMS's ports
are reached from the cloud side only through relays that add the round-trip time and share one
bandwidth limit per direction (see ``devstack/metaproxy_devstack/wanlink.py``). Before measuring, the bench
checks the link really has the configured latency and bandwidth.

At each scale, the sample star schema is loaded onto HDFS (``tpcds``) and the same files into
the cloud-side S3 server (``tpcds_s3``); then the query suite runs, query by query, as

* ``direct``: Trino reading HDFS across the link, no cache (what users do today);
* ``direct + fs.cache``: Trino's own file-system cache on local disk, cold then warm;
* ``fs.cache + metastore cache``: that, plus Trino's metastore and listing caches trusted for
  60 s (``direct_cache_ttl``: as fast as Trino can be made, stale for up to a minute);
* ``metaproxy``: Trino through the metastore proxy and the cache gateway, cold then warm;
* ``metaproxy + fs.cache``: that, with Trino's file-system cache in front of the gateway (each
  worker's disk before the shared gateway; metadata still from the proxy, fresh);
* ``local S3``: the same data already in the cloud-side S3 server (data next to compute).

The link charges a round trip for each new connection's handshake, as a real one does (Trino
opens a metastore connection per call). Every variant's rows must equal ``direct``'s. Times are medians of ``--rounds`` runs (cold runs
happen once by their nature, and ``direct`` caches nothing, so it runs once too); the bytes each variant moved across the link are counted by the
link. Results go to ``bench/out/wan.json``; unless ``--quick``, plots go to ``docs/img/`` and
the tables into ``docs/benchmarks.md`` between its ``wan`` markers (else both to ``bench/out``).

After the suite, on the largest scale's data, the live scenarios of :mod:`wan_live`: metadata
call latency, freshness after on-prem changes, pre-fetch of a new partition, and an outage of
the link with the suite warm.

    .venv/bin/python bench/bench_wan.py [--quick] [--scales 10,20,40] [--rtt-ms 30 --mbit 200]
        [--changes 20] [--outage-s 300]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests

from metaproxy_devstack import sample_data
from metaproxy_devstack.common import TRINO_VERSION
from metaproxy_devstack.launcher import Stack
from metaproxy_devstack.wanlink import measure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wan_live  # noqa: E402 - the bench's own module beside it

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
IMG = ROOT / "docs" / "img"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- wan:begin -->", "<!-- wan:end -->"

FIRST = sample_data.FIRST_DATE_SK

#: the query suite: TPC-DS-shaped queries over store_sales and its dimensions
QUERIES: dict[str, str] = {
    "q1_selective_scan": f"""
        SELECT count(*), sum(ss_net_profit) FROM store_sales
        WHERE ss_sold_date_sk BETWEEN {FIRST + 10} AND {FIRST + 19} AND ss_quantity > 90""",
    "q2_category_revenue": """
        SELECT i_category, sum(ss_ext_sales_price) FROM store_sales
        JOIN item ON ss_item_sk = i_item_sk GROUP BY i_category ORDER BY 1""",
    "q3_brand_by_month": """
        SELECT d_year, d_moy, i_brand, sum(ss_ext_sales_price) AS s
        FROM date_dim JOIN store_sales ON d_date_sk = ss_sold_date_sk
        JOIN item ON ss_item_sk = i_item_sk
        WHERE i_manufact_id = 28 AND d_moy = 2
        GROUP BY d_year, d_moy, i_brand ORDER BY d_year, s DESC, i_brand LIMIT 100""",
    "q4_store_report": """
        SELECT s_state, s_city, count(*), sum(ss_net_profit) FROM store_sales
        JOIN store ON ss_store_sk = s_store_sk GROUP BY 1, 2 ORDER BY 1, 2""",
    "q5_top_n": """
        SELECT ss_ticket_number, ss_item_sk, ss_net_profit FROM store_sales
        WHERE ss_quantity >= 95
        ORDER BY ss_net_profit DESC, ss_ticket_number, ss_item_sk LIMIT 10""",
    "q6_weekday_sales": """
        SELECT s_store_name,
               sum(CASE WHEN d_day_name = 'Sunday' THEN ss_sales_price END),
               sum(CASE WHEN d_day_name = 'Monday' THEN ss_sales_price END),
               sum(CASE WHEN d_day_name = 'Saturday' THEN ss_sales_price END)
        FROM date_dim JOIN store_sales ON d_date_sk = ss_sold_date_sk
        JOIN store ON s_store_sk = ss_store_sk
        WHERE d_year = 2024 GROUP BY s_store_name ORDER BY 1""",
    "q7_full_scan": """
        SELECT count(*), sum(ss_quantity), avg(ss_sales_price), min(ss_sold_time_sk),
               max(ss_customer_sk)
        FROM store_sales""",
    "q8_quarters": """
        SELECT d_qoy, d_moy, count(*), sum(ss_ext_sales_price) FROM store_sales
        JOIN date_dim ON ss_sold_date_sk = d_date_sk WHERE d_qoy IN (1, 2)
        GROUP BY 1, 2 ORDER BY 1, 2""",
    "q9_top_customers": """
        SELECT ss_customer_sk, count(*) AS c FROM store_sales WHERE ss_store_sk IN (1, 2, 3)
        GROUP BY 1 ORDER BY c DESC, 1 LIMIT 20""",
    "q10_price_band": """
        SELECT i_class, count(*), avg(ss_quantity) FROM store_sales
        JOIN item ON ss_item_sk = i_item_sk WHERE i_current_price BETWEEN 50 AND 100
        GROUP BY i_class ORDER BY 1""",
}

#: (label, catalog, schema, cold run first?)
VARIANTS = [
    ("direct", "direct", "tpcds", False),
    ("fs.cache", "direct_cache", "tpcds", True),
    ("fs.cache + metastore cache", "direct_cache_ttl", "tpcds", True),
    ("metaproxy", "onprem", "tpcds", True),
    ("metaproxy + fs.cache", "onprem_cache", "tpcds", True),
    ("local S3", "direct", "tpcds_s3", False),
]


class Link:
    """The running link's control endpoint."""

    def __init__(self, wan: dict[str, Any]) -> None:
        self.url = wan["control"]

    def state(self) -> dict[str, Any]:
        return dict(requests.get(self.url, timeout=10).json())

    def set(self, rtt_ms: float, mbit: float) -> None:
        requests.put(self.url, json={"rtt_ms": rtt_ms, "mbit": mbit}, timeout=10).raise_for_status()

    def set_down(self, down: bool) -> None:
        requests.put(self.url, json={"down": down}, timeout=10).raise_for_status()

    def moved(self) -> int:
        s = self.state()
        return int(s["up_bytes"]) + int(s["down_bytes"])

    def check(self, rtt_ms: float, mbit: float) -> dict[str, float]:
        """Measure through the link's echo relay; refuse a link that is not what was asked."""
        host, port = self.state()["echo"].rsplit(":", 1)
        m = measure(host, int(port), pings=20, bulk=16 * 1024 * 1024)
        if not (rtt_ms * 0.95 <= m["rtt_ms"] <= rtt_ms * 1.25 + 2):
            raise SystemExit(f"the link's round trip is {m['rtt_ms']:.1f} ms, not {rtt_ms:.0f} ms")
        if not (rtt_ms * 0.95 <= m["handshake_ms"] <= rtt_ms * 1.25 + 2):
            raise SystemExit(f"a new connection costs {m['handshake_ms']:.1f} ms more, not a round trip")
        if not (mbit * 0.85 <= m["mbit"] <= mbit * 1.1):
            raise SystemExit(f"the link carries {m['mbit']:.0f} Mbit/s, not {mbit:.0f} Mbit/s")
        return m


def trino_runner(stack: dict[str, Any]) -> Any:
    import trino

    host, port = stack["trino"].split("//", 1)[1].split(":")

    def run(catalog: str, schema: str, sql: str) -> tuple[float, list[list[Any]]]:
        conn = trino.dbapi.connect(host=host, port=int(port), user="bench", catalog=catalog, schema=schema)
        try:
            cur = conn.cursor()
            t0 = time.perf_counter()
            cur.execute(sql)
            rows = cur.fetchall()
            return time.perf_counter() - t0, rows
        finally:
            conn.close()

    return run


def gateway_free(stack: dict[str, Any], path: str) -> None:
    r = requests.post(f"{stack['gateway_admin']}/cache/free", json={"path": path}, timeout=120)
    r.raise_for_status()


def run_scale(
    stack: dict[str, Any], link: Link, scale: float, rounds: int, rtt_ms: float, mbit: float
) -> dict[str, Any]:
    from metaproxy.config import load_config
    from metaproxy.ufs.s3 import S3Ufs

    run = trino_runner(stack)
    wan = stack["wan"]
    # load on-prem data and its cloud copy with the link wide open (loading is not measured)
    link.set(0, 0)
    gateway_free(stack, "/tpcds")
    hdfs = sample_data.load(stack["hms"], wan["hdfs"], stack["webhdfs"], scale=scale)
    s3 = S3Ufs(load_config(stack["config"]).s3)  # the stack's S3 server, as its services reach it
    sample_data.load_to_s3(stack["hms"], s3, "bench-local", scale=scale, database="tpcds_s3")
    link.set(rtt_ms, mbit)
    print(
        f"scale {scale:g}: {hdfs.tables['store_sales']:,} fact rows, "
        f"{hdfs.bytes / 1e6:,.0f} MB in {hdfs.files} files",
        flush=True,
    )
    out: dict[str, Any] = {
        "scale": scale,
        "rows": hdfs.tables["store_sales"],
        "bytes": hdfs.bytes,
        "files": hdfs.files,
        "times": {},
        "link_bytes": {},
    }
    expected: dict[str, list[list[Any]]] = {}

    def suite(label: str, catalog: str, schema: str, n: int) -> None:
        times: dict[str, list[float]] = {}
        before = link.moved()
        for _ in range(n):
            for q, sql in QUERIES.items():
                t, rows = run(catalog, schema, sql)
                if q not in expected:
                    expected[q] = rows
                elif rows != expected[q]:
                    raise SystemExit(f"{label}: {q} returned other rows than direct:\n{rows}\n{expected[q]}")
                times.setdefault(q, []).append(t)
        out["times"][label] = {q: statistics.median(v) for q, v in times.items()}
        out["link_bytes"][label] = (link.moved() - before) // n
        total = sum(out["times"][label].values())
        print(
            f"  {label:18s} {total:8.2f} s   {out['link_bytes'][label] / 1e6:9.1f} MB across the link per run",
            flush=True,
        )

    for label, catalog, schema, cold_first in VARIANTS:
        if cold_first:
            if catalog == "onprem_cache":  # cold in front of a cold gateway, as metaproxy's was
                gateway_free(stack, "/tpcds")
            suite(f"{label} cold", catalog, schema, 1)
            suite(f"{label} warm", catalog, schema, rounds)
        elif label == "direct":
            suite(label, catalog, schema, 1)  # nothing is cached: every run is the same run
        else:
            suite(label, catalog, schema, rounds)
    return out


def totals(r: dict[str, Any]) -> dict[str, float]:
    return {label: sum(t.values()) for label, t in r["times"].items()}


GOALS = [
    ("warm metaproxy ≥ 3× faster than direct", "direct", "metaproxy warm", 3.0, "faster"),
    ("warm metaproxy within 1.25× of local S3", "local S3", "metaproxy warm", 1.25, "within"),
    ("cold metaproxy no worse than 1.15× direct", "direct", "metaproxy cold", 1.15, "within"),
    ("warm metaproxy ≤ 0.8× warm fs.cache", "fs.cache warm", "metaproxy warm", 0.8, "within"),
    (
        "warm metaproxy no slower than warm fs.cache + metastore cache",
        "fs.cache + metastore cache warm",
        "metaproxy warm",
        1.0,
        "within",
    ),
    (
        "warm metaproxy + fs.cache ≤ 0.8× warm fs.cache",
        "fs.cache warm",
        "metaproxy + fs.cache warm",
        0.8,
        "within",
    ),
    (
        "warm metaproxy + fs.cache no slower than warm fs.cache + metastore cache",
        "fs.cache + metastore cache warm",
        "metaproxy + fs.cache warm",
        1.0,
        "within",
    ),
]


def goals(r: dict[str, Any]) -> list[tuple[str, float, bool]]:
    t = totals(r)
    out = []
    for text, base, ours, factor, kind in GOALS:
        if kind == "faster":
            ratio = t[base] / t[ours]
            out.append((f"{text} (direct ÷ metaproxy warm = {ratio:.2f}×)", ratio, ratio >= factor))
        else:
            ratio = t[ours] / t[base]
            out.append((f"{text} ({ours} ÷ {base} = {ratio:.2f}×)", ratio, ratio <= factor))
    return out


#: what the live scenarios must show
FRESH_P99_S = 1.5
PREFETCH_RATIO = 1.2
COLD_ERROR_S = 5.0


def live_goals(live: dict[str, Any]) -> list[tuple[str, bool]]:
    """(text, met) for each goal of the live scenarios that ran."""
    out: list[tuple[str, bool]] = []
    fresh = live.get("freshness")
    if fresh:
        ours = fresh["metaproxy"]
        p99 = ours.get("p99", math.inf) if not ours["not_seen"] else math.inf
        out.append(
            (
                f"metaproxy sees an on-prem change within {FRESH_P99_S} s at p99 (p99 {p99:.2f} s)",
                p99 <= FRESH_P99_S,
            )
        )
    pre = live.get("prefetch")
    if pre:
        ratio = pre["first_query_prefetched_s"] / pre["warm_old_s"]
        out.append(
            (
                f"first query on a pre-fetched new partition within {PREFETCH_RATIO}× of a warm one "
                f"({pre['first_query_prefetched_s']:.2f} s ÷ {pre['warm_old_s']:.2f} s = {ratio:.2f}×)",
                ratio <= PREFETCH_RATIO,
            )
        )
    down = live.get("outage")
    if down:
        out.append(
            (
                f"no warm query fails during a {down['outage_s']:.0f} s outage ({down['failed']} failed, "
                f"{down['wrong_rows']} wrong of {down['queries']})",
                down["failed"] == 0 and down["wrong_rows"] == 0 and down["queries"] > 0,
            )
        )
        for key in ("cold_table_at_once", "cold_table_later"):
            c = down.get(key)
            if c:
                out.append(
                    (
                        f"a cold table fails with a clear error within {COLD_ERROR_S:.0f} s "
                        f"({key.replace('_', ' ')}: {c['s']:.1f} s, {c['error'] or 'no error'!r})",
                        c["error"] is not None and c["s"] <= COLD_ERROR_S,
                    )
                )
        seen = down.get("change_seen_after_s")
        out.append(
            (
                f"a change made during the outage is seen within {FRESH_P99_S} s of the link's return "
                f"({'never' if seen is None else f'{seen:.2f} s'})",
                seen is not None and seen <= FRESH_P99_S,
            )
        )
    return out


def live_markdown(live: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    md = live.get("metadata")
    if md:
        lines += [
            "Metastore calls, each on a new connection (as Trino makes them), through metaproxy "
            "and across the link to the HMS (ms):",
            "",
            "| call | metaproxy p50 | p99 | across the link p50 | p99 |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, by in md.items():
            a, b = by["metaproxy"], by["across the link"]
            lines.append(f"| {kind} | {a['p50']:.2f} | {a['p99']:.2f} | {b['p50']:.1f} | {b['p99']:.1f} |")
        lines.append("")
    fresh = live.get("freshness")
    if fresh:
        lines += [
            f"Freshness: {fresh['changes']} changes on-prem (an INSERT through `direct` every "
            f"{fresh['every_s']:g} s, alternately a new partition and a file added to it); delay "
            "from the INSERT returning to the end of the first query that returned the new row (s):",
            "",
            "| reader | p50 | p99 | max | not seen |",
            "|---|---:|---:|---:|---:|",
        ]
        for label in wan_live.READERS:
            r = fresh[label]
            if r["n"]:
                lines.append(
                    f"| {label} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} | {r['not_seen']} |"
                )
            else:
                lines.append(f"| {label} | – | – | – | {r['not_seen']} |")
        lines.append("")
    pre = live.get("prefetch")
    if pre:
        lines += [
            f"Pre-fetch: a partition of {pre['files']} files ({pre['bytes'] / 1e6:.1f} MB) added on-prem "
            f"under `cacheLoad(newerThan(7d), pinFor(1h))` was loaded {pre['loaded_after_s']:.1f} s after it "
            f"was registered. First query on it {pre['first_query_prefetched_s']:.2f} s; a warm query on an "
            f"old partition {pre['warm_old_s']:.2f} s; the first query on a partition added without the "
            f"policy {pre['first_query_cold_s']:.2f} s.",
            "",
        ]
    down = live.get("outage")
    if down:
        q = down["query_s"]
        lines += [
            f"Outage: the link down for {down['outage_s']:.0f} s with the suite warm: {down['suites']} suite "
            f"runs through metaproxy, {down['queries']} queries, {down['failed']} failed, "
            f"{down['wrong_rows']} with other rows"
            + (f" (query p50 {q['p50']:.2f} s, max {q['max']:.2f} s)" if q.get("n") else "")
            + ".",
            "",
        ]
        for key in ("cold_table_at_once", "cold_table_later"):
            c = down.get(key)
            if c:
                lines.append(
                    f"- a table never read through metaproxy, {key.split('_', 2)[2].replace('_', ' ')}: "
                    f"{c['s']:.1f} s, `{c['error'] or 'answered'}`"
                )
        seen = down.get("change_seen_after_s")
        lines += [
            "- a table changed on-prem during the outage (a parameter set with the HMS): seen "
            "through metaproxy "
            + ("never (within 300 s)" if seen is None else f"{seen:.2f} s after the link came back"),
            "",
        ]
    goals_ = live_goals(live)
    if goals_:
        lines += ["Goals of the live scenarios:", ""]
        lines += [f"- {'met' if met else '**missed**'}: {text}" for text, met in goals_]
        lines.append("")
    return lines


def plots(results: dict[str, Any], where: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where.mkdir(parents=True, exist_ok=True)
    names = []
    largest = results["scales"][-1]
    labels = list(largest["times"])
    queries = list(QUERIES)
    fig, ax = plt.subplots(figsize=(11, 5))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ax.bar(
            [q + (i - len(labels) / 2 + 0.5) * width for q in range(len(queries))],
            [largest["times"][label][q] for q in queries],
            width,
            label=label,
        )
    ax.set_xticks(range(len(queries)), [q.split("_", 1)[0] for q in queries])
    ax.set_ylabel("seconds (median)")
    link = results["link"]
    ax.set_title(
        f"Query suite at scale {largest['scale']:g} ({largest['bytes'] / 1e6:,.0f} MB), "
        f"link {link['rtt_ms']:.0f} ms / {link['mbit']:.0f} Mbit/s"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(where / "wan-queries.png", dpi=110)
    names.append("wan-queries.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        xs = [s["bytes"] / 1e6 for s in results["scales"]]
        ys = [totals(s)[label] for s in results["scales"]]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel("data on HDFS (MB)")
    ax.set_ylabel("suite total (s)")
    ax.set_title("Suite time as data grows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(where / "wan-growth.png", dpi=110)
    names.append("wan-growth.png")
    plt.close(fig)
    return names


def markdown(results: dict[str, Any]) -> str:
    link, m = results["link"], results["measured"]
    lines = [
        f"Run {results['date']} on {results['machine']}; Trino {TRINO_VERSION}, one node; "
        f"link configured {link['rtt_ms']:.0f} ms round trip / {link['mbit']:.0f} Mbit/s, measured "
        f"{m['rtt_ms']:.1f} ms / {m['mbit_up']:.0f} Mbit/s up / {m['mbit_down']:.0f} Mbit/s down, "
        f"a new connection {m.get('handshake_ms', 0):.1f} ms more (its handshake's round trip). "
        f"Warm and local S3: medians of {results['rounds']} runs; cold and direct: one run. `bench/bench_wan.py`"
        + (" --quick" if results["quick"] else "")
        + ".",
        "",
    ]
    largest = results["scales"][-1]
    t = totals(largest)
    base = t["direct"]
    lines += [
        f"Suite total at scale {largest['scale']:g} ({largest['rows']:,} fact rows, "
        f"{largest['bytes'] / 1e6:,.0f} MB of Parquet in {largest['files']} files):",
        "",
        "| variant | suite total (s) | ÷ direct | across the link per run (MB) |",
        "|---|---:|---:|---:|",
    ]
    for label, total in t.items():
        lines.append(
            f"| {label} | {total:.2f} | {total / base:.2f} | {largest['link_bytes'][label] / 1e6:,.1f} |"
        )
    lines += ["", "Goals:", ""]
    for text, _, met in goals(largest):
        lines.append(f"- {'met' if met else '**missed**'}: {text}")
    lines += ["", "Per query at that scale (seconds):", ""]
    labels = list(largest["times"])
    lines.append("| query | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---:|" * len(labels))
    for q in QUERIES:
        lines.append(f"| {q} | " + " | ".join(f"{largest['times'][lb][q]:.2f}" for lb in labels) + " |")
    lines += ["", "Growth — suite total (s) by data size:", ""]
    lines.append("| scale | MB | " + " | ".join(labels) + " |")
    lines.append("|---:|---:|" + "---:|" * len(labels))
    for s in results["scales"]:
        ts = totals(s)
        lines.append(
            f"| {s['scale']:g} | {s['bytes'] / 1e6:,.0f} | "
            + " | ".join(f"{ts[lb]:.2f}" for lb in labels)
            + " |"
        )
    lines += [""] + [f"![{n}](img/{n})" for n in results.get("plots", [])]
    if results.get("live"):
        lines += ["", *live_markdown(results["live"])]
    return "\n".join(lines) + "\n"


def machine() -> str:
    cpus = os.cpu_count()
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip() + ", "
                break
    except OSError:
        pass
    return f"{model}{cpus} cores{mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def live(stack: dict[str, Any], link: Link, args: argparse.Namespace) -> dict[str, Any]:
    """The live scenarios of :mod:`wan_live`, on the data of the last scale loaded."""
    run = trino_runner(stack)
    out: dict[str, Any] = {}
    calls = args.metadata_calls or (20 if args.quick else 100)
    print(f"metadata: {calls} calls of each kind, each on a new connection", flush=True)
    out["metadata"] = wan_live.metadata_latency(stack, calls)
    changes = args.changes or (5 if args.quick else 20)
    print(f"freshness: {changes} changes on-prem", flush=True)
    out["freshness"] = wan_live.freshness(run, changes, every_s=4.0, give_up_s=150.0)
    print("pre-fetch: a new partition under a cacheLoad policy", flush=True)
    out["prefetch"] = wan_live.prefetch(stack, run, FIRST, args.rounds or (1 if args.quick else 3))
    outage_s = args.outage_s or (30.0 if args.quick else 300.0)
    print(f"outage: the link down for {outage_s:.0f} s", flush=True)
    out["outage"] = wan_live.outage(stack, link.set_down, run, QUERIES, outage_s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small scales, one run each: a few minutes")
    ap.add_argument("--scales", help="comma-separated sample scales (default 10,20,40; quick 2,4,8)")
    ap.add_argument("--rounds", type=int, help="runs per warm variant (default 3; quick 1)")
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--mbit", type=float, default=200.0)
    ap.add_argument(
        "--changes", type=int, help="on-prem changes the freshness scenario makes (default 20; quick 5)"
    )
    ap.add_argument("--outage-s", type=float, help="how long the link is down (default 300; quick 30)")
    ap.add_argument("--metadata-calls", type=int, help="samples per metastore call (default 100; quick 20)")
    ap.add_argument("--no-live", action="store_true", help="only the query suite")
    args = ap.parse_args()
    scales = [float(s) for s in (args.scales or ("2,4,8" if args.quick else "10,20,40")).split(",")]
    rounds = args.rounds or (1 if args.quick else 3)
    stack = Stack(wan={"rtt_ms": args.rtt_ms, "mbit": args.mbit}).up()
    link = Link(stack["wan"])
    link.set(args.rtt_ms, args.mbit)
    measured = link.check(args.rtt_ms, args.mbit)
    print(
        f"link: {measured['rtt_ms']:.1f} ms (+{measured['handshake_ms']:.1f} ms per new connection), "
        f"{measured['mbit_up']:.0f} Mbit/s up, "
        f"{measured['mbit_down']:.0f} Mbit/s down",
        flush=True,
    )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "quick": args.quick,
        "rounds": rounds,
        "link": {"rtt_ms": args.rtt_ms, "mbit": args.mbit},
        "measured": measured,
        "scales": [],
    }
    for scale in scales:
        results["scales"].append(run_scale(stack, link, scale, rounds, args.rtt_ms, args.mbit))
    if not args.no_live:
        results["live"] = live(stack, link, args)
    largest = results["scales"][-1]
    for text, _, met in goals(largest):
        print(f"{'met   ' if met else 'MISSED'} {text}", flush=True)
    for text, met in live_goals(results.get("live", {})):
        print(f"{'met   ' if met else 'MISSED'} {text}", flush=True)
    try:
        # a quick run's plots stay in bench/out: docs/img holds the full run's
        results["plots"] = plots(results, OUT if args.quick else IMG)
    except ImportError:
        print("matplotlib is missing (pip install -e '.[bench]'): no plots", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "wan.json").write_text(json.dumps(results, indent=2))
    md = markdown(results)
    (OUT / "wan.md").write_text(md)
    if not args.quick and BEGIN in DOCS.read_text():
        text = DOCS.read_text()
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        DOCS.write_text(f"{head}{BEGIN}\n{md}{END}{tail}")
        print(f"wrote {DOCS.relative_to(ROOT)}", flush=True)
    print(md)


if __name__ == "__main__":
    main()

"""The hybrid-cloud bench's live scenarios: what a cache in front of an on-prem lake must get
right besides the speed of a warm suite. :mod:`bench_wan` runs them after its query suite, on
the same stack and link, against the data of its largest scale.

* **metadata** — metastore calls through the proxy (its event-driven cache answers them
  locally) against the same calls across the link to the HMS, each on a new connection as
  Trino makes them: p50 and p99.
* **freshness** — a table written on-prem (Trino's ``direct`` catalog, which caches nothing)
  ``--changes`` times, one change every few seconds, each an INSERT that either adds a file to a
  partition or adds a partition; beside it, readers poll the table through metaproxy and
  through Trino made as fast as it can be (``direct_cache_ttl``: file-system, metastore and
  listing caches, each trusted for 60 s). A change's delay is from its INSERT returning to the
  end of the first query that returned its row.
* **pre-fetch** — a ``cacheLoad`` policy on ``/tpcds/store_sales`` (added with the CLI, as a
  user would); a partition is added on-prem (its files written with WebHDFS and registered
  with the HMS, on the on-prem side): the first query on it, against a warm query on an old
  partition, and against the first query on a partition added without the policy.
* **outage** — the suite warm, then the link taken down (nothing crosses it: connections hang,
  as behind a frozen firewall) for ``--outage-s``: the warm suite runs through metaproxy over
  and over (failures and rows counted), a table nobody has read through metaproxy is queried
  at once and again later (it must fail with a clear error, fast), and a table is changed
  on-prem (a parameter set with the HMS); once the link is back, how long until metaproxy
  shows that change (through Trino's ``$properties`` table).
"""

from __future__ import annotations

import io
import math
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

#: ``run(catalog, schema, sql)`` → (seconds, rows)
Run = Callable[[str, str, str], tuple[float, list[list[Any]]]]

FRESH = "bench_fresh"
#: the table parameter the outage scenario sets on-prem while the link is down
OUTAGE_PROPERTY = "metaproxy.bench.outage"
COLD = "bench_cold"
PREFETCH_POLICY = "bench-prefetch"
#: the catalogs the freshness readers poll
READERS = {"metaproxy": "onprem", "fs.cache + metastore cache": "direct_cache_ttl"}
#: partitions the pre-fetch scenario adds, past any sample day
NEW_DAY = 9_000_000


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) by the nearest-rank method."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": max(values)}


# -- metadata ------------------------------------------------------------------------------


def metadata_latency(stack: dict[str, Any], calls: int) -> dict[str, Any]:
    """p50/p99 of three metastore calls, each on a new connection, through the proxy and
    across the link, alternating so drift hits both alike."""
    from hive_metastore import ttypes as tt

    from metaproxy.hms import connect

    with connect(stack["hms"]) as c:
        names = c.get_partition_names("tpcds", "store_sales", -1)[:10]
    kinds: dict[str, Callable[[Any], Any]] = {
        "get_table_req": lambda c: c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="store_sales")),
        "get_partition_names": lambda c: c.get_partition_names("tpcds", "store_sales", -1),
        "get_partitions_by_names (10)": lambda c: c.get_partitions_by_names("tpcds", "store_sales", names),
    }
    sides = {"metaproxy": stack["proxy"], "across the link": stack["wan"]["hms"]}
    samples: dict[str, dict[str, list[float]]] = {k: {s: [] for s in sides} for k in kinds}
    for kind, call in kinds.items():
        for uri in sides.values():  # one untimed call each: connections and caches set up
            with connect(uri) as c:
                call(c)
        for _ in range(calls):
            for side, uri in sides.items():
                t0 = time.perf_counter()
                with connect(uri) as c:
                    call(c)
                samples[kind][side].append((time.perf_counter() - t0) * 1000)
    return {kind: {side: summary(v) for side, v in by.items()} for kind, by in samples.items()}


# -- freshness -----------------------------------------------------------------------------


def fresh_table(run: Run) -> None:
    """A small partitioned table on-prem, written by Trino's ``direct`` catalog."""
    run("direct", "tpcds", f"DROP TABLE IF EXISTS {FRESH}")
    run(
        "direct",
        "tpcds",
        f"CREATE TABLE {FRESH} (v bigint, d bigint) WITH (format = 'PARQUET', partitioned_by = ARRAY['d'])",
    )
    run("direct", "tpcds", f"INSERT INTO {FRESH} VALUES (0, 0)")


def values_of(run: Run, catalog: str) -> set[int]:
    return {int(r[0]) for r in run(catalog, "tpcds", f"SELECT v FROM {FRESH}")[1]}


def freshness(run: Run, changes: int, every_s: float, give_up_s: float) -> dict[str, Any]:
    """Delays (s) until each reader's query returns each change, p50/p99 per reader."""
    fresh_table(run)
    for catalog in READERS.values():  # each reader has read the table before the first change
        values_of(run, catalog)
    lock = threading.Lock()
    committed: dict[int, float] = {}
    seen: dict[str, dict[int, float]] = {label: {} for label in READERS}
    errors: dict[str, int] = {label: 0 for label in READERS}
    writing_done = threading.Event()
    stop = threading.Event()

    def observe(label: str, catalog: str) -> None:
        while not stop.is_set():
            try:
                got = values_of(run, catalog)
            except Exception:
                errors[label] += 1
                time.sleep(0.5)
                continue
            now = time.monotonic()
            with lock:
                for k in committed:
                    if k in got and k not in seen[label]:
                        seen[label][k] = now
                if writing_done.is_set() and len(seen[label]) == len(committed):
                    return
            time.sleep(0.05)

    readers = [threading.Thread(target=observe, args=item, daemon=True) for item in READERS.items()]
    for t in readers:
        t.start()
    for k in range(1, changes + 1):
        started = time.monotonic()
        # odd changes add a file to the partition the even one before them made
        run("direct", "tpcds", f"INSERT INTO {FRESH} VALUES ({k}, {k // 2})")
        with lock:
            committed[k] = time.monotonic()
        time.sleep(max(0.0, started + every_s - time.monotonic()))
    writing_done.set()
    for t in readers:
        t.join(give_up_s)
    stop.set()
    out: dict[str, Any] = {"changes": changes, "every_s": every_s, "give_up_s": give_up_s}
    with lock:
        for label in READERS:
            delays = [seen[label][k] - committed[k] for k in committed if k in seen[label]]
            out[label] = {
                **(summary(delays) if delays else {"n": 0}),
                "not_seen": len(committed) - len(delays),
                "query_errors": errors[label],
            }
    return out


# -- on-prem changes without the link ------------------------------------------------------


def _parquet(rows: dict[str, list[int]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table({k: pa.array(v, pa.int64()) for k, v in rows.items()}), buf)
    return buf.getvalue()


def write_partition_files(
    stack: dict[str, Any], table: str, key: str, value: int, files: list[tuple[str, bytes]]
) -> str:
    """Write ``files`` where partition ``key=value`` of ``tpcds.table`` goes, with WebHDFS (whose
    DataNode, with the link, is reached across it); returns the partition's location."""
    from hive_metastore import ttypes as tt

    from metaproxy.hms import connect
    from metaproxy.ufs.webhdfs import WebHdfs

    with connect(stack["hms"]) as c:
        location = c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName=table)).table.sd.location
    location = f"{location.rstrip('/')}/{key}={value}"
    fs = WebHdfs(stack["webhdfs"])
    for name, data in files:
        fs.write(f"{urlsplit(location).path}/{name}", data)
    return location


def register_partition(stack: dict[str, Any], table: str, value: int, location: str) -> None:
    """Register a partition with the on-prem HMS directly (not across the link)."""
    from hive_metastore import ttypes as tt

    from metaproxy.hms import connect

    with connect(stack["hms"]) as c:
        sd = c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName=table)).table.sd
        sd.location = location
        c.add_partitions([tt.Partition(values=[str(value)], dbName="tpcds", tableName=table, sd=sd)])


def add_partition_on_prem(
    stack: dict[str, Any], table: str, key: str, value: int, files: list[tuple[str, bytes]]
) -> str:
    """A new partition ``key=value`` of ``tpcds.table`` holding ``files``; its HDFS path."""
    location = write_partition_files(stack, table, key, value, files)
    register_partition(stack, table, value, location)
    return urlsplit(location).path


def drop_partition_on_prem(stack: dict[str, Any], table: str, value: int, path: str) -> None:
    from metaproxy.hms import connect
    from metaproxy.ufs.webhdfs import WebHdfs

    with connect(stack["hms"]) as c:
        c.drop_partition("tpcds", table, [str(value)], False)
    WebHdfs(stack["webhdfs"]).delete(path, recursive=True)


# -- pre-fetch -----------------------------------------------------------------------------


def _cli(stack: dict[str, Any], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "metaproxy", "--config", stack["config"], *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"metaproxy {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def _prefetched(stack: dict[str, Any]) -> float:
    text = requests.get(f"{stack['gateway_admin']}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("metaproxy_gateway_prefetched_files_total"):
            return float(line.split()[-1])
    return 0.0


def _partition_files(stack: dict[str, Any], day: int) -> list[tuple[str, bytes]]:
    """The files of one sample partition of store_sales, read on-prem."""
    from hive_metastore import ttypes as tt

    from metaproxy.hms import connect
    from metaproxy.ufs.webhdfs import WebHdfs

    with connect(stack["hms"]) as c:
        location = c.get_table_req(
            tt.GetTableRequest(dbName="tpcds", tblName="store_sales")
        ).table.sd.location
    fs = WebHdfs(stack["webhdfs"])
    base = f"{urlsplit(location).path.rstrip('/')}/ss_sold_date_sk={day}"
    out = []
    for f in fs.list_files(base):
        stream = fs.open_read(f"{base}/{f.path}", 0, f.length)
        out.append((f.path, stream.read(f.length)))
    return out


def prefetch(stack: dict[str, Any], run: Run, first_day: int, rounds: int) -> dict[str, Any]:
    """The first query on a partition added under a ``cacheLoad`` policy, beside a warm query
    on an old partition and the first query on a partition added without the policy."""
    sql = "SELECT count(*), sum(ss_net_profit), sum(ss_quantity) FROM store_sales WHERE ss_sold_date_sk = {}"
    old = first_day + 5
    run("onprem", "tpcds", sql.format(old))  # warm
    warm = statistics.median(run("onprem", "tpcds", sql.format(old))[0] for _ in range(max(3, rounds)))
    files = _partition_files(stack, first_day + 1)
    out: dict[str, Any] = {"files": len(files), "bytes": sum(len(d) for _, d in files), "warm_old_s": warm}
    added: list[tuple[int, str]] = []
    _cli(
        stack,
        "policy",
        "add",
        "/tpcds/store_sales",
        "cacheLoad(newerThan(7d), pinFor(1h))",
        "--name",
        PREFETCH_POLICY,
    )
    try:
        before = _prefetched(stack)
        t0 = time.monotonic()
        added.append(
            (NEW_DAY, add_partition_on_prem(stack, "store_sales", "ss_sold_date_sk", NEW_DAY, files))
        )
        while _prefetched(stack) < before + len(files):
            if time.monotonic() - t0 > 120:
                raise SystemExit("pre-fetch: the new partition's files were not loaded within 120 s")
            time.sleep(0.1)
        out["loaded_after_s"] = time.monotonic() - t0
        time.sleep(1.5)  # the proxy's follower has read the same event by now (1 s interval)
        t, rows = run("onprem", "tpcds", sql.format(NEW_DAY))
        out["first_query_prefetched_s"] = t
        _, want = run("direct", "tpcds", sql.format(NEW_DAY))
        if rows != want:
            raise SystemExit(f"pre-fetch: metaproxy returned {rows}, direct {want}")
    finally:
        _cli(stack, "policy", "remove", PREFETCH_POLICY)
    time.sleep(6)  # the gateway reads its policies again every 5 s
    added.append(
        (NEW_DAY + 1, add_partition_on_prem(stack, "store_sales", "ss_sold_date_sk", NEW_DAY + 1, files))
    )
    time.sleep(3)  # the event has been read: only the data is cold
    out["first_query_cold_s"] = run("onprem", "tpcds", sql.format(NEW_DAY + 1))[0]
    for day, path in added:
        drop_partition_on_prem(stack, "store_sales", day, path)
    time.sleep(2)
    return out


# -- outage --------------------------------------------------------------------------------


def outage(
    stack: dict[str, Any],
    set_down: Callable[[bool], None],
    run: Run,
    queries: dict[str, str],
    outage_s: float,
) -> dict[str, Any]:
    """The link down for ``outage_s`` with the suite warm; see the module's docstring."""
    run("direct", "tpcds", f"DROP TABLE IF EXISTS {COLD}")
    run("direct", "tpcds", f"CREATE TABLE {COLD} AS SELECT * FROM item")
    expected = {q: run("onprem", "tpcds", sql)[1] for q, sql in queries.items()}  # warm, and the rows
    if FRESH not in {r[0] for r in run("direct", "tpcds", "SHOW TABLES")[1]}:
        fresh_table(run)
    values_of(run, "onprem")
    token = f"outage-{int(time.time())}"
    out: dict[str, Any] = {"outage_s": outage_s, "suites": 0, "queries": 0, "failed": 0, "wrong_rows": 0}
    errors: list[str] = []
    times: list[float] = []

    def cold_table(label: str) -> None:
        """A table nobody has read through metaproxy: it cannot be served, and must say so."""
        t0 = time.perf_counter()
        try:
            run("onprem", "tpcds", f"SELECT count(*) FROM {COLD}")
            out[label] = {"s": time.perf_counter() - t0, "error": None}
        except Exception as e:
            out[label] = {"s": time.perf_counter() - t0, "error": _first_line(e)}

    set_down(True)
    down_at = time.monotonic()
    try:
        cold_table("cold_table_at_once")
        # a change on-prem (straight to the HMS, which needs nothing across the link for it)
        alter_on_prem(stack, FRESH, {OUTAGE_PROPERTY: token})
        while time.monotonic() - down_at < outage_s:
            out["suites"] += 1
            for q, sql in queries.items():
                out["queries"] += 1
                try:
                    t, rows = run("onprem", "tpcds", sql)
                    times.append(t)
                    if rows != expected[q]:
                        out["wrong_rows"] += 1
                except Exception as e:
                    out["failed"] += 1
                    errors.append(f"{q}: {_first_line(e)}")
                if "cold_table_later" not in out and time.monotonic() - down_at > min(60.0, outage_s / 2):
                    cold_table("cold_table_later")
                if time.monotonic() - down_at >= outage_s:
                    break
    finally:
        set_down(False)
    up_at = time.monotonic()
    sql = f'SELECT "{OUTAGE_PROPERTY}" FROM "{FRESH}$properties"'
    while True:
        try:
            if run("onprem", "tpcds", sql)[1] == [[token]]:
                out["change_seen_after_s"] = time.monotonic() - up_at
                break
        except Exception:
            pass  # the property is not there yet: no such column
        if time.monotonic() - up_at > 300:
            out["change_seen_after_s"] = None
            break
        time.sleep(0.1)
    out["query_s"] = summary(times) if times else {"n": 0}
    out["errors"] = errors[:5]
    run("direct", "tpcds", f"DROP TABLE IF EXISTS {COLD}")
    return out


def alter_on_prem(stack: dict[str, Any], table: str, parameters: dict[str, str]) -> None:
    """Set table parameters with the on-prem HMS directly (statistics left as they are)."""
    from hive_metastore import ttypes as tt

    from metaproxy.hms import connect

    with connect(stack["hms"]) as c:
        t = c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName=table)).table
        t.parameters = {**(t.parameters or {}), **parameters}
        context = tt.EnvironmentContext(properties={"DO_NOT_UPDATE_STATS": "true"})
        c.alter_table_with_environment_context("tpcds", table, t, context)


def values_of_quietly(run: Run, catalog: str) -> set[int]:
    try:
        return values_of(run, catalog)
    except Exception:
        return set()


def _first_line(e: Exception) -> str:
    text = getattr(e, "message", None) or str(e)
    return str(text).strip().splitlines()[0][:300] if str(text).strip() else type(e).__name__

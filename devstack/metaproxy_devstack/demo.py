"""``make demo``: the local stack, the sample data, and a query through metaproxy's catalog.

It prints what it does at each step so a newcomer can follow the scenario end to end.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from metaproxy_devstack import sample_data
from metaproxy_devstack.launcher import Stack, StackError

QUERY = (
    "SELECT i.i_category, count(*) AS sales, sum(s.ss_ext_sales_price) AS revenue "
    "FROM store_sales s JOIN item i ON s.ss_item_sk = i.i_item_sk "
    "GROUP BY i.i_category ORDER BY revenue DESC LIMIT 5"
)


def run_query(trino_url: str, sql: str, catalog: str) -> tuple[list[str], list[list[object]], float]:
    import trino

    host, port = trino_url.split("//", 1)[1].split(":")
    conn = trino.dbapi.connect(host=host, port=int(port), user="metaproxy", catalog=catalog, schema="tpcds")
    t0 = time.monotonic()
    cur = conn.cursor()
    cur.execute(sql)
    rows = [list(r) for r in cur.fetchall()]
    cols = [d[0] for d in cur.description or []]
    conn.close()
    return cols, rows, time.monotonic() - t0


def main() -> int:
    console = Console()
    console.rule("[bold]1. the local stack: HDFS, Hive Metastore, S3, Trino")
    try:
        ep = Stack().up()
    except StackError as e:
        console.print(f"[red]stack: {e}")
        return 1
    for key in ("hms", "hdfs", "webhdfs", "s3", "trino", "proxy", "gateway", "admin"):
        if key in ep:
            console.print(f"  {key:8s} {ep[key]}")

    console.rule("[bold]2. sample data on HDFS, registered in the on-prem HMS")
    wanted = sample_data.sample_id(1.0, sample_data.DEFAULT_SEED, sample_data.DEFAULT_PARTITIONS)
    if sample_data.loaded_sample(ep["hms"]) == wanted:
        console.print("  already loaded")
    else:
        r = sample_data.load(ep["hms"], ep["hdfs"], ep["webhdfs"])
        console.print(
            f"  {r.database}: {r.tables} — {r.partitions} partitions, {r.files} Parquet files, "
            f"{r.bytes / 1e6:.1f} MB in {r.seconds:.1f}s at {r.location}"
        )

    console.rule("[bold]3. Trino's metastore is metaproxy: locations are rewritten on the way out")
    for catalog in ("direct", "onprem"):
        _, rows, _ = run_query(ep["trino"], "SHOW CREATE TABLE store_sales", catalog)
        location = next(line.strip() for line in str(rows[0][0]).splitlines() if "external_location" in line)
        console.print(f"  {catalog:12s} {location}")
    console.print("  [dim]direct talks to the HMS itself; onprem goes through the proxy's `cloud` listener")

    console.rule("[bold]4. the same query: straight to HDFS, then through metaproxy cold and warm")
    for catalog, label in (
        ("direct", "direct (Trino reads HDFS itself)"),
        ("onprem", "onprem, cold"),
        ("onprem", "onprem, warm"),
    ):
        cols, rows, seconds = run_query(ep["trino"], QUERY, catalog)
        table = Table(*cols, title=f"{label} — {seconds:.2f}s")
        for row in rows:
            table.add_row(*(str(v) for v in row))
        console.print(table)
    console.print(f"[dim]{QUERY}")

    console.rule("[bold]5. what the cache gateway served (metaproxy report)")
    import requests

    rep = requests.get(f"{ep['gateway_admin']}/report", timeout=10).json()
    console.print(
        f"  hit ratio {rep['hit_ratio']:.1%} ({rep['hit_ratio_definition']}); "
        f"read from HDFS {rep['bytes_from_ufs'] / 2**20:.1f} MiB, served from cache "
        f"{(rep['bytes_from_memory'] + rep['bytes_from_disk']) / 2**20:.1f} MiB"
    )
    console.print("  [dim]full report: .venv/bin/metaproxy --config .stack/conf/metaproxy.toml report")

    migrate_step(console, ep)
    console.print("\nStop everything with [bold]make stop[/bold].")
    return 0


DEMO_POLICY = "ufsMigrate(olderThan(5s), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"
DEMO_QUERY = "SELECT count(*), sum(ss_ext_sales_price) FROM store_sales"


def migrate_step(console: Console, ep: dict[str, str]) -> None:
    """Step 2 of the scenario: a policy moves data to S3 while the same query keeps answering."""
    import threading
    import tomllib
    from pathlib import Path

    from metaproxy.config import parse_config
    from metaproxy.migrate.loop import Migrator, policy_status
    from metaproxy.migrate.policy import add_policy
    from metaproxy.state import open_state
    from metaproxy.ufs.s3 import s3_client

    console.rule("[bold]6. move data to S3 with a policy while the query keeps answering")
    schema = f"demo_{time.strftime('%Y%m%d%H%M%S')}"
    run_query(
        ep["trino"],
        f"CREATE SCHEMA direct.{schema} WITH (location = '{ep['hdfs']}/warehouse/tpcds/{schema}')",
        "direct",
    )
    run_query(
        ep["trino"],
        f"CREATE TABLE direct.{schema}.store_sales WITH (format = 'PARQUET', partitioned_by = ARRAY['ss_sold_date_sk'])"
        " AS SELECT * FROM direct.tpcds.store_sales WHERE ss_sold_date_sk IN"
        " (SELECT DISTINCT ss_sold_date_sk FROM direct.tpcds.store_sales ORDER BY 1 LIMIT 12)",
        "direct",
    )
    console.print(f"  {schema}.store_sales: 12 partitions copied from tpcds.store_sales onto HDFS")
    raw = tomllib.loads(Path(ep["config"]).read_text())
    raw["migrate"] = {**raw.get("migrate", {}), "grace_period": "0s", "write_back_to_hms": True}
    config = parse_config(raw, ep["config"])
    s3 = s3_client(config.s3)
    bucket = config.migrate.target.split("://", 1)[1].split("/", 1)[0]
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    db = open_state(config.state_path)
    add_policy(db, schema, f"/tpcds/{schema}/store_sales", DEMO_POLICY)
    db.conn.close()
    console.print(f'  metaproxy policy add /tpcds/{schema}/store_sales "{DEMO_POLICY}"')

    def query() -> list[list[object]]:
        return run_query(ep["trino"], DEMO_QUERY.replace("store_sales", f"{schema}.store_sales"), "onprem")[1]

    before = query()
    answers: list[object] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                answers.append(query())
            except Exception as e:
                answers.append(e)

    time.sleep(5.5)  # the policy's olderThan(5s)
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    m = Migrator(config)
    try:
        first = m.run_once(schema)
        console.print(f"  pass 1: {first.counts} — copied, verified with SHA-256, flipped, written back")
        time.sleep(2.5)  # the shortest grace period: two proxy refresh intervals
        second = m.run_once(schema)
        console.print(f"  pass 2: {second.counts} — HDFS copies removed after the grace period")
        status = policy_status(m.store, schema)[schema]
    finally:
        m.close()
        time.sleep(1.0)
        stop.set()
        t.join(60)
    same = sum(1 for a in answers if a == before)
    console.print(
        f"  the query ran {len(answers)} times through onprem during the move: {same} identical answers, "
        f"{sum(isinstance(a, Exception) for a in answers)} failures ({before[0]})"
    )
    console.print(
        f"  policy status: {status['states']}, {status['copied_bytes'] / 2**20:.1f} of "
        f"{status['bytes'] / 2**20:.1f} MiB copied"
    )
    _, paths, _ = run_query(
        ep["trino"],
        f"SELECT DISTINCT regexp_extract(\"$path\", '^[a-z0-9]+://[^/]+') FROM {schema}.store_sales",
        "onprem",
    )
    console.print(f"  onprem now reads {sorted(str(p[0]) for p in paths)}")
    console.print("  [dim].venv/bin/metaproxy --config .stack/conf/metaproxy.toml policy status")


if __name__ == "__main__":
    sys.exit(main())

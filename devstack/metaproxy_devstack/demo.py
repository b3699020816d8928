"""``make demo``: the local stack, the sample data, and a query through metaproxy's catalog.

It prints what it does at each step so a newcomer can follow the scenario end to end.

Everything printed that comes from data, a service or the user (endpoints, locations, query
results, policies, errors) goes out as plain text, never as console markup: a policy's
``UFS[hdfs]`` is text, not a style tag.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from metaproxy_devstack import sample_data
from metaproxy_devstack.common import HMS_RELEASES
from metaproxy_devstack.launcher import Stack, StackError

QUERY = (
    "SELECT i.i_category, count(*) AS sales, sum(s.ss_ext_sales_price) AS revenue "
    "FROM store_sales s JOIN item i ON s.ss_item_sk = i.i_item_sk "
    "GROUP BY i.i_category ORDER BY revenue DESC LIMIT 5"
)
DEMO_POLICY = "ufsMigrate(olderThan(5s), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"
DEMO_QUERY = "SELECT count(*), sum(ss_ext_sales_price) FROM store_sales"


def say(console: Console, text: str, style: str | None = None) -> None:
    """Print ``text`` as it is (markup off), in ``style``."""
    console.print(text, style=style, markup=False)


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


def result_table(cols: list[str], rows: list[list[object]], title: str) -> Table:
    """Query results as a table; column names and values are text, not markup."""
    table = Table(title=Text(title))
    for col in cols:
        table.add_column(Text(col))
    for row in rows:
        table.add_row(*(Text(str(v)) for v in row))
    return table


def shown_path(path: str) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else path
    except ValueError:
        return path


def main() -> int:
    console = Console()
    console.rule("[bold]1. the local stack: HDFS, Hive Metastore, S3, Trino")
    try:
        # the running stack, whatever its Hive Metastore; none running: $METAPROXY_HMS, else 4.0
        ep = Stack(hms_version=os.environ.get("METAPROXY_HMS") or None).up()
    except StackError as e:
        say(console, f"stack: {e}", "red")
        return 1
    release = HMS_RELEASES.get(ep.get("hms_version", ""), "")
    for key in ("hms", "hdfs", "webhdfs", "s3", "trino", "proxy", "gateway", "admin"):
        if key in ep:
            say(console, f"  {key:8s} {ep[key]}" + (f" (Hive {release})" if key == "hms" and release else ""))
    sample_step(console, ep)
    catalog_step(console, ep)
    query_step(console, ep)
    report_step(console, ep)
    migrate_step(console, ep)
    console.print("\nStop everything with [bold]make stop[/bold].")
    return 0


def sample_step(console: Console, ep: dict[str, Any]) -> None:
    console.rule("[bold]2. sample data on HDFS, registered in the on-prem HMS")
    wanted = sample_data.sample_id(1.0, sample_data.DEFAULT_SEED, sample_data.DEFAULT_PARTITIONS)
    if sample_data.loaded_sample(ep["hms"]) == wanted:
        say(console, "  already loaded")
        return
    r = sample_data.load(ep["hms"], ep["hdfs"], ep["webhdfs"])
    say(
        console,
        f"  {r.database}: {r.tables} — {r.partitions} partitions, {r.files} Parquet files, "
        f"{r.bytes / 1e6:.1f} MB in {r.seconds:.1f}s at {r.location}",
    )


def catalog_step(console: Console, ep: dict[str, Any]) -> None:
    console.rule("[bold]3. Trino's metastore is metaproxy: locations are rewritten on the way out")
    for catalog in ("direct", "onprem"):
        _, rows, _ = run_query(ep["trino"], "SHOW CREATE TABLE store_sales", catalog)
        location = next(line.strip() for line in str(rows[0][0]).splitlines() if "external_location" in line)
        say(console, f"  {catalog:12s} {location}")
    say(console, "  direct talks to the HMS itself; onprem goes through the proxy's `cloud` listener", "dim")


def query_step(console: Console, ep: dict[str, Any]) -> None:
    console.rule("[bold]4. the same query: straight to HDFS, then through metaproxy cold and warm")
    for catalog, label in (
        ("direct", "direct (Trino reads HDFS itself)"),
        ("onprem", "onprem, cold"),
        ("onprem", "onprem, warm"),
    ):
        cols, rows, seconds = run_query(ep["trino"], QUERY, catalog)
        console.print(result_table(cols, rows, f"{label} — {seconds:.2f}s"))
    say(console, QUERY, "dim")


def report_step(console: Console, ep: dict[str, Any]) -> None:
    console.rule("[bold]5. what the cache gateway served (metaproxy report)")
    import requests

    rep = requests.get(f"{ep['gateway_admin']}/report", timeout=10).json()
    say(
        console,
        f"  hit ratio {rep['hit_ratio']:.1%} ({rep['hit_ratio_definition']}); "
        f"read from HDFS {rep['bytes_from_ufs'] / 2**20:.1f} MiB, served from cache "
        f"{(rep['bytes_from_memory'] + rep['bytes_from_disk']) / 2**20:.1f} MiB",
    )
    say(console, f"  full report: .venv/bin/metaproxy --config {shown_path(ep['config'])} report", "dim")


def migrate_step(console: Console, ep: dict[str, Any]) -> None:
    """Step 2 of the scenario: a policy moves data to S3 while the same query keeps answering."""
    console.rule("[bold]6. move data to S3 with a policy while the query keeps answering")
    schema = f"demo_{time.strftime('%Y%m%d%H%M%S')}"
    _copy_partitions(console, ep, schema)
    config = _migration_config(ep)
    _add_policy(console, config, schema)

    def query() -> list[list[object]]:
        return run_query(ep["trino"], DEMO_QUERY.replace("store_sales", f"{schema}.store_sales"), "onprem")[1]

    before = query()
    time.sleep(5.5)  # the policy's olderThan(5s)
    answers: list[object] = []
    stop = threading.Event()
    t = threading.Thread(target=_query_until, args=(query, answers, stop), daemon=True)
    t.start()
    try:
        status = _migrate(console, config, schema)
    finally:
        time.sleep(1.0)
        stop.set()
        t.join(60)
    same = sum(1 for a in answers if a == before)
    say(
        console,
        f"  the query ran {len(answers)} times through onprem during the move: {same} identical answers, "
        f"{sum(isinstance(a, Exception) for a in answers)} failures ({before[0]})",
    )
    say(
        console,
        f"  policy status: {status['states']}, {status['copied_bytes'] / 2**20:.1f} of "
        f"{status['bytes'] / 2**20:.1f} MiB copied",
    )
    _, paths, _ = run_query(
        ep["trino"],
        f"SELECT DISTINCT regexp_extract(\"$path\", '^[a-z0-9]+://[^/]+') FROM {schema}.store_sales",
        "onprem",
    )
    say(console, f"  onprem now reads {sorted(str(p[0]) for p in paths)}")
    say(console, f"  .venv/bin/metaproxy --config {shown_path(ep['config'])} policy status", "dim")


def _copy_partitions(console: Console, ep: dict[str, Any], schema: str) -> None:
    """A fresh schema on HDFS with a 12-partition copy of the sample's store_sales."""
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
    say(console, f"  {schema}.store_sales: 12 partitions copied from tpcds.store_sales onto HDFS")


def _migration_config(ep: dict[str, Any]) -> Any:
    """The stack's config with no grace period and write-back to the HMS; its target bucket made."""
    import tomllib

    from metaproxy.config import parse_config
    from metaproxy.ufs.s3 import S3Ufs
    from metaproxy.uri import bucket_and_key

    raw = tomllib.loads(Path(ep["config"]).read_text())
    raw["migrate"] = {**raw.get("migrate", {}), "grace_period": "0s", "write_back_to_hms": True}
    config = parse_config(raw, ep["config"])
    S3Ufs(config.s3).ensure_bucket(bucket_and_key(config.migrate.target)[0])
    return config


def _add_policy(console: Console, config: Any, schema: str) -> None:
    from metaproxy.migrate.policy import add_policy
    from metaproxy.state import open_state

    with open_state(config.state) as db:
        add_policy(db, schema, f"/tpcds/{schema}/store_sales", DEMO_POLICY)
    say(console, f'  metaproxy policy add /tpcds/{schema}/store_sales "{DEMO_POLICY}"')


def _query_until(query: Any, answers: list[object], stop: threading.Event) -> None:
    """Run ``query`` again and again until ``stop``; each answer (or error) into ``answers``."""
    while not stop.is_set():
        try:
            answers.append(query())
        except Exception as e:
            answers.append(e)


def _migrate(console: Console, config: Any, schema: str) -> Any:
    """Two passes of the migration loop over ``schema``; returns the policy's status after them."""
    from metaproxy.migrate.loop import Migrator, policy_status

    m = Migrator(config)
    try:
        first = m.run_once(schema)
        say(console, f"  pass 1: {first.counts} — copied, verified with SHA-256, flipped, written back")
        time.sleep(2.5)  # the shortest grace period: two proxy refresh intervals
        second = m.run_once(schema)
        say(console, f"  pass 2: {second.counts} — HDFS copies removed after the grace period")
        return policy_status(m.store, schema)[schema]
    finally:
        m.close()


if __name__ == "__main__":
    sys.exit(main())

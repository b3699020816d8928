"""Spark SQL as a metastore client: its built-in Hive 2.3 client through the proxy's ``cloud``
listener sees the sample's tables, schemas and partitions and reads their bytes through the
cache gateway over S3A; straight to the stack's HMS it fails where that HMS no longer serves
what a Hive 2.3 client calls.

Each scenario is one Spark process (``tests/spark_client.py``): a Hive-enabled SparkSession
cannot change metastores within one JVM. Spark needs pyspark (the test extra) and S3A's jars
(devstack's ``java/spark`` module, laid out in the stack's ``lib/spark`` by ``stack up``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from hive_metastore import ttypes as tt

from metaproxy.hms import connect

pytestmark = [pytest.mark.integration, pytest.mark.compat]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLIENT = Path(__file__).resolve().parent.parent / "spark_client.py"
TABLE = "tpcds.store_sales"
#: what the stack's HMS is when endpoints.json does not say
DEFAULT_HMS_VERSION = "4.0"


def unavailable(reason: str) -> None:
    """In CI a missing piece fails the test; elsewhere it skips it, with the same reason."""
    if IN_CI:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def pyspark_folder() -> Path:
    try:
        import pyspark
    except ImportError:
        unavailable("pyspark is not installed: pip install -e '.[test]' (make setup) installs it")
    return Path(pyspark.__file__).parent


def spark_jars() -> Path:
    """The folder of S3A's jars for Spark, checked against the Hadoop that pyspark ships."""
    from metaproxy_devstack.common import stack_dir

    pyspark = pyspark_folder()
    jars = stack_dir() / "lib" / "spark"
    aws = sorted(jars.glob("hadoop-aws-*.jar"))
    if not aws or not list(jars.glob("bundle-*.jar")):
        unavailable(
            f"S3A's jars for Spark are missing in {jars}: a stack started before devstack's java/spark "
            "module existed has not installed them; `make stop` and start the stack again"
        )
    shipped = sorted((pyspark / "jars").glob("hadoop-client-api-*.jar"))
    hadoop = shipped[0].name.removeprefix("hadoop-client-api-") if shipped else "?"
    if aws[0].name.removeprefix("hadoop-aws-") != hadoop:
        unavailable(f"{aws[0].name} does not match pyspark's Hadoop ({hadoop}): align java/spark/pom.xml")
    return jars


def s3a_conf(stack: dict[str, Any], jars: Path) -> dict[str, str]:
    """S3A for ``s3://`` and ``s3a://``: the gateway's bucket to the cache gateway with its keys,
    every other bucket to the stack's S3 server."""
    gateway = "spark.hadoop.fs.s3a.bucket.metaproxy."
    return {
        # local mode: the driver runs the tasks, so the driver's classpath is enough (spark.jars
        # would copy the 650 MB SDK bundle into every task's work folder)
        "spark.driver.extraClassPath": f"{jars}/*",
        # the proxy hands out s3:// locations
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": stack["s3"],
        "spark.hadoop.fs.s3a.endpoint.region": stack["s3_region"],
        "spark.hadoop.fs.s3a.access.key": stack["s3_access_key"],
        "spark.hadoop.fs.s3a.secret.key": stack["s3_secret_key"],
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        gateway + "endpoint": stack["gateway"],
        gateway + "endpoint.region": stack["s3_region"],
        gateway + "access.key": stack["gateway_access_key"],
        gateway + "secret.key": stack["gateway_secret_key"],
        gateway + "path.style.access": "true",
    }


def spark_sql(metastore: str, statements: list[str], conf: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Run the statements in a fresh Spark process on the metastore; its answer (see spark_client)."""
    spec = workdir / "spec.json"
    workdir.mkdir(parents=True, exist_ok=True)
    spec.write_text(
        json.dumps({"metastore": metastore, "workdir": str(workdir), "conf": conf, "statements": statements})
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(CLIENT), str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"the Spark client failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    answer = dict(json.loads(lines[-1].removeprefix("RESULT ")))
    answer["process_seconds"] = round(time.monotonic() - t0, 3)
    return answer


def rows_of(answer: dict[str, Any], sql: str) -> list[list[Any]]:
    result = next(r for r in answer["results"] if r["sql"] == sql)
    assert "error" not in result, f"{sql}: {result['error']}"
    return list(result["rows"])


def error_of(answer: dict[str, Any], sql: str) -> str | None:
    return next(r for r in answer["results"] if r["sql"] == sql).get("error")


def as_json(rows: list[list[Any]]) -> list[list[Any]]:
    """Trino's rows with decimals and dates as text, as the Spark client reports them."""
    return list(json.loads(json.dumps(rows, default=str)))


def described_columns(rows: list[list[Any]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Spark's DESCRIBE: every column with its type (partition columns last), and the
    partition columns of its ``# Partition Information`` section."""
    columns, partitions = [], []
    section = columns
    for name, data_type, _ in rows:
        if name.startswith("#"):
            if name == "# Partition Information":
                section = partitions
            continue
        if name:
            section.append((name, data_type))
    return columns, [name for name, _ in partitions]


def report(stack: dict[str, Any]) -> dict[str, Any]:
    r = requests.get(f"{stack['gateway_admin']}/report", timeout=10)
    r.raise_for_status()
    return dict(r.json())


def hms_table(stack: dict[str, Any]) -> tuple[Any, list[str]]:
    """The table and its partition names, straight from the HMS in its own dialect."""
    with connect(stack["hms"]) as client:
        table = client.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="store_sales")).table
        names = client.get_partition_names("tpcds", "store_sales", -1)
    return table, sorted(names)


def queries(partition_names: list[str]) -> list[str]:
    """Reads over a few partitions (first, middle, last) and a join with ``item`` over a range."""
    sks = sorted(int(n.split("=", 1)[1]) for n in partition_names)
    few = ", ".join(str(sk) for sk in (sks[0], sks[len(sks) // 2], sks[-1]))
    return [
        "SELECT ss_sold_date_sk, count(*), sum(ss_quantity), sum(ss_net_profit), max(ss_ticket_number) "
        f"FROM {TABLE} WHERE ss_sold_date_sk IN ({few}) GROUP BY ss_sold_date_sk ORDER BY ss_sold_date_sk",
        "SELECT i.i_category, count(*), sum(s.ss_ext_sales_price), min(i.i_current_price) "
        f"FROM {TABLE} s JOIN tpcds.item i ON s.ss_item_sk = i.i_item_sk "
        f"WHERE s.ss_sold_date_sk BETWEEN {sks[10]} AND {sks[29]} GROUP BY i.i_category ORDER BY i.i_category",
    ]


@pytest.fixture(scope="module")
def through_proxy(
    stack: dict[str, Any], tpcds: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One Spark process through the proxy's cloud listener: metadata, reads, the files read,
    and the gateway's report before and after."""
    jars = spark_jars()
    table, names = hms_table(stack)
    selects = queries(names)
    files = f"SELECT DISTINCT input_file_name() FROM {TABLE} WHERE ss_sold_date_sk = {names[0].split('=')[1]}"
    statements = [
        "SHOW DATABASES",
        f"DESCRIBE {TABLE}",
        f"DESCRIBE FORMATTED {TABLE}",
        f"SHOW PARTITIONS {TABLE}",
        *selects,
        files,
    ]
    before = report(stack)
    answer = spark_sql(
        stack["proxy"], statements, s3a_conf(stack, jars), tmp_path_factory.mktemp("spark-proxy")
    )
    after = report(stack)
    return {
        "answer": answer,
        "table": table,
        "partition_names": names,
        "selects": selects,
        "files": files,
        "before": before,
        "after": after,
    }


@pytest.fixture(scope="module")
def straight(stack: dict[str, Any], tpcds: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Spark process straight to the stack's HMS (metadata only: no S3A needed)."""
    pyspark_folder()
    statements = ["SHOW DATABASES", f"DESCRIBE {TABLE}"]
    return spark_sql(stack["hms"], statements, {}, tmp_path_factory.mktemp("spark-hms"))


def test_show_databases_through_the_proxy(through_proxy: dict[str, Any]) -> None:
    answer = through_proxy["answer"]
    assert answer["spark_version"].startswith("4.")
    assert ["tpcds"] in rows_of(answer, "SHOW DATABASES")


def test_describe_through_the_proxy_equals_the_metastores_schema(
    through_proxy: dict[str, Any], trino_query: Callable[..., list[list[Any]]]
) -> None:
    columns, partition_columns = described_columns(rows_of(through_proxy["answer"], f"DESCRIBE {TABLE}"))
    table = through_proxy["table"]
    assert columns == [(c.name, c.type) for c in table.sd.cols + table.partitionKeys]
    assert partition_columns == [c.name for c in table.partitionKeys] == ["ss_sold_date_sk"]
    trino = trino_query(f"DESCRIBE direct.{TABLE}")
    assert [name for name, _ in columns] == [row[0] for row in trino]
    assert partition_columns == [row[0] for row in trino if row[2] == "partition key"]


def test_locations_spark_sees_are_the_gateways(through_proxy: dict[str, Any]) -> None:
    formatted = rows_of(through_proxy["answer"], f"DESCRIBE FORMATTED {TABLE}")
    assert ["Location", "s3://metaproxy/tpcds/store_sales", ""] in formatted
    files = [row[0] for row in rows_of(through_proxy["answer"], through_proxy["files"])]
    first = through_proxy["partition_names"][0]
    assert files == [f"s3://metaproxy/tpcds/store_sales/{first}/part-00000.parquet"]


def test_show_partitions_through_the_proxy(through_proxy: dict[str, Any]) -> None:
    shown = sorted(row[0] for row in rows_of(through_proxy["answer"], f"SHOW PARTITIONS {TABLE}"))
    assert len(shown) == 120
    assert shown == through_proxy["partition_names"]


def test_reads_through_the_gateway_equal_direct(
    stack: dict[str, Any], through_proxy: dict[str, Any], trino_query: Callable[..., list[list[Any]]]
) -> None:
    for sql in through_proxy["selects"]:
        rows = rows_of(through_proxy["answer"], sql)
        assert rows, sql
        assert rows == as_json(trino_query(sql, catalog="direct")), sql
    # the bytes came through the cache gateway
    served = through_proxy["after"]["bytes_served_per_mount"].get("/tpcds", 0)
    assert served > through_proxy["before"]["bytes_served_per_mount"].get("/tpcds", 0)


def test_straight_to_the_metastore(stack: dict[str, Any], straight: dict[str, Any]) -> None:
    """Hive 4 no longer serves get_table, which Spark's Hive 2.3 client calls for DESCRIBE;
    an upstream that serves it (Hive 2.3, 3.1) answers Spark straight."""
    assert ["tpcds"] in rows_of(straight, "SHOW DATABASES")
    error = error_of(straight, f"DESCRIBE {TABLE}")
    if stack.get("hms_version", DEFAULT_HMS_VERSION).startswith("4"):
        assert error is not None and "Invalid method name: 'get_table'" in error, error
    else:
        assert error is None, error
        columns, partition_columns = described_columns(rows_of(straight, f"DESCRIBE {TABLE}"))
        assert partition_columns == ["ss_sold_date_sk"]
        assert columns[0] == ("ss_sold_time_sk", "bigint")

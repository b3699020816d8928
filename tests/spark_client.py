"""Spark SQL as a metastore client, one scenario per process: a Hive-enabled SparkSession keeps
its metastore for the life of its JVM, so each metastore a test talks to gets a process of its
own (``tests/integration/test_spark.py`` starts them).

Usage: ``python tests/spark_client.py SPEC.json``. The spec names the metastore
(``metastore``: a ``thrift://`` URI), a scratch folder (``workdir``), extra Spark settings
(``conf``: S3A keys, the driver's classpath) and the SQL ``statements`` to run in order. The
answer is one JSON line on stdout after the marker ``RESULT``: per statement its column names
and rows, or the error it raised (a failing statement does not stop the next), and how long
the session took to start and each statement to run.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

MARKER = "RESULT "


def base_conf(metastore: str, workdir: Path) -> dict[str, str]:
    """Hive support on a remote metastore (so no Derby database of Spark's own), small and
    local: two cores, no UI, scratch files in the work folder."""
    return {
        "spark.master": "local[2]",
        "spark.app.name": "metaproxy-spark-client",
        "spark.driver.memory": "1g",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "4",
        "spark.sql.catalogImplementation": "hive",
        "spark.hadoop.hive.metastore.uris": metastore,
        "spark.sql.warehouse.dir": str(workdir / "warehouse"),
        "spark.local.dir": str(workdir / "local"),
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    conf = {**base_conf(spec["metastore"], workdir), **spec.get("conf", {})}
    t0 = time.monotonic()
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    started = time.monotonic() - t0
    version = spark.version
    results = []
    try:
        for sql in spec["statements"]:
            t1 = time.monotonic()
            try:
                df = spark.sql(sql)
                rows = [list(r) for r in df.collect()]
                results.append({"sql": sql, "columns": df.columns, "rows": rows})
            except Exception as e:  # the error is the answer of this statement
                results.append({"sql": sql, "error": f"{type(e).__name__}: {e}"})
            results[-1]["seconds"] = round(time.monotonic() - t1, 3)
    finally:
        spark.stop()
    return {"spark_version": version, "start_seconds": round(started, 3), "results": results}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    answer = run(spec)
    # decimals and dates as their text: the tests compare them with Trino's the same way
    print(MARKER + json.dumps(answer, default=str), flush=True)


if __name__ == "__main__":
    main()

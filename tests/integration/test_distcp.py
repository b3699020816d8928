"""DistCp as the migration loop's copier, against the real stack: DistCp (MapReduce's local job
runner, the stack's ``lib/distcp``) copies big units HDFS → S3, metaproxy verifies every file
itself before the flip Trino is then served; small units keep the built-in copier; a killed
DistCp job leaves its unit failed with the reason, and the next pass finishes it."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_migrate import (
    SCHEMA,
    config_for,
    create_partitioned_table,
    load_flips,
    paths,
    rows,
    stack_state,
    wait_for,
)

from metaproxy.config import Config
from metaproxy.hms import connect
from metaproxy.migrate.loop import Migrator
from metaproxy.migrate.policy import add_policy, remove_policy
from metaproxy.state import open_state
from metaproxy.state.units import MigrationStore
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path
from metaproxy_devstack.sample_data import parquet_bytes

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

POLICY = "ufsMigrate(olderThan(1m), UFS[s3]:STORE)"


@pytest.fixture(scope="module")
def distcp_lib(stack: dict[str, Any]) -> str:
    """The folder of DistCp's jars: ``$METAPROXY_DISTCP_CLASSPATH``, else the one the stack's
    config names (its ``lib/distcp``)."""
    raw = tomllib.loads(Path(stack["config"]).read_text())
    lib = os.environ.get("METAPROXY_DISTCP_CLASSPATH") or raw.get("migrate", {}).get("distcp_classpath", "")
    if not lib or not any(Path(lib).glob("hadoop-distcp-*.jar")):
        why = f"no DistCp jars in {lib or 'the stack (its config names no distcp_classpath)'}"
        if IN_CI:
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return lib


def distcp_config(
    stack: dict[str, Any], bucket: str, lib: str, logs: Path, threshold: int | str = 0
) -> Config:
    return config_for(
        stack,
        bucket,
        copier="distcp",
        distcp_threshold=threshold,
        distcp_classpath=lib,
        distcp_log_dir=str(logs),
        distcp_timeout="5m",
    )


@pytest.fixture
def lake(stack: dict[str, Any], s3_client: Any) -> Iterator[dict[str, Any]]:
    """A table of two old partitions under the /tpcds mount: d=1 small (two files of a few KB),
    d=2 bigger (two files of a few hundred KB of incompressible text)."""
    tag = uuid.uuid4().hex[:8]
    db = f"dcp_{tag}"
    location = f"{stack['hdfs']}/warehouse/tpcds/{db}"
    fs = WebHdfs(stack["webhdfs"])
    old_ms = int((time.time() - 7200) * 1000)
    expected, sizes, data = {}, {}, {}
    for d, n_rows, width in ((1, 40, 8), (2, 4000, 200)):
        ids = list(range(d * 100_000, d * 100_000 + n_rows))
        t = pa.table({"id": ids, "v": [os.urandom(width // 2).hex() for _ in ids]}, schema=SCHEMA)
        sizes[d] = 0
        for n in range(2):
            rel = f"t/d={d}/part-{n}.parquet"
            body = parquet_bytes(t.slice(n * n_rows // 2, n_rows // 2))
            fs.write(hdfs_path(f"{location}/{rel}"), body)
            fs.set_times(hdfs_path(f"{location}/{rel}"), mtime_ms=old_ms)
            sizes[d] += len(body)
            data[rel] = body
        expected[d] = (n_rows, sum(ids))
    create_partitioned_table(stack["hms"], db, location, (1, 2))
    bucket = f"distcp-{tag}"
    s3_client.create_bucket(Bucket=bucket)
    state = open_state(stack_state(stack))
    add_policy(state, f"p-{tag}", f"/tpcds/{db}/t", POLICY)
    yield {
        "db": db,
        "location": location,
        "bucket": bucket,
        "policy": f"p-{tag}",
        "expected": expected,
        "sizes": sizes,
        "data": data,
    }
    remove_policy(state, f"p-{tag}")
    state.close()
    with connect(stack["hms"]) as c:
        c.drop_database(db, False, True)
    fs.delete(hdfs_path(location), recursive=True)


def check_copies(stack: dict[str, Any], m: Migrator, lake: dict[str, Any], s3_client: Any) -> None:
    """Every file of every flipped unit: verified, with the source's SHA-256, and S3 holds
    exactly the source's bytes at the unit's destination."""
    flips = load_flips(stack_state(stack))
    for u in m.store.units(lake["policy"]):
        assert u.state == "flipped", u
        assert flips[u.source] == u.dest
        bucket, prefix = u.dest.split("://", 1)[1].split("/", 1)
        for f in m.store.files(u.id, u.attempt):
            body = lake["data"][f"t/{u.part}/{f.rel}"]
            assert f.state == "verified" and f.sha256 == hashlib.sha256(body).hexdigest(), f
            assert s3_client.get_object(Bucket=bucket, Key=f"{prefix}/{f.rel}")["Body"].read() == body


def distcp_events(m: Migrator) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in m.store.events(500):
        if e["kind"] == "distcp":
            out.setdefault(e["unit_id"], []).append(e["detail"])
    return out


def test_distcp_copies_every_unit_then_each_file_is_verified_and_the_flip_served(
    stack: dict[str, Any],
    lake: dict[str, Any],
    distcp_lib: str,
    tmp_path: Path,
    s3_client: Any,
    trino_query: Any,
) -> None:
    db, bucket = lake["db"], lake["bucket"]
    m = Migrator(distcp_config(stack, bucket, distcp_lib, tmp_path / "logs", threshold=0))
    try:
        report = m.run_once(lake["policy"])
        assert report.counts == {"flipped": 2}, (
            report,
            [u.last_error for u in m.store.units(lake["policy"])],
        )
        check_copies(stack, m, lake, s3_client)
        units = {u.part: u for u in m.store.units(lake["policy"])}
        events = distcp_events(m)
    finally:
        m.close()
    # each unit went through one DistCp job, whose log is kept
    for part in ("d=1", "d=2"):
        (detail,) = events[units[part].id]
        assert detail.startswith("2 files, ") and "log " in detail
        log = Path(detail.rsplit("log ", 1)[1])
        text = log.read_text()
        assert "mapred.LocalJobRunner" in text and "Completed writing s3a://" in text
        assert stack["s3_secret_key"] not in text
    # through the proxy Trino reads both partitions from the copies, with the same answers
    flipped = {f"s3://{bucket}"}
    wait_for(lambda: paths(trino_query, db) == {1: flipped, 2: flipped}, "the proxy to serve the flips")
    assert rows(trino_query, "onprem", db) == lake["expected"]


def test_small_units_keep_the_builtin_copier_and_a_killed_job_is_retried(
    stack: dict[str, Any], lake: dict[str, Any], distcp_lib: str, tmp_path: Path, s3_client: Any
) -> None:
    """d=1 is below the threshold (the built-in copier), d=2 above it (DistCp); the DistCp job
    is killed (SIGKILL to the JVM) as soon as it starts: d=2 fails with the reason and keeps
    its attempt; the next pass copies it with DistCp again and verifies it."""
    small, big = lake["sizes"][1], lake["sizes"][2]
    assert big > 4 * small
    logs = tmp_path / "logs"
    m = Migrator(distcp_config(stack, lake["bucket"], distcp_lib, logs, threshold=(small + big) // 2))
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        while not stop.is_set():
            proc = m.distcp.proc
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        report = m.run_once(lake["policy"])
        stop.set()
        t.join(5)
        units = {u.part: u for u in m.store.units(lake["policy"])}
        assert report.counts == {"flipped": 1, "failed": 1}, report
        assert killed
        # the small unit: the built-in copier, no DistCp job
        assert units["d=1"].state == "flipped" and units["d=1"].id not in distcp_events(m)
        failed = units["d=2"]
        assert failed.state == "failed" and failed.resume_state == "copying"
        assert failed.last_error.startswith("DistCpError: DistCp was killed by signal 9; log "), (
            failed.last_error
        )
        assert all(f.state == "planned" for f in m.store.files(failed.id, failed.attempt))
        assert failed.source not in load_flips(stack_state(stack))
        # the fault gone and the backoff over, the next pass takes it up from the journal
        MigrationStore(m.db).set_state(failed.id, "failed", next_try=0)  # as an operator would
        assert m.run_once(lake["policy"]).counts == {"flipped": 2}
        check_copies(stack, m, lake, s3_client)
        done = m.store.unit(failed.id)
        assert done.attempt == failed.attempt and done.dest == failed.dest
        assert len(distcp_events(m)[failed.id]) == 1  # the killed job got no event
        logs_written = sorted(p.name for p in logs.iterdir())
    finally:
        stop.set()
        m.close()
    assert len(logs_written) == 2 and all(n.startswith(f"unit-{failed.id}-a") for n in logs_written)


def test_a_failed_job_fails_its_unit_with_the_reason_from_its_log(
    stack: dict[str, Any], lake: dict[str, Any], distcp_lib: str, tmp_path: Path, s3_client: Any
) -> None:
    """The target bucket does not exist yet: each unit's DistCp job fails, and its error quotes
    S3's answer from the job's log; once the bucket is there the next pass finishes both."""
    bucket = f"later-{uuid.uuid4().hex[:8]}"
    m = Migrator(distcp_config(stack, bucket, distcp_lib, tmp_path / "logs", threshold=0))
    try:
        assert m.run_once(lake["policy"]).counts == {"failed": 2}
        for u in m.store.units(lake["policy"]):
            assert u.last_error.startswith("DistCpError: DistCp failed (exit "), u.last_error
            assert "NoSuchBucket" in u.last_error and "\tat " not in u.last_error
            assert stack["s3_secret_key"] not in u.last_error
        s3_client.create_bucket(Bucket=bucket)
        for u in m.store.units(lake["policy"]):
            MigrationStore(m.db).set_state(u.id, "failed", next_try=0)
        assert m.run_once(lake["policy"]).counts == {"flipped": 2}
        for u in m.store.units(lake["policy"]):
            bucket_of, prefix = u.dest.split("://", 1)[1].split("/", 1)
            for f in m.store.files(u.id, u.attempt):
                body = lake["data"][f"t/{u.part}/{f.rel}"]
                assert f.state == "verified" and f.sha256 == hashlib.sha256(body).hexdigest()
                assert s3_client.get_object(Bucket=bucket_of, Key=f"{prefix}/{f.rel}")["Body"].read() == body
    finally:
        m.close()

"""The migration loop against the real stack: HMS units, WebHDFS → S3 copies, verification,
flips the proxy serves to Trino, removal after the grace period, and kill -9 at many points."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from metaproxy.config import Config, parse_config
from metaproxy.hms import connect
from metaproxy.migrate.loop import Migrator
from metaproxy.migrate.policy import add_policy, remove_policy
from metaproxy.state import open_state
from metaproxy.state.units import MigrationStore
from metaproxy.state.units import load_flips as stored_flips
from metaproxy.ufs import UfsNotFound
from metaproxy.ufs.s3 import S3Ufs
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path
from metaproxy_devstack.sample_data import _storage, parquet_bytes

pytestmark = [pytest.mark.integration, pytest.mark.state]


@contextmanager
def journal(stack: dict[str, Any]) -> Iterator[MigrationStore]:
    """The stack's migration journal, read as another process would."""
    with open_state(stack_state(stack)) as db:
        yield MigrationStore(db)


def load_flips(path: str) -> dict[str, str]:
    with open_state(path) as db:
        return stored_flips(db)


def create_partitioned_table(hms: str, db: str, location: str, parts: Iterable[int]) -> None:
    """Database ``db`` at ``location`` with an external table ``t`` (SCHEMA, partitioned by
    ``d``) whose partitions ``d=<n>`` are the folders ``t/d=<n>`` below it, in the HMS ``hms``."""
    from hive_metastore.ttypes import Database, FieldSchema, Partition, Table

    from metaproxy.hms import connect

    with connect(hms) as c:
        c.create_database(Database(name=db, locationUri=location, parameters={}))
        c.create_table(
            Table(
                tableName="t",
                dbName=db,
                owner="test",
                createTime=int(time.time()),
                lastAccessTime=0,
                retention=0,
                sd=_storage(SCHEMA, f"{location}/t"),
                partitionKeys=[FieldSchema(name="d", type="bigint", comment=None)],
                parameters={"EXTERNAL": "TRUE"},
                tableType="EXTERNAL_TABLE",
            )
        )
        c.add_partitions(
            [
                Partition(
                    values=[str(d)],
                    dbName=db,
                    tableName="t",
                    createTime=int(time.time()),
                    lastAccessTime=0,
                    sd=_storage(SCHEMA, f"{location}/t/d={d}"),
                    parameters={},
                )
                for d in parts
            ]
        )


SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
POLICY = "ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"


def config_for(stack: dict[str, Any], bucket: str, **migrate: Any) -> Config:
    """The stack's own config (so the proxy sees the flips), with this test's target bucket."""
    raw = tomllib.loads(Path(stack["config"]).read_text())
    raw["migrate"] = {"target": f"s3://{bucket}/", "grace_period": "1h", **migrate}
    return parse_config(raw, stack["config"])


@pytest.fixture
def lake(stack: dict[str, Any], s3_client: Any) -> Iterator[dict[str, Any]]:
    """A database under the /tpcds mount with a 4-partition table; d=1,2 are two hours old."""
    tag = uuid.uuid4().hex[:8]
    db = f"mig_{tag}"
    location = f"{stack['hdfs']}/warehouse/tpcds/{db}"
    fs = WebHdfs(stack["webhdfs"])
    old_ms = int((time.time() - 7200) * 1000)
    expected = {}
    for d in (1, 2, 3, 4):
        ids = list(range(d * 1000, d * 1000 + 50 * d))
        t = pa.table({"id": ids, "v": [f"row-{i}" for i in ids]}, schema=SCHEMA)
        for n in range(2):  # two files per partition
            path = hdfs_path(f"{location}/t/d={d}/part-{n}.parquet")
            fs.write(path, parquet_bytes(t.slice(n * 25 * d, 25 * d)))
            if d <= 2:
                fs.set_times(path, mtime_ms=old_ms)
        expected[d] = (len(ids), sum(ids))
    create_partitioned_table(stack["hms"], db, location, (1, 2, 3, 4))
    bucket = f"migrated-{tag}"
    s3_client.create_bucket(Bucket=bucket)
    state = open_state(config_for(stack, bucket).state)
    add_policy(state, f"p-{tag}", f"/tpcds/{db}/t", POLICY)
    yield {"db": db, "location": location, "bucket": bucket, "policy": f"p-{tag}", "expected": expected}
    remove_policy(state, f"p-{tag}")
    state.close()
    with connect(stack["hms"]) as c:
        c.drop_database(db, False, True)
    fs.delete(hdfs_path(location), recursive=True)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def rows(trino_query: Any, catalog: str, db: str) -> dict[int, tuple[int, int]]:
    got = trino_query("SELECT d, count(*), sum(id) FROM t GROUP BY d", catalog=catalog, schema=db)
    return {int(d): (int(n), int(s)) for d, n, s in got}


def paths(trino_query: Any, db: str) -> dict[int, set[str]]:
    got = trino_query('SELECT DISTINCT d, "$path" FROM t', catalog="onprem", schema=db)
    out: dict[int, set[str]] = {}
    for d, p in got:
        out.setdefault(int(d), set()).add(
            p.split("://", 1)[0] + "://" + p.split("://", 1)[1].split("/", 1)[0]
        )
    return out


@pytest.mark.compat  # discovery and write-back (alter_table, alter_partition) on each HMS
@pytest.mark.secure  # on the secure stack too: Kerberos to the HMS and WebHDFS
def test_policy_migrates_flips_and_removes(
    stack: dict[str, Any], lake: dict[str, Any], trino_query: Any, s3_client: Any
) -> None:
    db, bucket = lake["db"], lake["bucket"]
    assert rows(trino_query, "direct", db) == lake["expected"]
    assert rows(trino_query, "onprem", db) == lake["expected"]

    m = Migrator(config_for(stack, bucket))
    try:
        report = m.run_once(lake["policy"])
    finally:
        m.close()
    assert report.counts == {"flipped": 2, "skipped": 2}, report
    # the copies are in S3 under a per-attempt prefix; the flips are in the state DB
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 4 and all(k.startswith(f"{db}/t/d=") for k in keys)
    flips = {s: t for s, t in load_flips(stack_state(stack)).items() if db in s}
    assert sorted(flips) == [f"{lake['location']}/t/d=1", f"{lake['location']}/t/d=2"]
    # through the proxy, Trino now reads d=1,2 from S3 and the answers do not change
    flipped = {f"s3://{bucket}"}
    wait_for(lambda: paths(trino_query, db).get(1) == paths(trino_query, db).get(2) == flipped, "the proxy")
    p = paths(trino_query, db)
    assert p[2] == {f"s3://{bucket}"} and p[3] == {"s3://metaproxy"} and p[4] == {"s3://metaproxy"}
    assert rows(trino_query, "onprem", db) == lake["expected"]
    # the on-prem catalog itself was never changed
    assert rows(trino_query, "direct", db) == lake["expected"]
    fs = WebHdfs(stack["webhdfs"])
    assert fs.exists(hdfs_path(f"{lake['location']}/t/d=1/part-0.parquet"))  # grace period: 1h

    time.sleep(2.1)  # the shortest grace period: two proxy refresh intervals (1s each here)
    # REMOVE without write-back is held: HMS-direct clients still need the HDFS copy
    m = Migrator(config_for(stack, bucket, grace_period="0s"))
    try:
        assert m.run_once(lake["policy"]).counts == {"flipped": 2, "skipped": 2}
        held = [u for u in m.store.units(lake["policy"]) if u.state == "flipped"]
    finally:
        m.close()
    assert all("write_back_to_hms" in u.last_error for u in held)
    assert fs.exists(hdfs_path(f"{lake['location']}/t/d=1/part-0.parquet"))

    # with write-back the on-prem HMS gets the S3 location, then the HDFS copy goes
    m = Migrator(config_for(stack, bucket, grace_period="0s", write_back_to_hms=True))
    try:
        report = m.run_once(lake["policy"])
        status = m.status(lake["policy"])[lake["policy"]]
    finally:
        m.close()
    assert report.counts == {"removed": 2, "skipped": 2}
    assert not fs.exists(hdfs_path(f"{lake['location']}/t/d=1"))
    assert fs.exists(hdfs_path(f"{lake['location']}/t/d=3/part-0.parquet"))
    from metaproxy.hms import connect

    with connect(stack["hms"]) as c:
        assert c.get_partition_by_name(db, "t", "d=1").sd.location == flips[f"{lake['location']}/t/d=1"]
        assert c.get_partition_by_name(db, "t", "d=3").sd.location == f"{lake['location']}/t/d=3"
    # every client keeps its answers: through the proxy, and straight from the on-prem HMS
    assert rows(trino_query, "onprem", db) == lake["expected"]
    assert rows(trino_query, "direct", db) == lake["expected"]
    assert status["states"] == {"removed": 2, "skipped": 2}
    assert status["copied_bytes"] == status["bytes"] > 0
    assert "olderThan" in status["last_error"]


def test_unused_for_follows_reads_through_the_gateway(
    stack: dict[str, Any], lake: dict[str, Any], s3_client: Any
) -> None:
    import boto3
    from botocore.config import Config as BotoConfig

    db, bucket = lake["db"], lake["bucket"]
    gateway = boto3.client(
        "s3",
        endpoint_url=stack["gateway"],
        aws_access_key_id=stack["gateway_access_key"],
        aws_secret_access_key=stack["gateway_secret_key"],
        region_name=stack["s3_region"],
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    gateway.get_object(Bucket="metaproxy", Key=f"tpcds/{db}/t/d=1/part-0.parquet")["Body"].read()
    state = open_state(stack_state(stack))
    name = lake["policy"] + "-unused"
    add_policy(state, name, f"/tpcds/{db}/t", "ufsMigrate(olderThan(1m) & unusedFor(1h), UFS[s3]:STORE)")
    m = Migrator(config_for(stack, bucket))
    try:
        wait_for(
            lambda: m.last_read(f"{lake['location']}/t/d=1") is not None, "the gateway to record the read"
        )
        assert m.last_read(f"{lake['location']}/t/d=2") is None
        report = m.run_once(name)
        units = {u.part: u for u in m.store.units(name)}
    finally:
        m.close()
        remove_policy(state, name)
        state.close()
    assert report.counts == {"flipped": 1, "skipped": 3}
    assert units["d=2"].state == "flipped"
    assert units["d=1"].state == "skipped" and "unusedFor" in units["d=1"].last_error


def stack_state(stack: dict[str, Any]) -> str:
    return config_for(stack, "x").state


# "any:N": killed just before the Nth step of the run (the run takes N-1 steps). A unit takes
# 12 steps (start_attempt, per file copy/copied/verify, verified, flip, write_back, removing,
# removed), so these 14 runs stop at 14 different places of the two units' 24; each is killed.
CRASH_POINTS = ["any:2"] * 8 + ["any:3"] * 6


def test_kill_9_at_many_points_keeps_the_invariants(
    stack: dict[str, Any], lake: dict[str, Any], tmp_path: Path, s3_client: Any, trino_query: Any
) -> None:
    """Each run is killed (SIGKILL) at the Nth time it reaches a step; after each, the state
    must hold: nothing flipped without all files verified and present, no source removed
    before its flip, no byte counted twice. A last clean run finishes the job."""
    db, bucket = lake["db"], lake["bucket"]
    raw = tomllib.loads(Path(stack["config"]).read_text())
    raw["migrate"] = {"target": f"s3://{bucket}/", "grace_period": "0s", "write_back_to_hms": True}
    conf = tmp_path / "metaproxy.toml"
    conf.write_text(_toml(raw))
    fs = WebHdfs(stack["webhdfs"])
    crashes = 0
    for point in CRASH_POINTS:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "metaproxy",
                "--config",
                str(conf),
                "migrate",
                "once",
                "--policy",
                lake["policy"],
            ],
            env={**os.environ, "METAPROXY_CRASH_AT": point},
            capture_output=True,
            timeout=300,
        )
        crashes += r.returncode == -9
        check_invariants(stack, lake, s3_client, fs)
    assert crashes >= 10, f"only {crashes} runs were killed"
    command = [sys.executable, "-m", "metaproxy", "--config", str(conf), "migrate", "once"]
    for _ in range(2):  # finish; the second run comes after the shortest grace period
        r = subprocess.run([*command, "--policy", lake["policy"]], capture_output=True, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        time.sleep(2.5)
    check_invariants(stack, lake, s3_client, fs)
    with journal(stack) as store:
        units = {u.part: u for u in store.units(lake["policy"])}
    assert units["d=1"].state == units["d=2"].state == "removed"
    assert rows(trino_query, "onprem", db) == lake["expected"]
    assert rows(trino_query, "direct", db) == lake["expected"]


def check_invariants(stack: dict[str, Any], lake: dict[str, Any], s3_client: Any, fs: WebHdfs) -> None:
    with journal(stack) as store:
        flips = load_flips(stack_state(stack))
        for u in store.units(lake["policy"]):
            files = store.files(u.id, u.attempt)
            assert u.copied_bytes <= u.bytes, u  # never double-counted
            flipped = u.source in flips
            if flipped:  # invariant: a flipped unit has every file verified and present
                assert flips[u.source] == u.dest
                assert files and all(f.state == "verified" for f in files), u
                bucket, prefix = u.dest.split("://", 1)[1].split("/", 1)
                for f in files:
                    head = s3_client.head_object(Bucket=bucket, Key=f"{prefix}/{f.rel}")
                    assert head["ContentLength"] == f.length
            else:  # invariant: an unflipped unit still has all its source bytes
                assert u.state not in ("flipped", "removing", "removed"), u
                for d in (1, 2):
                    if u.part == f"d={d}":
                        for n in range(2):
                            assert fs.exists(hdfs_path(f"{lake['location']}/t/d={d}/part-{n}.parquet"))
            if u.state in ("removing", "removed") or u.written_back:
                assert flipped, u


def _toml(raw: dict[str, Any]) -> str:
    """A small TOML writer for the config dict (strings, numbers, booleans, lists, tables)."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    out: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_aot(v)}
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{k}" if prefix else k, v)
            elif _is_aot(v):
                for item in v:
                    out.append(f"[[{prefix + '.' if prefix else ''}{k}]]")
                    out.extend(f"{ik} = {value(iv)}" for ik, iv in item.items())

    table("", raw)
    return "\n".join(out) + "\n"


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def test_copier_multipart_verify_and_a_changed_source(stack: dict[str, Any], s3_client: Any) -> None:
    import hashlib

    from metaproxy.migrate.copier import Copier, SourceChanged

    fs = WebHdfs(stack["webhdfs"])
    root = f"/tmp/copier-{uuid.uuid4().hex[:8]}"
    bucket = f"copier-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    data = os.urandom(11 * 1024 * 1024 + 17)
    fs.write(f"{root}/big.bin", data)
    copier = Copier(fs, S3Ufs(config_for(stack, bucket).s3), 5 * 1024 * 1024, 2)
    dest = f"s3://{bucket}/big.bin"
    try:
        sha = copier.copy(f"{stack['hdfs']}{root}/big.bin", len(data), dest)
        assert sha == hashlib.sha256(data).hexdigest()
        assert s3_client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data
        assert copier.verify(dest, len(data), sha) == ""
        # a copy that is not the source's bytes never verifies, whatever its length
        s3_client.put_object(Bucket=bucket, Key="big.bin", Body=bytes(len(data)))
        assert "differs" in copier.verify(dest, len(data), sha)
        assert "missing" in copier.verify(f"s3://{bucket}/nothing.bin", len(data), sha)
        # a source shorter than recorded is a changed source, and no upload is left behind
        with pytest.raises(SourceChanged):
            copier.copy(
                f"{stack['hdfs']}{root}/big.bin", len(data) + 5 * 1024 * 1024, f"s3://{bucket}/grown.bin"
            )
        assert not s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        # so is a source that is gone; a target bucket that is gone is not
        with pytest.raises(SourceChanged, match="gone"):
            copier.copy(f"{stack['hdfs']}{root}/gone.bin", 10, f"s3://{bucket}/gone.bin")
        with pytest.raises(UfsNotFound, match="NoSuchBucket"):
            copier.copy(f"{stack['hdfs']}{root}/big.bin", len(data), f"s3://no-{bucket}/big.bin")
    finally:
        copier.close()
        fs.delete(root, recursive=True)


@pytest.mark.compat  # discovery and write-back (alter_table, alter_partition) on each HMS
@pytest.mark.secure  # on the secure stack too: Kerberos to the HMS and WebHDFS
def test_queries_keep_their_answers_while_data_moves(
    stack: dict[str, Any], lake: dict[str, Any], trino_query: Any
) -> None:
    """A Trino query loop through the proxy runs during copy, flip, write-back and removal:
    every answer equals the one taken before the move, and none fails."""
    import threading

    db, bucket = lake["db"], lake["bucket"]
    expected = rows(trino_query, "direct", db)
    answers: list[Any] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                answers.append(rows(trino_query, "onprem", db))
            except Exception as e:  # recorded, and fails the test below
                answers.append(e)

    t = threading.Thread(target=loop)
    t.start()
    try:
        m = Migrator(config_for(stack, bucket, grace_period="0s", write_back_to_hms=True))
        try:
            first = m.run_once(lake["policy"])
            wait_for(lambda: len(answers) >= 3, "queries after the flips")
            time.sleep(2.1)  # the shortest grace period
            second = m.run_once(lake["policy"])
        finally:
            m.close()
        n = len(answers)
        wait_for(lambda: len(answers) >= n + 3, "queries after the removal")
    finally:
        stop.set()
        t.join(60)
    assert first.counts == {"flipped": 2, "skipped": 2}
    assert second.counts == {"removed": 2, "skipped": 2}
    failures = [a for a in answers if isinstance(a, Exception)]
    assert not failures, failures[:3]
    assert all(a == expected for a in answers), [a for a in answers if a != expected][:3]
    assert len(answers) >= 6
    p = paths(trino_query, db)
    assert p[1] == p[2] == {f"s3://{bucket}"}


def test_faults_are_recorded_retried_and_harm_nothing(
    stack: dict[str, Any], lake: dict[str, Any], s3_client: Any, trino_query: Any
) -> None:
    db, bucket = lake["db"], lake["bucket"]
    fs = WebHdfs(stack["webhdfs"])
    # a bucket that refuses the writes (it does not exist): both units fail with the reason
    m = Migrator(config_for(stack, f"no-such-bucket-{uuid.uuid4().hex[:6]}"))
    try:
        assert m.run_once(lake["policy"]).counts == {"failed": 2, "skipped": 2}
        failed = [u for u in m.store.units(lake["policy"]) if u.state == "failed"]
        assert all("NoSuchBucket" in u.last_error and u.next_try > time.time() for u in failed)
        # before the backoff ends, a pass leaves them alone
        assert m.run_once(lake["policy"]).counts == {"failed": 2, "skipped": 2}
        assert all(u.failures == 1 for u in m.store.units(lake["policy"]) if u.state == "failed")
    finally:
        m.close()
    assert not load_flips(stack_state(stack)).keys() & {
        f"{lake['location']}/t/d=1",
        f"{lake['location']}/t/d=2",
    }
    # the HMS unreachable: the pass says so and changes nothing
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    m = Migrator(config_for(stack, bucket), hms_uri=f"thrift://127.0.0.1:{dead}")
    try:
        report = m.run_once(lake["policy"])
    finally:
        m.close()
    assert report.counts == {} and "cannot list units through the HMS" in report.errors[0]
    # a file that changes under the copier: the attempt starts over and the new bytes move
    with journal(stack) as store:
        for u in store.units(lake["policy"]):
            if u.state == "failed":
                store.set_state(u.id, "failed", next_try=0)  # end the backoff now
    m = Migrator(config_for(stack, bucket, grace_period="1h"))
    victim = hdfs_path(f"{lake['location']}/t/d=1/part-1.parquet")
    changed = {"done": False}

    def before(step: str) -> None:
        if step == "copy" and not changed["done"]:
            changed["done"] = True
            data = fs.read(victim)
            fs.write(victim, data)  # the same bytes, but a new version of the file
            fs.set_times(victim, mtime_ms=int((time.time() - 7000) * 1000))

    m.before_step = before
    try:
        first = m.run_once(lake["policy"])
        if first.counts.get("failed"):
            # the rewrite raced a read of the same file (files copy side by side): that read
            # failed and was recorded; once the backoff is over, the unit goes on
            for u in m.store.units(lake["policy"]):
                if u.state == "failed":
                    assert u.last_error
                    MigrationStore(m.db).set_state(u.id, "failed", next_try=0)
            first = m.run_once(lake["policy"])
        assert first.counts == {"flipped": 2, "skipped": 2}
        units = {u.part: u for u in m.store.units(lake["policy"])}
        kinds = [e["kind"] for e in m.store.events(200) if e["unit_id"] == units["d=1"].id]
    finally:
        m.close()
    assert "source-changed" in kinds and units["d=1"].attempt >= 2
    wait_for(lambda: paths(trino_query, db).get(1) == {f"s3://{bucket}"}, "the proxy")
    assert rows(trino_query, "onprem", db) == lake["expected"]


@pytest.mark.parametrize("store", ["stack", "moto"])
def test_a_body_damaged_on_the_way_never_flips(
    stack: dict[str, Any], lake: dict[str, Any], store: str, request: pytest.FixtureRequest
) -> None:
    """A fault between the copier and S3: every upload's body has a byte flipped after its
    checksums were computed. The stack's S3 refuses such a body. moto, a store that checks
    nothing and keeps no checksum, stores it, and the verification that reads the copy back
    finds it differs. Either way no unit flips; once the fault is gone the units move, with the
    source's bytes."""
    import io
    from dataclasses import replace

    db, bucket = lake["db"], lake["bucket"]
    config = config_for(stack, bucket)
    if store == "moto":
        config = replace(config, s3=replace(config.s3, endpoint=request.getfixturevalue("moto_s3")))
        S3Ufs(config.s3).ensure_bucket(bucket)
    damaged: list[str] = []

    def damage(request: Any, **_: Any) -> None:
        body = request.body.getvalue() if isinstance(request.body, io.BytesIO) else request.body
        if isinstance(body, bytes) and body:
            request.body = bytes([body[0] ^ 0xFF]) + body[1:]
            damaged.append(request.url)

    m = Migrator(config)
    events = m.copier.target.client.meta.events
    try:
        for op in ("PutObject", "UploadPart"):
            events.register(f"before-send.s3.{op}", damage)
        assert m.run_once(lake["policy"]).counts == {"failed": 2, "skipped": 2}
        failed = [u for u in m.store.units(lake["policy"]) if u.state == "failed"]
        assert len(damaged) >= 2 and len(failed) == 2
        for u in failed:
            if store == "moto":
                assert "the copy read back differs from the source" in u.last_error, u.last_error
            else:  # over plain HTTP the signed payload hash refuses it, over HTTPS its SHA-256
                assert any(c in u.last_error for c in ("XAmzContentSHA256Mismatch", "BadDigest")), (
                    u.last_error
                )
        assert not {s for s in load_flips(stack_state(stack)) if db in s}
        # the fault is gone: after the backoff, the next pass moves both units
        for op in ("PutObject", "UploadPart"):
            events.unregister(f"before-send.s3.{op}", damage)
        for u in failed:
            MigrationStore(m.db).set_state(u.id, "failed", next_try=0)
        assert m.run_once(lake["policy"]).counts == {"flipped": 2, "skipped": 2}
        flips = {s: t for s, t in load_flips(stack_state(stack)).items() if db in s}
    finally:
        m.close()
    fs = WebHdfs(stack["webhdfs"])
    assert sorted(flips) == [f"{lake['location']}/t/d=1", f"{lake['location']}/t/d=2"]
    for source, target in flips.items():
        for f in fs.walk_files(hdfs_path(source)):
            copy = f"{target}/{f.path.rsplit('/', 1)[1]}"
            assert m.copier.target.read(copy) == fs.read(f.path)


def test_the_scheduled_loop_runs_each_policy_and_stops_on_sigterm(
    stack: dict[str, Any], lake: dict[str, Any], tmp_path: Path
) -> None:
    raw = tomllib.loads(Path(stack["config"]).read_text())
    raw["migrate"] = {"target": f"s3://{lake['bucket']}/", "interval": "1s", "grace_period": "1h"}
    conf = tmp_path / "metaproxy.toml"
    conf.write_text(_toml(raw))
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaproxy", "--config", str(conf), "migrate", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with journal(stack) as store:

            def states() -> dict[str, str]:
                return {u.part: u.state for u in store.units(lake["policy"])}

            wait_for(lambda: states().get("d=1") == states().get("d=2") == "flipped", "the loop to flip", 60)
            # the young partitions are judged after the old ones flipped: wait for their turn
            wait_for(lambda: states().get("d=3") == "skipped", "the loop to skip d=3", 30)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()[-2000:]

"""The migration loop: find units under each policy's path, and drive each one through
copy → verify → flip → (grace period) → remove, with every intent in SQLite first.

A *unit* is an unpartitioned table or one partition, found through the on-prem HMS (the
loop only reads it). Units move independently; one that fails records its error and is
retried with exponential backoff, without touching anything already migrated.

``Migrator.run_once()`` is one pass over every policy (what the APScheduler job calls, and
what tests call); ``Migrator.serve()`` schedules one job per policy.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metaproxy.config import Config
from metaproxy.migrate.copier import Copier, SourceChanged
from metaproxy.migrate.policy import PolicyExpr, ensure_tables, list_policies, parse_policy
from metaproxy.migrate.store import MigrationStore
from metaproxy.mounts import MountTable, load_mount_table, scheme_of
from metaproxy.state import open_state
from metaproxy.ufs import FileStatus, UfsNotFound
from metaproxy.ufs.s3 import s3_client
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path

log = logging.getLogger("metaproxy.migrate")

MAX_BACKOFF_S = 600.0
HELD_WITHOUT_WRITE_BACK = (
    "REMOVE held: the on-prem HMS still names the HDFS copy, which clients reading the HMS directly "
    "use; set [migrate] write_back_to_hms = true to give them the S3 location first"
)


@dataclass
class PassReport:
    """What one pass did, per state reached."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, state: str) -> None:
        self.counts[state] = self.counts.get(state, 0) + 1


@dataclass(frozen=True)
class UnitRef:
    db: str
    table: str
    part: str
    location: str


def crash_hook(spec: str) -> Any:
    """A ``before_step`` hook that kills this process (SIGKILL) at a step: ``"copy:3"`` — the
    third ``copy``; ``"any:5"`` — the fifth step of any kind. For crash tests
    (``METAPROXY_CRASH_AT``)."""
    import os
    import signal

    name, _, nth = spec.partition(":")
    want = int(nth or 1)
    seen = {"n": 0}

    def hook(step: str) -> None:
        if name in ("any", step):
            seen["n"] += 1
            if seen["n"] == want:
                log.warning("crash test: killing myself before step %s", step)
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


class Migrator:
    def __init__(self, config: Config, hms_uri: str | None = None) -> None:
        self.config = config
        self.hms_uri = hms_uri or config.metastore.uris[0]
        self.store = MigrationStore(config.state_path)
        self.webhdfs = WebHdfs(config.hdfs.webhdfs, config.hdfs.user, config.hdfs.timeout_s)
        self.s3 = s3_client(config.s3)
        m = config.migrate
        self.copier = Copier(self.webhdfs, self.s3, m.part_size, m.parallelism)
        self.target = m.target.rstrip("/")
        #: the proxy must have served the flip before a source goes: never less than two of its
        #: refresh intervals, whatever [migrate] grace_period says
        self.grace_s = max(m.grace_period_s, 2 * config.proxy.mount_refresh_s)
        self._mounts: MountTable | None = None
        self._pass_lock = threading.Lock()
        #: test hook: called with the name of each step just before it is taken
        self.before_step: Any = None

    def close(self) -> None:
        self.copier.pool.shutdown(wait=False)
        self.store.close()

    # -- policies and units ---------------------------------------------------------------

    def policies(self) -> list[tuple[dict[str, Any], PolicyExpr]]:
        db = open_state(self.config.state_path)
        try:
            ensure_tables(db)
            return [(p, parse_policy(p["expr"])) for p in list_policies(db) if p["enabled"]]
        finally:
            db.conn.close()

    def mounts(self) -> MountTable:
        db = open_state(self.config.state_path)
        try:
            return load_mount_table(self.config, db)
        finally:
            db.conn.close()

    def discover(self, path: str, mounts: MountTable) -> list[UnitRef]:
        """Units whose location lies under the logical ``path``, read from the on-prem HMS."""
        from hive_metastore import ttypes

        from metaproxy.hms import connect

        want = path.strip("/")
        out: list[UnitRef] = []

        def logical(location: str) -> str | None:
            key = mounts.gateway_key(location)
            return key

        def under(key: str) -> bool:
            return key == want or key.startswith(want + "/")

        with connect(self.hms_uri, self.config.metastore.call_timeout_s) as c:
            for dbname in c.get_all_databases():
                names = c.get_all_tables(dbname)
                for i in range(0, len(names), 100):
                    req = ttypes.GetTablesRequest(dbName=dbname, tblNames=names[i : i + 100])
                    for t in c.get_table_objects_by_name_req(req).tables:
                        loc = t.sd.location if t.sd else ""
                        key = logical(loc) if loc else None
                        if key is None:
                            continue
                        if not t.partitionKeys:
                            if under(key):
                                out.append(UnitRef(dbname, t.tableName, "", loc))
                            continue
                        if not (under(key) or want.startswith(key + "/")):
                            continue
                        for p in c.get_partitions(dbname, t.tableName, -1):
                            ploc = p.sd.location
                            pkey = logical(ploc)
                            if pkey is not None and under(pkey):
                                name = "/".join(
                                    f"{k.name}={v}" for k, v in zip(t.partitionKeys, p.values, strict=True)
                                )
                                out.append(UnitRef(dbname, t.tableName, name, ploc))
        return out

    def source_files(self, location: str) -> list[FileStatus]:
        base = hdfs_path(location).rstrip("/")
        try:
            files = self.webhdfs.walk_files(base)
        except UfsNotFound:
            return []
        return [FileStatus(f.path[len(base) + 1 :], f.length, f.mtime_ms) for f in files]

    # -- one pass ---------------------------------------------------------------------------

    def run_once(self, only: str | None = None, progress: Any = None) -> PassReport:
        """One pass over the policies (or only one); ``progress(policy, done, total)`` is called
        after each unit. Passes never overlap: the per-policy jobs take turns."""
        with self._pass_lock:
            return self._run_once(only, progress)

    def _run_once(self, only: str | None, progress: Any) -> PassReport:
        report = PassReport()
        mounts = self._mounts = self.mounts()
        self.cleanup_stale()
        for row, expr in self.policies():
            if only and row["name"] != only:
                continue
            try:
                refs = self.discover(row["path"], mounts)
            except Exception as e:
                msg = f"policy {row['name']}: cannot list units through the HMS: {e}"
                log.warning(msg)
                report.errors.append(msg)
                continue
            driven: set[int] = set()
            refs = [r for r in refs if scheme_of(r.location) == "hdfs"]  # only HDFS units move
            for i, ref in enumerate(refs, start=1):
                unit = self.store.upsert_unit(row["name"], ref.db, ref.table, ref.part, ref.location)
                driven.add(unit["id"])
                report.add(self.drive(unit, expr))
                if progress is not None:
                    progress(row["name"], i, len(refs))
            # units under way whose HMS location no longer shows them (written back to S3)
            for unit in self.store.units(row["name"]):
                if unit["id"] not in driven and unit["state"] in (
                    "copying",
                    "verified",
                    "flipped",
                    "removing",
                    "failed",
                ):
                    report.add(self.drive(unit, expr))
        return report

    def _step(self, name: str) -> None:
        if self.before_step is not None:
            self.before_step(name)

    def drive(self, unit: dict[str, Any], expr: PolicyExpr) -> str:
        """Move one unit as far as it can go now; returns the state it ends in."""
        uid = unit["id"]
        if unit["state"] == "failed":
            if time.time() < unit["next_try"]:
                return "failed"
            resume = unit["last_error"].split("|", 1)[0] or "qualified"
            if resume == "copying" and not unit["dest"].startswith(self.target + "/"):
                resume = "qualified"  # the target moved since: a new attempt goes there
            self.store.set_state(uid, resume, "retry")
            unit = self.store.unit(uid)
        try:
            while True:
                state = unit["state"]
                if state in ("qualified", "skipped"):
                    files = self.source_files(unit["source"])
                    why = self.unmet(expr, files, self.last_read(unit["source"]))
                    if why:
                        if state != "skipped" or unit["last_error"] != why:
                            self.store.set_state(uid, "skipped", last_error=why)
                        return "skipped"
                    self._step("start_attempt")
                    unit = self.store.start_attempt(
                        uid, self._dest_for, [(f.path, f.length, f.mtime_ms) for f in files]
                    )
                elif state == "copying":
                    if not self.copy_unit(unit):
                        unit = self.store.unit(uid)  # the source changed: a new attempt
                        continue
                    self._step("verified")
                    self.store.set_state(uid, "verified", last_error="")
                    unit = self.store.unit(uid)
                elif state == "verified":
                    self._step("flip")
                    self.store.flip(uid, unit["source"], unit["dest"])
                    unit = self.store.unit(uid)
                elif state == "flipped":
                    if self.config.migrate.write_back_to_hms and not unit["written_back"]:
                        self._step("write_back")
                        self.write_back(unit)
                        self.store.mark_written_back(uid, unit["dest"])
                        unit = self.store.unit(uid)
                    if scheme_of(unit["source"]) not in expr.remove:
                        return "flipped"
                    if not unit["written_back"]:
                        # clients that read the on-prem HMS directly would be left with
                        # locations whose files are gone: the source stays
                        self.store.note(uid, HELD_WITHOUT_WRITE_BACK)
                        return "flipped"
                    if time.time() - float(unit["flipped_at"]) < self.grace_s:
                        return "flipped"
                    problem = self.check_copy(unit)
                    if problem:
                        raise RuntimeError(f"not removing the source: {problem}")
                    self._step("removing")
                    self.store.set_state(uid, "removing", last_error="")
                    unit = self.store.unit(uid)
                elif state == "removing":
                    self.remove_source(unit)
                    self._step("removed")
                    self.store.set_state(uid, "removed", removed_at=time.time())
                    return "removed"
                else:
                    return str(state)
        except Exception as e:
            failures = int(unit["failures"]) + 1
            delay = min(MAX_BACKOFF_S, 2.0**failures)
            resume = self.store.unit(uid)["state"]
            msg = f"{type(e).__name__}: {e}"
            log.warning("unit %s (%s): %s; retrying in %.0fs", uid, unit["source"], msg, delay)
            self.store.set_state(
                uid, "failed", last_error=f"{resume}|{msg}", failures=failures, next_try=time.time() + delay
            )
            return "failed"

    def last_read(self, source: str) -> float | None:
        """When the gateway last served a file of this unit (None: never recorded)."""
        if self._mounts is None:
            self._mounts = self.mounts()
        key = self._mounts.gateway_key(source)
        if key is None:
            return None
        try:
            found = self.store.query(
                "SELECT max(last_read) AS t FROM reads WHERE key = ? OR substr(key, 1, ?) = ?",
                [key, len(key) + 1, key + "/"],
            )
            row = found[0] if found else None
        except Exception:  # no gateway has recorded a read yet
            return None
        return float(row["t"]) if row and row["t"] is not None else None

    @staticmethod
    def unmet(expr: PolicyExpr, files: list[FileStatus], last_read: float | None = None) -> str:
        """Why the unit does not qualify yet ('' if it does)."""
        if not files:
            return "no files"
        now_ms = time.time() * 1000
        for c in expr.conditions:
            if c.kind == "olderThan":
                newest = max(f.mtime_ms for f in files)
                if now_ms - newest < c.seconds * 1000:
                    return f"olderThan: a file was modified {(now_ms - newest) / 1000:.0f}s ago"
            elif c.kind == "unusedFor" and last_read is not None:
                idle = now_ms / 1000 - last_read
                if idle < c.seconds:
                    return f"unusedFor: read through the gateway {idle:.0f}s ago"
        return ""

    def _dest_for(self, unit: dict[str, Any], attempt: int) -> str:
        where = f"{unit['db']}/{unit['tbl']}" + (f"/{unit['part']}" if unit["part"] else "")
        return f"{self.target}/{where}/a{attempt}-{uuid.uuid4().hex[:8]}"

    def copy_unit(self, unit: dict[str, Any]) -> bool:
        """Copy and verify every file of the current attempt; False if the source changed (the
        unit goes back to ``qualified`` for a new attempt)."""
        uid, attempt = unit["id"], unit["attempt"]
        bucket, prefix = _split_s3(unit["dest"])

        def one(f: dict[str, Any]) -> None:
            key = f"{prefix}/{f['rel']}"
            source = f"{unit['source'].rstrip('/')}/{f['rel']}"
            sha = f["sha256"]
            if f["state"] == "planned":
                self._step("copy")
                sha = self.copier.copy(source, f["length"], bucket, key)
                self._step("copied")  # on S3, not yet recorded
                self.store.file_done(uid, attempt, f["rel"], "copied", sha, f["length"])
            if f["state"] in ("planned", "copied"):
                self._step("verify")
                problem = self.copier.verify(bucket, key, f["length"], sha)
                if problem:
                    raise RuntimeError(f"{key}: {problem}")
                self.store.file_done(uid, attempt, f["rel"], "verified", sha, f["length"])

        # files move side by side; the copier's part slots bound the memory they take together
        todo = [f for f in self.store.files(uid, attempt) if f["state"] != "verified"]
        with ThreadPoolExecutor(self.config.migrate.parallelism, thread_name_prefix="migrate-file") as pool:
            outcomes = [fut.exception() for fut in [pool.submit(one, f) for f in todo]]
        changed = [e for e in outcomes if isinstance(e, SourceChanged | UfsNotFound)]
        if changed:
            self.store.set_state(uid, "qualified", "source-changed", last_error=str(changed[0]))
            return False
        failed = [e for e in outcomes if e is not None]
        if failed:
            raise failed[0]
        # the source must still be what was copied: same files, same lengths and times
        now = {(s.path, s.length, s.mtime_ms) for s in self.source_files(unit["source"])}
        copied = {(f["rel"], f["length"], f["mtime_ms"]) for f in self.store.files(uid, attempt)}
        if now != copied:
            self.store.set_state(
                uid, "qualified", "source-changed", last_error="the source changed during the copy"
            )
            return False
        return True

    def write_back(self, unit: dict[str, Any]) -> None:
        """Give the on-prem HMS the unit's S3 location (only with write_back_to_hms)."""
        from hive_metastore import ttypes

        from metaproxy.hms import connect

        with connect(self.hms_uri, self.config.metastore.call_timeout_s) as c:
            if unit["part"]:
                p = c.get_partition_by_name(unit["db"], unit["tbl"], unit["part"])
                if p.sd.location.rstrip("/") != unit["source"].rstrip("/"):
                    if p.sd.location.rstrip("/") == unit["dest"].rstrip("/"):
                        return  # done before a crash
                    raise RuntimeError(f"the HMS location changed to {p.sd.location}; not writing back")
                p.sd.location = unit["dest"]
                c.alter_partition(unit["db"], unit["tbl"], p)
            else:
                req = ttypes.GetTablesRequest(dbName=unit["db"], tblNames=[unit["tbl"]])
                t = c.get_table_objects_by_name_req(req).tables[0]
                if t.sd.location.rstrip("/") == unit["dest"].rstrip("/"):
                    return
                if t.sd.location.rstrip("/") != unit["source"].rstrip("/"):
                    raise RuntimeError(f"the HMS location changed to {t.sd.location}; not writing back")
                t.sd.location = unit["dest"]
                c.alter_table(unit["db"], unit["tbl"], t)

    def check_copy(self, unit: dict[str, Any]) -> str:
        bucket, prefix = _split_s3(unit["dest"])
        for f in self.store.files(unit["id"], unit["attempt"]):
            if f["state"] != "verified":
                return f"{f['rel']} was never verified"
            import botocore.exceptions

            try:
                head = self.s3.head_object(Bucket=bucket, Key=f"{prefix}/{f['rel']}")
            except botocore.exceptions.ClientError:
                return f"the copy of {f['rel']} is gone"
            if int(head["ContentLength"]) != f["length"]:
                return f"the copy of {f['rel']} has the wrong length"
        return ""

    def remove_source(self, unit: dict[str, Any]) -> None:
        """Delete the unit's HDFS files (idempotent: a file already gone is fine)."""
        base = hdfs_path(unit["source"]).rstrip("/")
        for f in self.store.files(unit["id"], unit["attempt"]):
            self.webhdfs.delete(f"{base}/{f['rel']}")
        if self.webhdfs.exists(base) and not self.webhdfs.list(base):
            self.webhdfs.delete(base, recursive=False)

    def cleanup_stale(self) -> None:
        """Delete the objects of superseded attempts and abort multipart uploads left behind."""
        for a in self.store.stale_attempts():
            try:
                bucket, prefix = _split_s3(a["dest"])
                for page in self.s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix + "/"
                ):
                    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                    if keys:
                        self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                self.store.attempt_cleaned(a["unit_id"], a["attempt"])
                self.store.event(a["unit_id"], "cleaned", a["dest"])
            except Exception as e:
                code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
                if code == "NoSuchBucket":  # nothing was ever written there
                    self.store.attempt_cleaned(a["unit_id"], a["attempt"])
                    continue
                log.warning("could not clean %s: %s", a["dest"], e)
        try:
            bucket, prefix = _split_s3(self.target)
            current = self.store.current_dests()
            r = self.s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
            for up in r.get("Uploads", []):
                self.s3.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
                self.store.event(None, "aborted-upload", f"{up['Key']} ({len(current)} current attempts)")
        except Exception as e:
            log.debug("multipart sweep skipped: %s", e)

    # -- status -----------------------------------------------------------------------------

    def status(self, policy: str | None = None) -> dict[str, Any]:
        return policy_status(self.store, policy)

    # -- the scheduler ----------------------------------------------------------------------

    def serve(self, stop: Any) -> None:
        """One APScheduler job per policy, each a pass every ``[migrate] interval``, until
        ``stop`` (a threading.Event) is set. Policies added or removed meanwhile get or lose
        their job within one interval."""
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler()
        every = self.config.migrate.interval_s

        def reconcile() -> None:
            try:
                names = {row["name"] for row, _ in self.policies()}
            except Exception as e:
                log.warning("could not read the policies: %s", e)
                return
            jobs = {j.id for j in sched.get_jobs() if j.id.startswith("policy:")}
            for name in names - {j.removeprefix("policy:") for j in jobs}:
                sched.add_job(
                    self.run_once,
                    "interval",
                    args=[name],
                    id=f"policy:{name}",
                    seconds=every,
                    max_instances=1,
                    coalesce=True,
                    next_run_time=datetime.now(),
                )
                log.info("policy %s: scheduled every %.0fs", name, every)
            for job in jobs:
                if job.removeprefix("policy:") not in names:
                    sched.remove_job(job)
                    log.info("policy %s: removed, its job stops", job.removeprefix("policy:"))

        sched.add_job(reconcile, "interval", id="reconcile", seconds=every, next_run_time=datetime.now())
        sched.start()
        try:
            stop.wait()
        finally:
            sched.shutdown(wait=True)


def policy_status(store: MigrationStore, policy: str | None = None) -> dict[str, Any]:
    """Units per state, bytes, throughput and the last error, per policy."""
    out: dict[str, Any] = {}
    for u in store.units(policy):
        p = out.setdefault(
            u["policy"], {"states": {}, "bytes": 0, "copied_bytes": 0, "last_error": "", "units": 0}
        )
        p["units"] += 1
        p["states"][u["state"]] = p["states"].get(u["state"], 0) + 1
        p["bytes"] += u["bytes"]
        p["copied_bytes"] += u["copied_bytes"]
        if u["last_error"] and u["state"] in ("failed", "skipped"):
            p["last_error"] = u["last_error"].split("|", 1)[-1]
    return out


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.rstrip("/")

"""The migration loop: find units under each policy's path, and drive each one through
copy → verify → flip → (grace period) → remove, with every intent in the state DB first.

A *unit* is an unpartitioned table or one partition, found through the on-prem HMS (the
loop only reads it). Units move independently; one that fails records its error and is
retried with exponential backoff, from the state it failed in, without touching anything
already migrated.

Several loops — on one machine or many, sharing a PostgreSQL state — may run the same
policies: each drives a unit only while it holds the unit's lease (see
:mod:`metaproxy.state.units`), renewed on every step and by a heartbeat while a copy runs, so
two loops never copy the same unit at once, and a loop that dies leaves a lease that expires
after ``[migrate] lease``; the next loop to come by finishes the unit by the same rules.

``Migrator.run_once()`` is one pass over every policy (what the APScheduler job calls, and
what tests call); ``Migrator.serve()`` schedules one job per policy.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metaproxy.config import Config
from metaproxy.migrate import catalog
from metaproxy.migrate.copier import Copier, SourceChanged
from metaproxy.migrate.distcp import DistCp, source_sha256
from metaproxy.migrate.policy import PolicyExpr, list_policies, parse_policy
from metaproxy.mounts import MountTable, load_mount_table
from metaproxy.security import security_for
from metaproxy.state import open_state
from metaproxy.state.cache import last_read
from metaproxy.state.policies import PolicyRow
from metaproxy.state.units import UNDER_WAY, FileState, LeaseLost, MigrationStore, Unit, UnitFile, UnitState
from metaproxy.ufs import FileStatus, UfsNotFound, UfsSet
from metaproxy.uri import scheme_of

log = logging.getLogger("metaproxy.migrate")

MAX_BACKOFF_S = 600.0
#: new attempts one pass may start for a unit whose source changes under each copy
MAX_ATTEMPTS_PER_PASS = 3
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
        name = str(state)  # a UnitState counts under its plain name
        self.counts[name] = self.counts.get(name, 0) + 1


def crash_hook(spec: str) -> Callable[[str], None]:
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


class _Changed(Exception):  # noqa: N818 - a state
    """The source changed under the copy: the unit goes back for a new attempt."""


class Migrator:
    def __init__(self, config: Config, hms_uri: str | None = None) -> None:
        self.config = config
        self.hms_uri = hms_uri or config.metastore.uris[0]
        self.db = open_state(config.state)
        #: this loop, as the leases it holds name it
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store = MigrationStore(self.db, self.owner, config.migrate.lease_s)
        #: the units this loop holds a lease on now (renewed by the heartbeat)
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, name="migrate-lease", daemon=True)
        self._heartbeat.start()
        security_for(config)  # Kerberos and TLS for its WebHDFS and HMS clients
        self.ufs = UfsSet(config.hdfs, config.s3)
        m = config.migrate
        self.copier = Copier(self.ufs, self.ufs.s3, m.part_size, m.parallelism)
        self.target = m.target.rstrip("/")
        #: the proxy must have served the flip before a source goes: never less than two of its
        #: refresh intervals, whatever [migrate] grace_period says
        self.grace_s = max(m.grace_period_s, 2 * config.proxy.mount_refresh_s)
        self._mounts: MountTable | None = None
        self._pass_lock = threading.Lock()
        #: test hook: called with the name of each step just before it is taken
        self.before_step: Callable[[str], None] | None = None

    def close(self) -> None:
        self._stop_heartbeat.set()
        self._heartbeat.join(5)
        self.copier.close()
        self.db.close()

    # -- leases -----------------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew the leases of the units being driven, three times per lease."""
        while not self._stop_heartbeat.wait(self.config.migrate.lease_s / 3):
            with self._held_lock:
                held = sorted(self._held)
            if not held:
                continue
            try:
                lost = self.store.renew(held)
            except Exception as e:  # the state unreachable: the steps themselves will fail
                log.warning("could not renew leases: %s", e)
                continue
            for uid in lost:
                log.warning("unit %s: lease lost to another migration loop", uid)

    @staticmethod
    def _gone(owner: str) -> bool:
        """True if ``owner`` was a loop on this machine whose process is gone (killed, say): its
        leases need not be waited out."""
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if not owner or host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def drive_claimed(self, unit: Unit, expr: PolicyExpr) -> str:
        """Drive a unit if this loop can claim its lease; "leased" when another loop holds it."""
        claimed = self.store.claim(unit.id, unit.owner if self._gone(unit.owner) else "")
        if claimed is None:
            return "leased"
        with self._held_lock:
            self._held.add(unit.id)
        try:
            return self.drive(claimed, expr)
        finally:
            with self._held_lock:
                self._held.discard(unit.id)
            try:
                self.store.release(unit.id)
            except Exception as e:  # it expires by itself
                log.warning("unit %s: could not release its lease: %s", unit.id, e)

    # -- policies and units ---------------------------------------------------------------

    def policies(self) -> list[tuple[PolicyRow, PolicyExpr]]:
        """The enabled migration policies (cacheLoad policies are the gateway's)."""
        parsed = [(p, parse_policy(p.expr)) for p in list_policies(self.db) if p.enabled]
        return [(p, e) for p, e in parsed if e.migrates]

    def mounts(self) -> MountTable:
        return load_mount_table(self.config, self.db)

    def source_files(self, location: str) -> list[FileStatus]:
        """The unit's files, paths relative to its location (none if it is gone)."""
        return self.ufs.list_files(location)

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
            if only and row.name != only:
                continue
            try:
                refs = catalog.discover(self.hms_uri, self.config.metastore.call_timeout_s, row.path, mounts)
            except Exception as e:
                msg = f"policy {row.name}: cannot list units through the HMS: {e}"
                log.warning(msg)
                report.errors.append(msg)
                continue
            driven: set[int] = set()
            refs = [r for r in refs if scheme_of(r.location) == "hdfs"]  # only HDFS units move
            for i, ref in enumerate(refs, start=1):
                unit = self.store.upsert_unit(row.name, ref.db, ref.table, ref.part, ref.location)
                driven.add(unit.id)
                report.add(self.drive_claimed(unit, expr))
                if progress is not None:
                    progress(row.name, i, len(refs))
            # units under way whose HMS location no longer shows them (written back to S3)
            for unit in self.store.units(row.name):
                if unit.id not in driven and unit.state in UNDER_WAY:
                    report.add(self.drive_claimed(unit, expr))
        return report

    def _step(self, name: str) -> None:
        if self.before_step is not None:
            self.before_step(name)

    def drive(self, unit: Unit, expr: PolicyExpr) -> str:
        """Move one unit as far as it can go now; returns the state it ends in."""
        if unit.state == UnitState.FAILED:
            if time.time() < unit.next_try:
                return UnitState.FAILED
            resume = unit.resume_state or UnitState.QUALIFIED
            if resume == UnitState.COPYING and not unit.dest.startswith(self.target + "/"):
                resume = UnitState.QUALIFIED  # the target moved since: a new attempt goes there
            unit = self.store.set_state(unit.id, resume, "retry", resume_state=None)
        try:
            attempts = unit.attempt
            while True:
                done, unit = self._advance(unit, expr)
                if done:
                    return unit.state
                if unit.attempt - attempts > MAX_ATTEMPTS_PER_PASS:
                    return unit.state  # a source that keeps changing: the next pass tries again
        except LeaseLost as e:
            # another loop took the unit over while this one stalled: it is that loop's now
            log.warning("unit %s (%s): %s; leaving it", unit.id, unit.source, e)
            return "leased"
        except Exception as e:
            failures = unit.failures + 1
            delay = min(MAX_BACKOFF_S, 2.0**failures)
            resume = self.store.unit(unit.id).state
            msg = f"{type(e).__name__}: {e}"
            log.warning("unit %s (%s): %s; retrying in %.0fs", unit.id, unit.source, msg, delay)
            try:
                self.store.set_state(
                    unit.id,
                    UnitState.FAILED,
                    last_error=msg,
                    resume_state=resume,
                    failures=failures,
                    next_try=time.time() + delay,
                )
            except LeaseLost as lost:
                log.warning("unit %s: %s; leaving it", unit.id, lost)
                return "leased"
            return UnitState.FAILED

    def _advance(self, unit: Unit, expr: PolicyExpr) -> tuple[bool, Unit]:
        """Take the next step of a unit: (whether it stops here for now, the unit after it)."""
        uid, state = unit.id, unit.state
        if state in (UnitState.QUALIFIED, UnitState.SKIPPED):
            files = self.source_files(unit.source)
            why = self.unmet(expr, files, self.last_read(unit.source))
            if why:
                if state != UnitState.SKIPPED or unit.last_error != why:
                    unit = self.store.set_state(uid, UnitState.SKIPPED, last_error=why)
                return True, unit
            self._step("start_attempt")
            return False, self.store.start_attempt(
                uid, self._dest_for, [(f.path, f.length, f.mtime_ms) for f in files]
            )
        if state == UnitState.COPYING:
            try:
                self.copy_unit(unit)
            except _Changed as e:
                return False, self.store.set_state(
                    uid, UnitState.QUALIFIED, "source-changed", last_error=str(e)
                )
            self._step("verified")
            return False, self.store.set_state(uid, UnitState.VERIFIED, last_error="")
        if state == UnitState.VERIFIED:
            self._step("flip")
            return False, self.store.flip(uid, unit.source, unit.dest)
        if state == UnitState.FLIPPED:
            return self._after_flip(unit, expr)
        if state == UnitState.REMOVING:
            self.remove_source(unit)
            self._step("removed")
            return True, self.store.set_state(uid, UnitState.REMOVED, removed_at=time.time())
        return True, unit

    def _after_flip(self, unit: Unit, expr: PolicyExpr) -> tuple[bool, Unit]:
        """Write back (if configured), then remove the source once that is safe."""
        if self.config.migrate.write_back_to_hms and not unit.written_back:
            self._step("write_back")
            catalog.write_back(self.hms_uri, self.config.metastore.call_timeout_s, unit)
            unit = self.store.mark_written_back(unit.id, unit.dest)
        if scheme_of(unit.source) not in expr.remove:
            return True, unit
        if not unit.written_back:
            # clients that read the on-prem HMS directly would be left with locations whose
            # files are gone: the source stays
            self.store.note(unit.id, HELD_WITHOUT_WRITE_BACK)
            return True, self.store.unit(unit.id)
        if unit.flipped_at is None or time.time() - unit.flipped_at < self.grace_s:
            return True, unit
        problem = self.check_copy(unit)
        if problem:
            raise RuntimeError(f"not removing the source: {problem}")
        self._step("removing")
        return False, self.store.set_state(unit.id, UnitState.REMOVING, last_error="")

    def last_read(self, source: str) -> float | None:
        """When the gateway last served a file of this unit (None: never recorded)."""
        if self._mounts is None:
            self._mounts = self.mounts()
        key = self._mounts.gateway_key(source)
        return None if key is None else last_read(self.db, key)

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

    def _dest_for(self, unit: Unit, attempt: int) -> str:
        where = f"{unit.db}/{unit.tbl}" + (f"/{unit.part}" if unit.part else "")
        return f"{self.target}/{where}/a{attempt}-{uuid.uuid4().hex[:8]}"

    @functools.cached_property
    def distcp(self) -> DistCp:
        """The DistCp runner (``[migrate] copier = "distcp"``), made when first needed."""
        return DistCp(self.config)

    def uses_distcp(self, files: list[UnitFile]) -> bool:
        """Whether DistCp copies this attempt's files: ``copier = "distcp"`` and the unit holds
        at least ``distcp_threshold`` bytes."""
        m = self.config.migrate
        return m.copier == "distcp" and sum(f.length for f in files) >= m.distcp_threshold

    def distcp_unit(self, unit: Unit) -> None:
        """Copy the attempt's planned files with one DistCp job, then hash each source file
        (streamed through the UFS) and record it copied with that SHA-256: the verification
        that follows in :meth:`copy_unit` checks DistCp's copy against it, as it checks the
        built-in copier's. Raises :class:`_Changed` if a source file is not what was planned."""
        todo = [f for f in self.store.files(unit.id, unit.attempt) if f.state == FileState.PLANNED]
        if not todo:
            return
        source, dest = unit.source.rstrip("/"), unit.dest.rstrip("/")
        self._step("distcp")
        run = self.distcp.copy(
            [(f"{source}/{f.rel}", f"{dest}/{f.rel}") for f in todo], f"unit-{unit.id}-a{unit.attempt}"
        )
        size = sum(f.length for f in todo)
        self.store.event(
            unit.id, "distcp", f"{len(todo)} files, {size} bytes in {run.seconds:.1f}s; log {run.log}"
        )

        def hashed(f: UnitFile) -> None:
            uri = f"{source}/{f.rel}"
            try:
                st = self.ufs.stat(uri)
            except UfsNotFound as e:
                raise SourceChanged(f"{uri}: the file is gone ({e})") from e
            if (st.length, st.mtime_ms) != (f.length, f.mtime_ms):
                raise SourceChanged(f"{uri}: changed since the attempt began")
            sha = source_sha256(self.ufs, uri, f.length)
            self.store.file_done(unit.id, unit.attempt, f.rel, FileState.COPIED, sha, f.length)

        self._each_file(hashed, todo, "migrate-hash")

    def _each_file(self, work: Callable[[UnitFile], None], files: list[UnitFile], name: str) -> None:
        """``work`` on every file, side by side (``[migrate] parallelism`` at once); raises
        :class:`_Changed` if a source changed under one, else the first other failure."""
        with ThreadPoolExecutor(self.config.migrate.parallelism, thread_name_prefix=name) as pool:
            outcomes = [fut.exception() for fut in [pool.submit(work, f) for f in files]]
        changed = [e for e in outcomes if isinstance(e, SourceChanged)]
        if changed:
            raise _Changed(str(changed[0]))
        failed = [e for e in outcomes if e is not None]
        if failed:
            raise failed[0]

    def copy_unit(self, unit: Unit) -> None:
        """Copy and verify every file of the current attempt; raises :class:`_Changed` if the
        source changed meanwhile (the unit then needs a new attempt)."""
        if self.uses_distcp(self.store.files(unit.id, unit.attempt)):
            self.distcp_unit(unit)  # the files are then copied: what follows verifies them

        def one(f: UnitFile) -> None:
            dest = f"{unit.dest.rstrip('/')}/{f.rel}"
            sha = f.sha256
            if f.state == FileState.PLANNED:
                self._step("copy")
                sha = self.copier.copy(f"{unit.source.rstrip('/')}/{f.rel}", f.length, dest)
                self._step("copied")  # on S3, not yet recorded
                self.store.file_done(unit.id, unit.attempt, f.rel, FileState.COPIED, sha, f.length)
            self._step("verify")
            problem = self.copier.verify(dest, f.length, sha)
            if problem:
                # what S3 holds is not what was read (damaged where nothing checked it, or gone
                # since): verifying it again would fail forever, so the next try copies again
                self.store.copy_again(unit.id, unit.attempt, f.rel, f.length, problem)
                raise RuntimeError(f"{dest}: {problem}")
            self.store.file_done(unit.id, unit.attempt, f.rel, FileState.VERIFIED, sha, f.length)

        # files move side by side; the copier's part slots bound the memory they take together
        todo = [f for f in self.store.files(unit.id, unit.attempt) if f.state != FileState.VERIFIED]
        self._each_file(one, todo, "migrate-file")
        # the source must still be what was copied: same files, same lengths and times
        now = {(s.path, s.length, s.mtime_ms) for s in self.source_files(unit.source)}
        copied = {(f.rel, f.length, f.mtime_ms) for f in self.store.files(unit.id, unit.attempt)}
        if now != copied:
            raise _Changed("the source changed during the copy")

    def check_copy(self, unit: Unit) -> str:
        """'' if every file of the unit's copy is verified and still there, else what is wrong."""
        for f in self.store.files(unit.id, unit.attempt):
            if f.state != FileState.VERIFIED:
                return f"{f.rel} was never verified"
            try:
                st = self.ufs.stat(f"{unit.dest.rstrip('/')}/{f.rel}")
            except UfsNotFound:
                return f"the copy of {f.rel} is gone"
            if st.length != f.length:
                return f"the copy of {f.rel} has the wrong length"
        return ""

    def remove_source(self, unit: Unit) -> None:
        """Delete the unit's source files (idempotent: a file already gone is fine)."""
        base = unit.source.rstrip("/")
        for f in self.store.files(unit.id, unit.attempt):
            self.ufs.delete(f"{base}/{f.rel}")
        if self.ufs.exists(base) and not self.ufs.list(base):
            self.ufs.delete(base)

    def cleanup_stale(self) -> None:
        """Delete the objects of superseded attempts and abort multipart uploads left behind."""
        for a in self.store.stale_attempts():
            try:
                self.ufs.s3.delete_prefix(a["dest"])
            except UfsNotFound:
                pass  # its bucket never existed: nothing was ever written there
            except Exception as e:
                log.warning("could not clean %s: %s", a["dest"], e)
                continue
            self.store.attempt_cleaned(a["unit_id"], a["attempt"])
            self.store.event(a["unit_id"], "cleaned", a["dest"])
        try:
            # uploads under a unit another loop drives now are that loop's copies in flight
            busy = tuple(d.rstrip("/") + "/" for d in self.store.leased_dests(self.owner))
            for up in self.ufs.s3.uploads(self.target):
                if up.uri.startswith(busy):
                    continue
                self.ufs.s3.abort_upload(up)
                self.store.event(None, "aborted-upload", up.uri)
        except Exception as e:
            log.debug("multipart sweep skipped: %s", e)

    # -- status -----------------------------------------------------------------------------

    def status(self, policy: str | None = None) -> dict[str, Any]:
        return policy_status(self.store, policy)

    # -- the scheduler ----------------------------------------------------------------------

    def serve(self, stop: threading.Event) -> None:
        """One APScheduler job per policy, each a pass every ``[migrate] interval``, until
        ``stop`` is set. Policies added or removed meanwhile get or lose their job within one
        interval."""
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler()
        every = self.config.migrate.interval_s

        def reconcile() -> None:
            try:
                names = {row.name for row, _ in self.policies()}
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
            u.policy, {"states": {}, "bytes": 0, "copied_bytes": 0, "last_error": "", "units": 0}
        )
        p["units"] += 1
        p["states"][u.state.value] = p["states"].get(u.state.value, 0) + 1
        p["bytes"] += u.bytes
        p["copied_bytes"] += u.copied_bytes
        if u.last_error and u.state in (UnitState.FAILED, UnitState.SKIPPED):
            p["last_error"] = u.last_error
    return out

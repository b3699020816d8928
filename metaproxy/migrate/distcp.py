"""Hadoop DistCp as the migration loop's copier for big units (``[migrate] copier = "distcp"``).

The loop hands :meth:`DistCp.copy` the files of a unit's current attempt (source URI → S3 URI
under the attempt's fresh prefix); it runs DistCp, waits for it and returns the job's log. What
DistCp copied is *not* trusted: the loop then hashes every source file itself and verifies each
copy as it does the built-in copier's, before any flip.

DistCp runs in one of two ways:

* ``distcp_hadoop``: an edge node's ``hadoop`` command (``hadoop distcp …``), with the cluster's
  own ``HADOOP_CONF_DIR``, jars and Kerberos ticket;
* ``distcp_classpath``: ``java`` with a folder of Hadoop jars (the local stack's ``lib/distcp``)
  and ``org.apache.hadoop.tools.DistCp``.

The job runs on MapReduce's local job runner (inside the one JVM: the same map task code a
YARN cluster runs, but one map task, so the files go one after another) unless
``distcp_framework = "yarn"``, where ``-m`` maps copy side by side. S3A gets ``[s3]``'s endpoint, region,
addressing style and keys from a generic ``-conf`` file in a private folder (0700, the file
0600), removed when the job ends, so no secret is on a command line; the job's output is
written to a log file with the secrets masked.

DistCp's path rules, and what is done about them: with a file listing (``-f``) each listed file
lands at ``<target>/<its name>``, except that a listing of a single file whose target does not
exist is copied *as* the target. So the files are grouped by their folder (one job per folder,
nearly always one per unit), and a group of one file is given its full destination as target.
``-overwrite`` (every listed file is written again: only files not yet copied are listed, and
``-update`` would skip a same-length copy that failed verification, forever); ``-direct`` (S3
objects appear whole on close, so no temporary file and no rename, which S3 does by copying);
no CRC comparison happens (S3A reports no checksum to compare with; metaproxy's SHA-256
verification replaces it).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import posixpath
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape

from metaproxy.config import Config
from metaproxy.jvm import HADOOP_JAVA17_OPENS
from metaproxy.migrate.copier import SourceChanged
from metaproxy.ufs import Ufs

DISTCP_CLASS = "org.apache.hadoop.tools.DistCp"
#: Hadoop on Java 17+ reaches into these packages (ignored by older JVMs)
JAVA_OPENS = ["-XX:+IgnoreUnrecognizedVMOptions", *HADOOP_JAVA17_OPENS]
#: lines of a failed job's log quoted in its error (stack frames left out)
TAIL_LINES = 12

_LOG4J = """\
log4j.rootLogger=INFO,stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.metrics2=WARN
"""


#: numbers the jobs of this process (their log files' names)
_RUNS = itertools.count(1)


class DistCpError(RuntimeError):
    """A DistCp job that could not start, failed, or ran past its timeout."""


@dataclass(frozen=True)
class DistCpRun:
    """One finished job: its log, how long it ran, and the files it was given."""

    log: Path
    seconds: float
    files: int


def s3a(uri: str) -> str:
    """``s3://bucket/key`` as Hadoop's S3A spells it (``s3a://bucket/key``)."""
    return "s3a://" + uri.split("://", 1)[1] if uri.startswith("s3://") else uri


def groups(files: Sequence[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """``(source, dest)`` pairs as DistCp jobs: ``(sources, target)``, one per pair of folders.

    A listed file lands at ``target/<its name>``, so a group's files share a source and a
    destination folder and keep their names; a group of one file gets its full destination as
    target (DistCp copies a lone file *as* a target that does not exist yet).
    """
    by_dir: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for src, dst in files:
        sdir, sname = posixpath.split(src.rstrip("/"))
        ddir, dname = posixpath.split(dst.rstrip("/"))
        key = (sdir, ddir) if sname == dname else (src, dst)  # a renamed file goes alone
        by_dir.setdefault(key, []).append((src, dst))
    out: list[tuple[list[str], str]] = []
    for (_, ddir), pairs in by_dir.items():
        if len(pairs) == 1:
            out.append(([pairs[0][0]], pairs[0][1]))
        else:
            out.append(([s for s, _ in pairs], ddir))
    return out


def split_options(options: Sequence[str]) -> tuple[list[str], list[str]]:
    """``[migrate] distcp_options`` as (Hadoop's generic ``-D`` properties, DistCp's options):
    the generic ones must come first on the command line, or DistCp takes them for paths."""
    generic: list[str] = []
    own: list[str] = []
    it = iter(options)
    for opt in it:
        if opt == "-D":
            generic += [opt, next(it, "")]
        elif opt.startswith("-D"):
            generic.append(opt)
        else:
            own.append(opt)
    return generic, own


def _site_xml(props: dict[str, str]) -> str:
    body = "\n".join(
        f"  <property><name>{escape(k)}</name><value>{escape(v)}</value></property>" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}\n</configuration>\n'


def _listing_line(uri: str) -> str:
    if "\n" in uri or "\r" in uri:
        raise DistCpError(f"a path with a line break cannot go in a DistCp listing: {uri!r}")
    return uri


class DistCp:
    """Runs DistCp jobs as ``[migrate]`` configures them (see the module's docstring)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.m = config.migrate
        self.log_dir = Path(self.m.distcp_log_dir)
        #: the running job's process, so a caller can see or stop it (tests kill it)
        self.proc: subprocess.Popen[bytes] | None = None

    # -- what runs -------------------------------------------------------------------------

    def properties(self, work: Path) -> dict[str, str]:
        """The Hadoop configuration given to the job (``-conf``): S3A as ``[s3]`` says, the
        framework, and, for the local runner, its folders and parallelism. Holds the S3 keys."""
        s3, m = self.config.s3, self.m
        props = {
            "mapreduce.framework.name": m.distcp_framework,
            "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
            "fs.s3a.endpoint.region": s3.region,
            "fs.s3a.path.style.access": "true" if s3.path_style else "false",
            "fs.s3a.multipart.size": str(m.part_size),
            "fs.s3a.etag.checksum.enabled": "false",
            # the keys stay out of the job history and the configuration pages of a cluster
            "mapreduce.job.redacted-properties": "fs.s3a.access.key,fs.s3a.secret.key,fs.s3a.session.token",
        }
        if s3.endpoint:
            props["fs.s3a.endpoint"] = s3.endpoint
            props["fs.s3a.connection.ssl.enabled"] = "true" if s3.endpoint.startswith("https") else "false"
        if s3.access_key and s3.secret_key:
            props["fs.s3a.aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            props["fs.s3a.access.key"] = s3.access_key
            props["fs.s3a.secret.key"] = s3.secret_key
        if m.distcp_framework == "local":
            props.update(
                {
                    "hadoop.tmp.dir": str(work / "tmp"),
                    "mapreduce.jobtracker.staging.root.dir": str(work / "staging"),
                    "mapreduce.cluster.local.dir": str(work / "local"),
                    # the local runner runs one map task (its client sets one, whatever -m
                    # says), so files go one after another: S3A uploads each one's parts
                    # side by side, as many as the built-in copier has in flight
                    "fs.s3a.fast.upload.active.blocks": str(max(1, m.parallelism)),
                }
            )
        return props

    def command(self, work: Path) -> list[str]:
        """The command that starts DistCp, before its arguments."""
        m = self.m
        if m.distcp_hadoop:
            hadoop = shutil.which(m.distcp_hadoop)
            if not hadoop:
                raise DistCpError(f"[migrate] distcp_hadoop: no command {m.distcp_hadoop!r} on the PATH")
            return [hadoop, "distcp"]
        java = m.distcp_java or (
            str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
        )
        if not shutil.which(java):
            raise DistCpError(f"no java command {java!r} for [migrate] distcp_classpath (set distcp_java)")
        jars = Path(m.distcp_classpath)
        if not any(jars.glob("hadoop-distcp-*.jar")):
            raise DistCpError(f"[migrate] distcp_classpath: {jars} holds no hadoop-distcp jar")
        (work / "log4j.properties").write_text(_LOG4J)
        classpath = [f"{jars}/*"]
        if os.environ.get("HADOOP_CONF_DIR"):  # a cluster's *-site.xml, for yarn
            classpath.insert(0, os.environ["HADOOP_CONF_DIR"])
        return [
            java,
            "-Xmx1g",
            *JAVA_OPENS,
            f"-Dlog4j.configuration=file:{work / 'log4j.properties'}",
            f"-Dhadoop.log.dir={work}",
            "-cp",
            ":".join(classpath),
            DISTCP_CLASS,
        ]

    def arguments(self, sources: list[str], target: str, listing: Path, conf: Path) -> list[str]:
        """DistCp's arguments for one job: generic options first, then DistCp's own."""
        generic, options = split_options(self.m.distcp_options)
        maps = [] if "-m" in options else ["-m", str(max(1, min(self.m.parallelism, len(sources))))]
        listing.write_text("".join(_listing_line(s) + "\n" for s in sources))
        return [
            "-conf",
            str(conf),
            *generic,  # Hadoop's generic options (-D) only count before DistCp's own
            "-overwrite",
            "-direct",
            *maps,
            *options,
            "-f",
            listing.as_uri(),
            s3a(target),
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        hdfs = self.config.hdfs
        if hdfs.auth == "simple" and hdfs.user:
            env.setdefault("HADOOP_USER_NAME", hdfs.user)  # as WebHDFS's user.name=
        env.setdefault("HADOOP_ROOT_LOGGER", "INFO,console")  # the hadoop command's own logging
        return env

    # -- running ---------------------------------------------------------------------------

    def copy(self, files: Sequence[tuple[str, str]], name: str) -> DistCpRun:
        """Copy each ``(source URI, S3 URI)``; one DistCp job per folder (see :func:`groups`).
        Returns the run (its log holds every job's output); raises :class:`DistCpError` with
        the log's tail when a job fails or times out."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_RUNS)}"
        log = self.log_dir / f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', name)}-{stamp}.log"
        t0 = time.monotonic()
        deadline = t0 + self.m.distcp_timeout_s
        work = Path(tempfile.mkdtemp(prefix="metaproxy-distcp-"))  # 0700: the keys are in it
        try:
            conf = work / "s3a-site.xml"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(_site_xml(self.properties(work)))
            command = self.command(work)
            with open(log, "ab") as out:
                for i, (sources, target) in enumerate(groups(files)):
                    argv = [*command, *self.arguments(sources, target, work / f"listing-{i}.txt", conf)]
                    self._run(argv, out, log, deadline)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return DistCpRun(log, time.monotonic() - t0, len(files))

    def _secrets(self) -> list[str]:
        s3 = self.config.s3
        return [s for s in (s3.secret_key, s3.access_key) if s]

    def _run(self, argv: list[str], out: BinaryIO, log: Path, deadline: float) -> None:
        secrets = self._secrets()

        def masked(text: str) -> str:
            for s in secrets:
                text = text.replace(s, "***")
            return text

        out.write(f"$ {masked(' '.join(argv))}\n".encode())  # (no secret is in it: they are in -conf)
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self.environment(),
            start_new_session=True,  # its own process group: a timeout stops all of it
        )
        self.proc = proc

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(masked(line.decode("utf-8", "replace")).encode())
                out.flush()

        reader = threading.Thread(target=pump, name="distcp-log", daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            reader.join(10)
            raise DistCpError(
                f"DistCp ran past [migrate] distcp_timeout ({self.m.distcp_timeout_s:.0f}s) and was "
                f"stopped; log {log}:\n{tail(log)}"
            ) from None
        finally:
            self.proc = None
        reader.join(30)
        if rc != 0:
            how = f"was killed by signal {-rc}" if rc < 0 else f"failed (exit {rc})"
            raise DistCpError(f"DistCp {how}; log {log}:\n{tail(log)}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the job's process group, SIGKILL if it is still there after a while."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The last lines of a job's log that say something (stack frames left out), indented."""
    try:
        with open(log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"  (the log cannot be read: {e})"
    # what the job said, without its command line and stack frames
    kept = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("at ", "...", "$ "))]
    return "\n".join("  " + ln for ln in kept[-lines:]) or "  (the job wrote nothing)"


def source_sha256(ufs: Ufs, uri: str, length: int, chunk: int = 1024 * 1024) -> str:
    """The hex SHA-256 of a source file's ``length`` bytes, read as a stream (what the built-in
    copier computes while it copies); :class:`SourceChanged` if the file is shorter."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(chunk))
    done = 0
    stream = ufs.open_read(uri, 0, length)
    try:
        while done < length:
            n = stream.readinto(view[: min(chunk, length - done)])
            if not n:
                break
            digest.update(view[:n])
            done += n
    finally:
        stream.close()
    if done != length:
        raise SourceChanged(f"{uri}: the file is short ({done} of {length} bytes)")
    return digest.hexdigest()

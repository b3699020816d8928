"""Start, check and stop the components of the local stack (see the package docstring).

Each component is a :class:`Component`: how to write its config, the command that runs it, and
a readiness check that proves it works (a WebHDFS round trip, a Thrift call, an S3 bucket
listing, Trino's ``/v1/info`` saying it has started) — an open port is not enough.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

#: ``$METAPROXY_STACK_DIR``, else ``.stack`` under the current working directory
STACK_DIR = Path(os.environ.get("METAPROXY_STACK_DIR") or Path.cwd() / ".stack").resolve()
JAVA_POM = Path(__file__).resolve().parent / "java" / "pom.xml"
HOST = "127.0.0.1"
#: with the WAN link, the on-prem services are reached from the cloud side on this address,
#: each through a relay of the link on the same port number
WAN_HOST = "127.0.0.2"
S3_ACCESS_KEY = "metaproxy-local"
S3_SECRET_KEY = "metaproxy-local-secret"
S3_REGION = "us-east-1"
GATEWAY_ACCESS_KEY = "metaproxy-gateway"
GATEWAY_SECRET_KEY = "metaproxy-gateway-secret"
TRINO_VERSION = "476"


class StackError(RuntimeError):
    """A component could not be installed or did not become ready."""


def endpoints_path() -> Path:
    return STACK_DIR / "endpoints.json"


def load_endpoints() -> dict[str, Any] | None:
    """The running stack's endpoints, or None when no stack was started."""
    try:
        return dict(json.loads(endpoints_path().read_text()))
    except (OSError, ValueError):
        return None


def _log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a component's log, indented, for an error that must explain itself."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    | {line}" for line in tail)


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports are chosen when the stack starts but bound up to a minute later; a port from the
    ephemeral range could meanwhile become the local end of some process's outgoing
    connection (Trino and the DataNode open many), and the late listener would fail to bind.
    """
    lo, _ = _ephemeral_range()
    first = 20000 if lo > 21000 else 1024
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(first, lo) if lo - first > 100 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if not port_open(port, timeout=0.2):
            _handed_out.add(port)
            return port
    raise StackError(f"no free port on {HOST} below {lo}")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def java_home(min_version: int, max_version: int = 99) -> str:
    """A JDK home whose feature version is in ``[min_version, max_version]``.

    ``$JAVA_HOME`` is tried first, then /usr/lib/jvm. Hadoop and Hive need 17–21 (they call
    ``Subject.getSubject``, which Java 24 removed); Trino 476 needs 24 or newer.
    """
    candidates = []
    for env in ("METAPROXY_TRINO_JAVA_HOME" if min_version >= 24 else "METAPROXY_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates.extend(sorted(jvm.iterdir(), reverse=True))
    for home in candidates:
        release = home / "release"
        if not (home / "bin" / "java").exists() or not release.exists():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                feature = line.split("=", 1)[1].strip('"').split(".")[0]
                if feature.isdigit() and min_version <= int(feature) <= max_version:
                    return str(home)
    raise StackError(f"no JDK {min_version}-{max_version} found (set JAVA_HOME or METAPROXY_TRINO_JAVA_HOME)")


JAVA17_OPENS = [
    f"--add-opens=java.base/{p}=ALL-UNNAMED"
    for p in (
        "java.lang",
        "java.lang.reflect",
        "java.util",
        "java.util.concurrent",
        "java.net",
        "java.nio",
        "java.io",
        "sun.nio.ch",
        "sun.security.action",
    )
]


# --------------------------------------------------------------------------------------------
# installation


def install_java() -> Path:
    """Lay out the Java components under .stack/lib (Maven resolves into ~/.m2 once per machine).

    A stamp holding the pom files' hash makes this a no-op when nothing changed.
    """
    lib = STACK_DIR / "lib"
    digest = hashlib.sha256()
    for pom in sorted(JAVA_POM.parent.rglob("pom.xml")):
        digest.update(pom.read_bytes())
    stamp = lib / ".stamp"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return lib
    mvn = shutil.which("mvn")
    if not mvn:
        raise StackError("Maven (mvn) is needed to fetch the Java components; install it first")
    shutil.rmtree(lib, ignore_errors=True)
    lib.mkdir(parents=True)
    print("stack: resolving Java components with Maven (first run downloads ~1 GB)...", flush=True)
    proc = subprocess.run(
        [mvn, "-B", "-q", "-f", str(JAVA_POM), "package", f"-Dstack.lib={lib}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise StackError(f"mvn failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    dist = lib / "dist" / f"trino-server-{TRINO_VERSION}.tar.gz"
    prefix = f"trino-server-{TRINO_VERSION}"
    _unpack_trino(dist, lib / "trino", [f"{prefix}/lib/", f"{prefix}/bin/", f"{prefix}/plugin/hive/"])
    dist.unlink()
    stamp.write_text(digest.hexdigest())
    return lib


def _unpack_trino(dist: Path, dest: Path, prefixes: list[str]) -> None:
    """Unpack the members under ``prefixes`` and the files their hard links point at.

    The server tarball stores each jar once and hard-links the copies in other plugins, so the
    Hive plugin's jars may be links into plugins that are not unpacked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dist, "r:gz") as tar:
        members = tar.getmembers()
    wanted = [m for m in members if any(m.name.startswith(p) or m.name + "/" == p for p in prefixes)]
    targets = {m.linkname for m in wanted if m.islnk()}
    chosen = {m.name for m in wanted} | targets
    with tarfile.open(dist, "r:gz") as tar:
        tar.extractall(dest, members=[m for m in tar if m.name in chosen], filter="tar")
    # the link targets' own plugin folders hold partial plugins now: drop them (the hard-linked
    # copies under the wanted prefixes keep the data)
    root = dest / prefixes[0].split("/", 1)[0] / "plugin"
    keep = {p.rstrip("/").split("/")[-1] for p in prefixes if "/plugin/" in p}
    for plugin in root.iterdir():
        if plugin.name not in keep:
            shutil.rmtree(plugin)


# --------------------------------------------------------------------------------------------
# components


@dataclass
class Component:
    """One process of the stack."""

    name: str
    #: writes config files, returns (argv, env)
    prepare: Callable[[Stack], tuple[list[str], dict[str, str]]]
    #: True once the component really works
    ready: Callable[[Stack], bool]
    timeout_s: float = 180.0
    after: tuple[str, ...] = ()


@dataclass
class Stack:
    """The local stack: ports, directories and processes."""

    dir: Path = STACK_DIR
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    #: the simulated WAN link between the cloud side and the on-prem side, e.g.
    #: ``{"rtt_ms": 30, "mbit": 200}``; None: no link (the default stack)
    wan: dict[str, float] | None = None

    @property
    def onprem_host(self) -> str:
        """The address the cloud side (Trino, proxy, gateway) uses for HDFS and the HMS."""
        return WAN_HOST if self.wan is not None else HOST

    def components(self) -> list[Component]:
        return [c for c in COMPONENTS if c.name != "wan" or self.wan is not None]

    # -- paths ----------------------------------------------------------------------------

    @property
    def lib(self) -> Path:
        return self.dir / "lib"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def conf(self) -> Path:
        return self.dir / "conf"

    def port(self, name: str) -> int:
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]

    # -- endpoints ------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Any]:
        ep: dict[str, Any] = {
            "hms": f"thrift://{HOST}:{self.port('hms')}",
            "hdfs": f"hdfs://{HOST}:{self.port('hdfs_rpc')}",
            "webhdfs": f"http://{HOST}:{self.port('hdfs_http')}",
            "s3": f"http://{HOST}:{self.port('s3')}",
            "trino": f"http://{HOST}:{self.port('trino')}",
            "proxy": f"thrift://{HOST}:{self.port('proxy')}",
            "proxy_onprem": f"thrift://{HOST}:{self.port('proxy_onprem')}",
            "proxy_passthrough": f"thrift://{HOST}:{self.port('proxy_passthrough')}",
            "admin": f"http://{HOST}:{self.port('proxy_admin')}",
            "gateway": f"http://{HOST}:{self.port('gateway')}",
            "gateway_admin": f"http://{HOST}:{self.port('gateway_admin')}",
            "config": str(self.conf / "metaproxy.toml"),
            "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY,
            "s3_region": S3_REGION,
            "gateway_access_key": GATEWAY_ACCESS_KEY,
            "gateway_secret_key": GATEWAY_SECRET_KEY,
            "pids": dict(self.pids),
            "ports": dict(self.ports),
            "started_at": time.time(),
        }
        if self.wan is not None:
            h = WAN_HOST
            ep["wan"] = {
                **self.wan,
                "host": h,
                "control": f"http://{HOST}:{self.port('wan_control')}/link",
                "hms": f"thrift://{h}:{self.port('hms')}",
                "hdfs": f"hdfs://{h}:{self.port('hdfs_rpc')}",
                "webhdfs": f"http://{h}:{self.port('hdfs_http')}",
            }
        return ep

    # -- lifecycle ------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True if a stack described by endpoints.json is up and every component answers."""
        ep = load_endpoints()
        if not ep:
            return False
        if ("wan" in ep) != (self.wan is not None):
            return False  # the running stack has (or lacks) the WAN link: not the one wanted
        self.ports = dict(ep.get("ports", {}))
        self.pids = {k: int(v) for k, v in ep.get("pids", {}).items()}
        if any(c.name not in self.pids for c in self.components()):
            return False  # started by an older version of this launcher, or partially
        if not all(pid_alive(p) for p in self.pids.values()):
            return False
        return all(c.ready(self) for c in self.components())

    def up(self, components: list[str] | None = None) -> dict[str, Any]:
        """Start the stack, or reuse the running one. Returns the endpoints."""
        if self.is_running():
            print("stack: already running, reusing it", flush=True)
            ep = load_endpoints()
            assert ep is not None
            return ep
        self.down(quiet=True)
        t0 = time.monotonic()
        install_java()
        t_install = time.monotonic() - t0
        for d in (self.logs, self.data, self.conf, self.dir / "pids"):
            d.mkdir(parents=True, exist_ok=True)
        wanted = [c for c in self.components() if components is None or c.name in components]
        started: dict[str, float] = {}
        pending = list(wanted)
        ready: set[str] = set()
        try:
            while pending or len(ready) < len(started):
                for comp in list(pending):
                    if all(dep in ready or dep not in {c.name for c in wanted} for dep in comp.after):
                        self._spawn(comp)
                        started[comp.name] = time.monotonic()
                        pending.remove(comp)
                for comp in wanted:
                    if comp.name in started and comp.name not in ready:
                        if comp.ready(self):
                            ready.add(comp.name)
                            print(
                                f"stack: {comp.name} ready in {time.monotonic() - started[comp.name]:.1f}s",
                                flush=True,
                            )
                        elif not pid_alive(self.pids[comp.name]):
                            raise StackError(
                                f"{comp.name} exited during start; see {self._log(comp.name)}"
                                + _log_tail(self._log(comp.name))
                            )
                        elif time.monotonic() - started[comp.name] > comp.timeout_s:
                            raise StackError(
                                f"{comp.name} not ready after {comp.timeout_s:.0f}s; see {self._log(comp.name)}"
                                + _log_tail(self._log(comp.name))
                            )
                time.sleep(0.5)
        except BaseException:
            self.down(quiet=True)
            raise
        ep = self.endpoints()
        ep["start_seconds"] = {"install": round(t_install, 1), "total": round(time.monotonic() - t0, 1)}
        endpoints_path().write_text(json.dumps(ep, indent=2, sort_keys=True))
        print(f"stack: up in {time.monotonic() - t0:.1f}s — {endpoints_path()}", flush=True)
        return ep

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _spawn(self, comp: Component) -> None:
        argv, env = comp.prepare(self)
        log = open(self._log(comp.name), "ab")  # noqa: SIM115 - the child owns it from here
        full_env = {**os.environ, **env}

        def limits() -> None:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(self.dir),
            start_new_session=True,
            preexec_fn=limits,
        )
        log.close()
        self.pids[comp.name] = proc.pid
        (self.dir / "pids" / f"{comp.name}.pid").write_text(str(proc.pid))

    def down(self, quiet: bool = False) -> None:
        """Stop every component by its pid (SIGTERM, then SIGKILL), newest first."""
        pid_dir = self.dir / "pids"
        pids: dict[str, int] = {}
        if pid_dir.is_dir():
            for f in pid_dir.glob("*.pid"):
                with contextlib.suppress(ValueError, OSError):
                    pids[f.stem] = int(f.read_text().strip())
        order = [c.name for c in reversed(COMPONENTS)] + sorted(pids)
        seen = set()
        for name in order:
            if name in seen or name not in pids:
                continue
            seen.add(name)
            pid = pids[name]
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 20
                while pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if pid_alive(pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                if not quiet:
                    print(f"stack: stopped {name} (pid {pid})", flush=True)
            (pid_dir / f"{name}.pid").unlink(missing_ok=True)
        endpoints_path().unlink(missing_ok=True)
        self.pids.clear()
        # a stopped stack's data is not reused: the next start formats HDFS and the HMS afresh
        shutil.rmtree(self.data, ignore_errors=True)

    def status(self) -> dict[str, bool]:
        ep = load_endpoints() or {}
        self.ports = dict(ep.get("ports", {}))
        self.pids = {k: int(v) for k, v in ep.get("pids", {}).items()}
        if "wan" in ep:
            self.wan = {k: ep["wan"][k] for k in ("rtt_ms", "mbit")}
        out = {}
        for c in self.components():
            pid = self.pids.get(c.name)
            out[c.name] = bool(pid and pid_alive(pid) and c.ready(self))
        return out


# --------------------------------------------------------------------------------------------
# HDFS


def _site_xml(props: dict[str, str]) -> str:
    body = "\n".join(
        f"  <property><name>{k}</name><value>{_xml_escape(v)}</value></property>" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}\n</configuration>\n'


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _hadoop_conf(st: Stack) -> Path:
    """core-site.xml and hdfs-site.xml for the NameNode and DataNode (loopback only)."""
    conf = st.conf / "hdfs"
    for webapp in ("hdfs", "datanode", "secondary", "static"):
        # the daemons' HTTP servers want these folders on the classpath; WebHDFS itself is
        # registered in code, and Maven Central's hadoop-hdfs jar ships no web UI
        (conf / "webapps" / webapp).mkdir(parents=True, exist_ok=True)
    data = st.data / "hdfs"
    (conf / "core-site.xml").write_text(
        _site_xml({"fs.defaultFS": f"hdfs://{HOST}:{st.port('hdfs_rpc')}", "hadoop.tmp.dir": str(data)})
    )
    (conf / "hdfs-site.xml").write_text(
        _site_xml(
            {
                "dfs.namenode.name.dir": str(data / "name"),
                "dfs.datanode.data.dir": str(data / "data"),
                "dfs.namenode.rpc-address": f"{HOST}:{st.port('hdfs_rpc')}",
                "dfs.namenode.http-address": f"{HOST}:{st.port('hdfs_http')}",
                "dfs.namenode.secondary.http-address": f"{HOST}:0",
                "dfs.datanode.address": f"{HOST}:{st.port('datanode')}",
                "dfs.datanode.http.address": f"{HOST}:{st.port('datanode_http')}",
                "dfs.datanode.ipc.address": f"{HOST}:{st.port('datanode_ipc')}",
                # the name clients that ask for it (Trino with the link) connect to
                "dfs.datanode.hostname": st.onprem_host,
                "dfs.replication": "1",
                "dfs.permissions.enabled": "false",
                "dfs.namenode.safemode.extension": "0",
                "dfs.webhdfs.enabled": "true",
            }
        )
    )
    return conf


def _hadoop_argv(st: Stack, conf: Path, main: str, *args: str) -> list[str]:
    java = Path(java_home(17, 21)) / "bin" / "java"
    return [str(java), "-Xmx512m", *JAVA17_OPENS, "-cp", f"{conf}:{st.lib / 'hms'}/*", main, *args]


def _prepare_namenode(st: Stack) -> tuple[list[str], dict[str, str]]:
    conf = _hadoop_conf(st)
    if not (st.data / "hdfs" / "name" / "current").exists():
        fmt = _hadoop_argv(
            st,
            conf,
            "org.apache.hadoop.hdfs.server.namenode.NameNode",
            "-format",
            "-force",
            "-nonInteractive",
        )
        with open(st.logs / "namenode-format.log", "wb") as log:
            if subprocess.run(fmt, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise StackError(f"formatting HDFS failed; see {st.logs / 'namenode-format.log'}")
    return _hadoop_argv(st, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"), {}


def _prepare_datanode(st: Stack) -> tuple[list[str], dict[str, str]]:
    return _hadoop_argv(st, _hadoop_conf(st), "org.apache.hadoop.hdfs.server.datanode.DataNode"), {}


def _namenode_ready(st: Stack) -> bool:
    try:
        r = requests.get(
            f"http://{HOST}:{st.port('hdfs_http')}/webhdfs/v1/?op=GETFILESTATUS&user.name=hdfs", timeout=2
        )
        return r.status_code == 200
    except requests.RequestException:
        return False


def _datanode_ready(st: Stack) -> bool:
    """A DataNode accepts a block: write a probe file through WebHDFS and read it back."""
    base = f"http://{HOST}:{st.port('hdfs_http')}/webhdfs/v1"
    try:
        r = requests.put(
            f"{base}/tmp/.metaproxy-probe?op=CREATE&overwrite=true&user.name=hdfs",
            allow_redirects=False,
            timeout=5,
        )
        if r.status_code != 307:
            return False
        r = requests.put(r.headers["Location"], data=b"ok", timeout=5)
        if r.status_code != 201:
            return False
        r = requests.get(f"{base}/tmp/.metaproxy-probe?op=OPEN&user.name=hdfs", timeout=5)
        return r.status_code == 200 and r.content == b"ok"
    except (requests.RequestException, KeyError):
        return False


# --------------------------------------------------------------------------------------------
# S3 (moto in server mode)


def _prepare_s3(st: Stack) -> tuple[list[str], dict[str, str]]:
    exe = Path(sys.executable).parent / "moto_server"
    argv = [str(exe) if exe.exists() else "moto_server", "-H", HOST, "-p", str(st.port("s3"))]
    return argv, {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}


def _s3_ready(st: Stack) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('s3')}/", timeout=2)
        return r.status_code == 200 and b"ListAllMyBucketsResult" in r.content
    except requests.RequestException:
        return False


# --------------------------------------------------------------------------------------------
# Hive Metastore


def _prepare_hms(st: Stack) -> tuple[list[str], dict[str, str]]:
    conf = st.conf / "hms"
    conf.mkdir(parents=True, exist_ok=True)
    hdfs = f"hdfs://{HOST}:{st.port('hdfs_rpc')}"
    s3 = f"http://{HOST}:{st.port('s3')}"
    s3a = {
        "fs.s3a.endpoint": s3,
        "fs.s3a.endpoint.region": S3_REGION,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.access.key": S3_ACCESS_KEY,
        "fs.s3a.secret.key": S3_SECRET_KEY,
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }
    (conf / "core-site.xml").write_text(_site_xml({"fs.defaultFS": hdfs, **s3a}))
    derby = st.data / "hms" / "metastore_db"
    derby.parent.mkdir(parents=True, exist_ok=True)
    (conf / "metastore-site.xml").write_text(
        _site_xml(
            {
                "metastore.thrift.port": str(st.port("hms")),
                "metastore.thrift.bind.host": HOST,
                "metastore.warehouse.dir": f"{hdfs}/warehouse",
                "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={derby};create=true",
                "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
                "datanucleus.schema.autoCreateAll": "true",
                "metastore.schema.verification": "false",
                "metastore.event.db.notification.api.auth": "false",
                "metastore.metrics.enabled": "false",
                "metastore.server.min.threads": "8",
                # no translation layer: clients get the locations that were stored, as from
                # a classic on-prem HMS (Hive 4 otherwise rewrites database locations)
                "metastore.metadata.transformer.class": " ",
            }
        )
    )
    java = Path(java_home(17, 21)) / "bin" / "java"
    argv = [
        str(java),
        "-Xmx1g",
        *JAVA17_OPENS,
        f"-Dderby.stream.error.file={st.logs / 'derby.log'}",
        "-cp",
        f"{conf}:{st.lib / 'hms'}/*",
        "org.apache.hadoop.hive.metastore.HiveMetaStore",
    ]
    return argv, {"HADOOP_USER_NAME": "hdfs"}


def _hms_ready(st: Stack) -> bool:
    if not port_open(st.port("hms")):
        return False
    try:
        from metaproxy.hms import connect

        with connect(f"thrift://{HOST}:{st.port('hms')}", timeout_s=10) as client:
            return "default" in client.get_all_databases()
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# Trino


def trino_catalog(hms_uri: str, st: Stack, extra: dict[str, str] | None = None) -> str:
    """A Hive catalog that reads HDFS itself and S3 from the local S3 server."""
    props = {
        "connector.name": "hive",
        "hive.metastore.uri": hms_uri,
        "hive.metastore.thrift.client.read-timeout": "60s",
        "fs.hadoop.enabled": "true",
        "fs.native-s3.enabled": "true",
        "s3.endpoint": f"http://{HOST}:{st.port('s3')}",
        "s3.region": S3_REGION,
        "s3.path-style-access": "true",
        "s3.aws-access-key": S3_ACCESS_KEY,
        "s3.aws-secret-key": S3_SECRET_KEY,
        "hive.non-managed-table-writes-enabled": "true",
        "hive.collect-column-statistics-on-write": "true",
        "hive.partition-statistics-sample-size": "1000",
        **(extra or {}),
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _prepare_trino(st: Stack) -> tuple[list[str], dict[str, str]]:
    home = st.lib / "trino" / f"trino-server-{TRINO_VERSION}"
    etc = st.conf / "trino"
    (etc / "catalog").mkdir(parents=True, exist_ok=True)
    port = st.port("trino")
    (etc / "node.properties").write_text(
        f"node.environment=metaproxy\nnode.id={uuid.uuid4()}\nnode.data-dir={st.data / 'trino'}\n"
    )
    (etc / "config.properties").write_text(
        "coordinator=true\n"
        "node-scheduler.include-coordinator=true\n"
        f"http-server.http.port={port}\n"
        f"discovery.uri=http://{HOST}:{port}\n"
        "query.max-memory=1GB\n"
        "query.max-memory-per-node=1GB\n"
        "task.concurrency=2\n"
    )
    (etc / "jvm.config").write_text(
        "\n".join(
            [
                "-server",
                "-Xmx2G",
                "-XX:+UseG1GC",
                "-XX:G1HeapRegionSize=32M",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-XX:+ExitOnOutOfMemoryError",
                "-XX:-OmitStackTraceInFastThrow",
                "-XX:ReservedCodeCacheSize=256M",
                "-XX:PerMethodRecompilationCutoff=10000",
                "-XX:PerBytecodeRecompilationCutoff=10000",
                "-Djdk.attach.allowAttachSelf=true",
                "-Djdk.nio.maxCachedBufferSize=2000000",
                "-Dfile.encoding=UTF-8",
                "-XX:+EnableDynamicAgentLoading",
                "-DHADOOP_USER_NAME=hdfs",
            ]
        )
        + "\n"
    )
    (etc / "log.properties").write_text("io.trino=INFO\n")
    hms = f"thrift://{st.onprem_host}:{st.port('hms')}"
    (etc / "catalog" / "direct.properties").write_text(trino_catalog(hms, st))
    if st.wan is not None:
        # across the link, HDFS clients connect to the DataNode by its name (the link's address)
        hdfs_site = etc / "hdfs-site.xml"
        hdfs_site.write_text(_site_xml({"dfs.client.use.datanode.hostname": "true"}))
        wan = {"hive.config.resources": str(hdfs_site)}
        (etc / "catalog" / "direct.properties").write_text(trino_catalog(hms, st, wan))
        # the peer to compare with: Trino's own file-system cache on local disk
        cache = {
            **wan,
            "fs.cache.enabled": "true",
            "fs.cache.directories": str(st.data / "trino-fs-cache"),
            "fs.cache.max-sizes": "16GB",
        }
        (etc / "catalog" / "direct_cache.properties").write_text(trino_catalog(hms, st, cache))
    # through metaproxy: `onprem` with the cloud profile (its gateway bucket goes to the cache
    # gateway through an S3 security mapping), `passthrough` rewriting nothing
    mapping = etc / "onprem-s3-mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "mappings": [
                    {
                        "prefix": "s3://metaproxy/",
                        "endpoint": f"http://{HOST}:{st.port('gateway')}",
                        "region": S3_REGION,
                        "accessKey": GATEWAY_ACCESS_KEY,
                        "secretKey": GATEWAY_SECRET_KEY,
                    },
                    {"useClusterDefault": True},
                ]
            },
            indent=2,
        )
    )
    (etc / "catalog" / "onprem.properties").write_text(
        trino_catalog(
            f"thrift://{HOST}:{st.port('proxy')}",
            st,
            {"s3.security-mapping.enabled": "true", "s3.security-mapping.config-file": str(mapping)},
        )
    )
    (etc / "catalog" / "passthrough.properties").write_text(
        trino_catalog(f"thrift://{HOST}:{st.port('proxy_passthrough')}", st)
    )
    jh = java_home(24)
    argv = [
        str(home / "bin" / "launcher"),
        "run",
        f"--etc-dir={etc}",
        f"--data-dir={st.data / 'trino'}",
        f"--server-log-file={st.logs / 'trino-server.log'}",
    ]
    return argv, {
        "JAVA_HOME": jh,
        "PATH": f"{jh}/bin:{os.environ.get('PATH', '')}",
        "HADOOP_USER_NAME": "hdfs",
    }


def _trino_ready(st: Stack) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('trino')}/v1/info", timeout=2)
        return r.status_code == 200 and r.json().get("starting") is False
    except (requests.RequestException, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# metaproxy's own services


def stack_config(st: Stack) -> Path:
    """The metaproxy config of the local stack (written at start; tests and the demo read it)."""
    onprem = st.onprem_host
    hdfs = f"hdfs://{onprem}:{st.port('hdfs_rpc')}"
    text = f"""# written by `metaproxy stack up` for the local stack
log_level = "INFO"

[state]
path = "{st.data / "metaproxy" / "state.db"}"

[metastore]
uris = ["thrift://{onprem}:{st.port("hms")}"]
allow_writes = true
writable_databases = ["scratch.*", "lake.*"]

[proxy]
admin_port = {st.port("proxy_admin")}
mount_refresh = "1s"
audit_log = "{st.logs / "proxy-audit.log"}"

[[proxy.listener]]
port = {st.port("proxy")}
profile = "cloud"

[[proxy.listener]]
port = {st.port("proxy_onprem")}
profile = "onprem"

[[proxy.listener]]
port = {st.port("proxy_passthrough")}
profile = "passthrough"

[gateway]
port = {st.port("gateway")}
endpoint = "http://{HOST}:{st.port("gateway")}"
bucket = "metaproxy"
access_key = "{GATEWAY_ACCESS_KEY}"
secret_key = "{GATEWAY_SECRET_KEY}"
block_size = "1MiB"
admin_port = {st.port("gateway_admin")}
pinned_max = "1GiB"
ttl_check_interval = "1s"
writable_mounts = ["/lake"]

[gateway.memory]
capacity = "512MiB"

[gateway.disk]
path = "{st.data / "metaproxy" / "cache"}"
capacity = "4GiB"

[hdfs]
namenode = "{hdfs}"
webhdfs = "http://{onprem}:{st.port("hdfs_http")}"

[s3]
endpoint = "http://{HOST}:{st.port("s3")}"
region = "{S3_REGION}"
access_key = "{S3_ACCESS_KEY}"
secret_key = "{S3_SECRET_KEY}"

[migrate]
target = "s3://metaproxy-migrated/"

[[mount]]
path = "/tpcds"
ufs = "{hdfs}/warehouse/tpcds"

[[mount]]
path = "/lake"
ufs = ["{hdfs}/warehouse/lake", "s3://metaproxy-lake/lake"]
read_priority = ["s3", "hdfs"]
create_target = "s3"
"""
    path = st.conf / "metaproxy.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _prepare_proxy(st: Stack) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "serve"], {}


def _prepare_gateway(st: Stack) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "gateway"], {}


def _gateway_ready(st: Stack) -> bool:
    """The gateway answers an unsigned request with S3's 403 AccessDenied."""
    try:
        r = requests.get(f"http://{HOST}:{st.port('gateway')}/metaproxy/", timeout=5)
        return r.status_code == 403 and b"AccessDenied" in r.content
    except requests.RequestException:
        return False


def _prepare_wan(st: Stack) -> tuple[list[str], dict[str, str]]:
    """The link's relays: each on-prem port, on the link's address, to the same port on loopback."""
    assert st.wan is not None
    argv = [
        sys.executable,
        "-m",
        "metaproxy_devstack.wanlink",
        "--rtt-ms",
        str(st.wan["rtt_ms"]),
        "--mbit",
        str(st.wan["mbit"]),
        "--control",
        f"{HOST}:{st.port('wan_control')}",
    ]
    for name in ("hdfs_rpc", "hdfs_http", "datanode", "datanode_http", "datanode_ipc", "hms"):
        argv += ["--relay", f"{WAN_HOST}:{st.port(name)}={HOST}:{st.port(name)}"]
    return argv, {}


def _wan_ready(st: Stack) -> bool:
    try:
        return requests.get(f"http://{HOST}:{st.port('wan_control')}/link", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _proxy_ready(st: Stack) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('proxy_admin')}/health", timeout=5)
        return r.status_code == 200 and r.json().get("ok") is True
    except (requests.RequestException, ValueError):
        return False


COMPONENTS: list[Component] = [
    # only with the WAN link (Stack.wan); components after it wait for it only then
    Component("wan", _prepare_wan, _wan_ready, timeout_s=30),
    Component("namenode", _prepare_namenode, _namenode_ready, timeout_s=120),
    Component("s3", _prepare_s3, _s3_ready, timeout_s=60),
    Component("trino", _prepare_trino, _trino_ready, timeout_s=300),
    Component("datanode", _prepare_datanode, _datanode_ready, timeout_s=120, after=("namenode",)),
    Component("hms", _prepare_hms, _hms_ready, timeout_s=180, after=("datanode", "s3")),
    Component("proxy", _prepare_proxy, _proxy_ready, timeout_s=60, after=("hms", "wan")),
    Component("gateway", _prepare_gateway, _gateway_ready, timeout_s=60, after=("datanode", "wan")),
]

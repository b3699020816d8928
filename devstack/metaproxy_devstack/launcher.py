"""Start, check and stop the components of the local stack (see the package docstring).

Each component is a row of :data:`COMPONENTS`: how to write its config and the command that
runs it (``prepare``), a readiness check that proves it works (``ready``: a WebHDFS round trip,
a Thrift call, an S3 bucket listing, Trino's ``/v1/info`` saying it has started — an open port
is not enough), and the components it waits for (``after``). The functions of each row live in
:mod:`metaproxy_devstack.components`; processes and ports in :mod:`metaproxy_devstack.procs`,
installing the Java parts in :mod:`metaproxy_devstack.install`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaproxy_devstack.common import (
    DEFAULT_HMS_VERSION,
    GATEWAY_ACCESS_KEY,
    GATEWAY_SECRET_KEY,
    HOST,
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    WAN_HOST,
    StackError,
    endpoints_path,
    load_endpoints,
    stack_dir,
)
from metaproxy_devstack.components.cluster import (
    balancer_ready,
    cluster_endpoints,
    component_name,
    is_gateway_part,
    node_ready,
    prepare_balancer,
    prepare_node,
)
from metaproxy_devstack.components.hdfs import (
    datanode_ready,
    namenode_ready,
    prepare_datanode,
    prepare_namenode,
)
from metaproxy_devstack.components.hms import LOOPBACK_ONLY, hms_ready, prepare_hms
from metaproxy_devstack.components.kdc import kdc_ready, prepare_kdc, secure_endpoints, use_stack_kerberos
from metaproxy_devstack.components.postgres import postgres_ready, prepare_postgres
from metaproxy_devstack.components.postgres import url as postgres_url
from metaproxy_devstack.components.s3 import prepare_s3, s3_ready
from metaproxy_devstack.components.services import gateway_ready, prepare_gateway, prepare_proxy, proxy_ready
from metaproxy_devstack.components.trino import (
    EXTRA_PROXIES,
    MAPPING_REFRESH_S,
    prepare_trino,
    trino_ready,
    write_gateway_mapping,
)
from metaproxy_devstack.components.wan import prepare_wan, wan_ready
from metaproxy_devstack.install import install_java
from metaproxy_devstack.layout import StackLayout
from metaproxy_devstack.procs import log_tail, pid_alive, spawn, stop_group

__all__ = ["COMPONENTS", "Component", "Stack", "StackError", "endpoints_path", "load_endpoints", "stack_dir"]


@dataclass
class Component:
    """One process of the stack."""

    name: str
    #: writes config files, returns (argv, env)
    prepare: Callable[[StackLayout], tuple[list[str], dict[str, str]]]
    #: True once the component really works
    ready: Callable[[StackLayout], bool]
    timeout_s: float = 180.0
    #: the components that must be ready before this one starts (when they are started at all)
    after: tuple[str, ...] = ()


@dataclass
class Stack(StackLayout):
    """The local stack: its layout, and starting, checking and stopping its processes."""

    def components(self) -> list[Component]:
        base = [
            c
            for c in COMPONENTS
            if (c.name != "wan" or self.wan is not None)
            and (c.name != "kdc" or self.secure)
            and (c.name != "postgres" or self.state_backend == "postgres")
        ]
        if self.nodes == 1:
            return base
        return [c for c in base if c.name != "gateway"] + cluster_components(self.nodes)

    # -- endpoints ------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Any]:
        ep: dict[str, Any] = {
            "hms": f"thrift://{HOST}:{self.port('hms')}",
            "hms_version": self.hms,
            "hdfs": f"hdfs://{HOST}:{self.port('hdfs_rpc')}",
            "webhdfs": f"http://{HOST}:{self.port('hdfs_http')}",
            "s3": f"http://{HOST}:{self.port('s3')}",
            "trino": f"http://{HOST}:{self.port('trino')}",
            "proxy": f"thrift://{HOST}:{self.port('proxy')}",
            "proxy_onprem": f"thrift://{HOST}:{self.port('proxy_onprem')}",
            "proxy_passthrough": f"thrift://{HOST}:{self.port('proxy_passthrough')}",
            "admin": f"http://{HOST}:{self.port('proxy_admin')}",
            # free for proxies of a test's own, which Trino's onprem_a and onprem_b query
            **{name: f"thrift://{HOST}:{self.port(name)}" for name in EXTRA_PROXIES},
            "config": str(self.conf / "metaproxy.toml"),
            **cluster_endpoints(self),
            "state": self.state_backend,
            "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY,
            "s3_region": S3_REGION,
            "gateway_access_key": GATEWAY_ACCESS_KEY,
            "gateway_secret_key": GATEWAY_SECRET_KEY,
            "pids": dict(self.pids),
            "ports": dict(self.ports),
            "started_at": time.time(),
        }
        if self.secure:
            ep.update(secure_endpoints(self))
        if self.state_backend == "postgres":
            ep["postgres"] = postgres_url(self.port("postgres"))
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

    def _adopt(self, ep: dict[str, Any]) -> None:
        """Take the ports and pids of the stack described by ``ep`` (and its HMS version, when
        none was asked for)."""
        self.ports = dict(ep.get("ports", {}))
        self.pids = {k: int(v) for k, v in ep.get("pids", {}).items()}
        if self.hms_version is None:
            self.hms_version = running_hms_version(ep)
        if self.gateways is None:
            self.gateways = int(ep.get("gateways", 1))
        self.secure = "secure" in ep
        if self.secure:
            use_stack_kerberos(self)
        if self.state is None:
            self.state = str(ep.get("state", "sqlite"))

    # -- lifecycle ------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True if a stack described by endpoints.json is up and every component answers."""
        ep = load_endpoints(self.dir)
        if not ep:
            return False
        if ("wan" in ep) != (self.wan is not None):
            return False  # the running stack has (or lacks) the WAN link: not the one wanted
        if self.hms_version not in (None, running_hms_version(ep)):
            return False  # another Hive Metastore version: not the one wanted
        if self.gateways not in (None, int(ep.get("gateways", 1))):
            return False  # another number of gateway nodes: resized by up()
        if ("secure" in ep) != self.secure:
            return False  # the running stack is (or is not) the secure one: not the one wanted
        if self.state not in (None, ep.get("state", "sqlite")):
            return False  # metaproxy keeps its state elsewhere: restated by up()
        self._adopt(ep)
        if any(c.name not in self.pids for c in self.components()):
            return False  # started by an older version of this launcher, or partially
        if not all(pid_alive(p) for p in self.pids.values()):
            return False
        return all(c.ready(self) for c in self.components())

    def up(self, components: list[str] | None = None) -> dict[str, Any]:
        """Start the stack, or reuse the running one. Returns the endpoints.

        A running stack of another kind (with or without the WAN link, another HMS version
        when one was asked for) is stopped and replaced.
        """
        if self.is_running():
            print(f"stack: already running (Hive Metastore {self.hms}), reusing it", flush=True)
            ep = load_endpoints(self.dir)
            assert ep is not None
            return ep
        if self._other_state_running():
            return self.restate()
        if self._other_size_running():
            if self.gateways is None:
                self.gateways = int((load_endpoints(self.dir) or {}).get("gateways", 1))
            return self.resize()
        if self.wan is not None and self.hms not in LOOPBACK_ONLY:
            raise StackError(
                f"the WAN link needs a Hive Metastore that listens on loopback only, and Hive "
                f"{self.hms} has no bind-host setting (it listens on every interface, so the link "
                f"cannot take its port on {WAN_HOST}): use Hive Metastore {'/'.join(LOOPBACK_ONLY)}"
            )
        if self.secure and (self.wan is not None or self.hms != "4.0"):
            raise StackError("the secure stack runs Hive Metastore 4.0 without the WAN link")
        self.hms_version = self.hms
        self.down(quiet=True)
        t0 = time.monotonic()
        install_java(self.dir)
        t_install = time.monotonic() - t0
        for d in (self.logs, self.data, self.conf, self.dir / "pids"):
            d.mkdir(parents=True, exist_ok=True)
        if self.secure:
            use_stack_kerberos(self)
        try:
            self._start([c for c in self.components() if components is None or c.name in components])
        except BaseException:
            self.down(quiet=True)
            raise
        ep = self.endpoints()
        ep["start_seconds"] = {"install": round(t_install, 1), "total": round(time.monotonic() - t0, 1)}
        path = endpoints_path(self.dir)
        path.write_text(json.dumps(ep, indent=2, sort_keys=True))
        kind = ", secure" if self.secure else ""
        print(
            f"stack: up in {time.monotonic() - t0:.1f}s (Hive Metastore {self.hms}{kind}) — {path}",
            flush=True,
        )
        return ep

    def _other_size_running(self) -> bool:
        """True if the stack wanted runs but for its gateways: another number of nodes, or a
        node or the balancer down. Then only the gateways are replaced."""
        ep = load_endpoints(self.dir)
        if not ep or ("wan" in ep) != (self.wan is not None):
            return False
        if self.hms_version not in (None, running_hms_version(ep)):
            return False
        running = Stack(dir=self.dir, wan=self.wan, hms_version=self.hms_version, gateways=None)
        running._adopt(ep)
        rest = [c for c in running.components() if not is_gateway_part(c.name)]
        return all(
            c.name in running.pids and pid_alive(running.pids[c.name]) and c.ready(running) for c in rest
        )

    def _other_state_running(self) -> bool:
        """True if the stack wanted runs but for where metaproxy keeps its state. Then only
        metaproxy's services (and PostgreSQL) are replaced."""
        ep = load_endpoints(self.dir)
        if not ep or self.state is None or ep.get("state", "sqlite") == self.state:
            return False
        if ("wan" in ep) != (self.wan is not None) or ("secure" in ep) != self.secure:
            return False
        if self.hms_version not in (None, running_hms_version(ep)):
            return False
        if self.gateways not in (None, int(ep.get("gateways", 1))):
            return False
        running = Stack(dir=self.dir, wan=self.wan, hms_version=self.hms_version, gateways=None, state=None)
        running._adopt(ep)
        rest = [c for c in running.components() if not _stateful(c.name)]
        return all(
            c.name in running.pids and pid_alive(running.pids[c.name]) and c.ready(running) for c in rest
        )

    def restate(self) -> dict[str, Any]:
        """Run metaproxy's services with the state backend wanted (``state``) on the running
        stack: the proxy, the gateway(s) and PostgreSQL stop, PostgreSQL starts when wanted,
        the services start again with the new config. Every other component keeps running."""
        t0 = time.monotonic()
        ep = load_endpoints(self.dir)
        assert ep is not None
        wanted = self.state
        old = Stack(dir=self.dir, wan=self.wan, hms_version=self.hms_version, gateways=None, state=None)
        old._adopt(ep)
        self.ports, self.pids = dict(old.ports), dict(old.pids)
        self.hms_version, self.gateways, self.state = old.hms_version, old.gateways, wanted
        for name in [n for n in self.pids if _stateful(n)]:
            stop_group(self.pids.pop(name))
            (self.dir / "pids" / f"{name}.pid").unlink(missing_ok=True)
        self._start([c for c in self.components() if _stateful(c.name)])
        out = self.endpoints()
        out["start_seconds"] = ep.get("start_seconds", {})
        endpoints_path(self.dir).write_text(json.dumps(out, indent=2, sort_keys=True))
        print(f"stack: metaproxy's state on {self.state_backend} in {time.monotonic() - t0:.1f}s", flush=True)
        return out

    def resize(self) -> dict[str, Any]:
        """Run ``gateways`` gateway nodes (and the balancer when more than one) on the running
        stack, leaving every other component as it runs: the old nodes and balancer stop, the
        new ones start, Trino's ``onprem`` mapping is pointed at the new endpoint (Trino re-reads
        it within ``MAPPING_REFRESH``). A node keeps its disk tier across a resize."""
        t0 = time.monotonic()
        ep = load_endpoints(self.dir)
        assert ep is not None
        old = Stack(dir=self.dir, wan=self.wan, hms_version=self.hms_version, gateways=None)
        old._adopt(ep)
        self.ports, self.pids = dict(old.ports), dict(old.pids)
        for name in [n for n in self.pids if is_gateway_part(n)]:
            stop_group(self.pids.pop(name))
            (self.dir / "pids" / f"{name}.pid").unlink(missing_ok=True)
        self._start([c for c in self.components() if is_gateway_part(c.name)])
        write_gateway_mapping(self)
        time.sleep(MAPPING_REFRESH_S + 1)  # Trino takes the new endpoint
        out = self.endpoints()
        out["start_seconds"] = ep.get("start_seconds", {})
        endpoints_path(self.dir).write_text(json.dumps(out, indent=2, sort_keys=True))
        print(f"stack: {self.nodes} gateway node(s) in {time.monotonic() - t0:.1f}s", flush=True)
        return out

    def stop_component(self, name: str) -> None:
        """Stop one component of the running stack (SIGTERM, then SIGKILL)."""
        pid = self.pids.pop(name, None)
        if pid is not None:
            stop_group(pid)
        (self.dir / "pids" / f"{name}.pid").unlink(missing_ok=True)

    def start_component(self, name: str) -> None:
        """Start one component of the running stack again and wait until it is ready."""
        self._start([c for c in self.components() if c.name == name])
        path = endpoints_path(self.dir)
        ep = load_endpoints(self.dir) or {}
        ep["pids"] = dict(self.pids)
        path.write_text(json.dumps(ep, indent=2, sort_keys=True))

    def _start(self, wanted: list[Component]) -> None:
        """Start each component once those it comes ``after`` are ready; wait until all are."""
        names = {c.name for c in wanted}
        started: dict[str, float] = {}
        pending = list(wanted)
        ready: set[str] = set()
        while pending or len(ready) < len(started):
            for comp in list(pending):
                if all(dep in ready or dep not in names for dep in comp.after):
                    self._spawn(comp)
                    started[comp.name] = time.monotonic()
                    pending.remove(comp)
            for comp in wanted:
                if comp.name in started and comp.name not in ready and self._ready(comp, started[comp.name]):
                    ready.add(comp.name)
            time.sleep(0.5)

    def _ready(self, comp: Component, since: float) -> bool:
        """True once ``comp`` (started at ``since``) is ready; StackError when it exited or is late."""
        if comp.ready(self):
            print(f"stack: {comp.name} ready in {time.monotonic() - since:.1f}s", flush=True)
            return True
        log = self._log(comp.name)
        if not pid_alive(self.pids[comp.name]):
            raise StackError(f"{comp.name} exited during start; see {log}" + log_tail(log))
        if time.monotonic() - since > comp.timeout_s:
            raise StackError(f"{comp.name} not ready after {comp.timeout_s:.0f}s; see {log}" + log_tail(log))
        return False

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _spawn(self, comp: Component) -> None:
        argv, env = comp.prepare(self)
        pid = spawn(argv, env, self._log(comp.name), cwd=self.dir)
        self.pids[comp.name] = pid
        (self.dir / "pids" / f"{comp.name}.pid").write_text(str(pid))

    def down(self, quiet: bool = False) -> None:
        """Stop every component by its pid (SIGTERM, then SIGKILL), newest first."""
        pid_dir = self.dir / "pids"
        pids: dict[str, int] = {}
        if pid_dir.is_dir():
            for f in pid_dir.glob("*.pid"):
                try:
                    pids[f.stem] = int(f.read_text().strip())
                except (ValueError, OSError):
                    continue
        for name in dict.fromkeys([c.name for c in reversed(COMPONENTS)] + sorted(pids)):
            if name not in pids:
                continue
            if stop_group(pids[name]) and not quiet:
                print(f"stack: stopped {name} (pid {pids[name]})", flush=True)
            (pid_dir / f"{name}.pid").unlink(missing_ok=True)
        endpoints_path(self.dir).unlink(missing_ok=True)
        self.pids.clear()
        # a stopped stack's data is not reused: the next start formats HDFS and the HMS afresh
        shutil.rmtree(self.data, ignore_errors=True)

    def status(self) -> dict[str, bool]:
        ep = load_endpoints(self.dir) or {}
        self._adopt(ep)
        self.secure = "secure" in ep
        if "wan" in ep:
            self.wan = {k: ep["wan"][k] for k in ("rtt_ms", "mbit")}
        out = {}
        for c in self.components():
            pid = self.pids.get(c.name)
            out[c.name] = bool(pid and pid_alive(pid) and c.ready(self))
        return out


def running_hms_version(ep: dict[str, Any]) -> str:
    """The HMS version of the stack ``ep`` describes (stacks started before there was a choice
    ran the default)."""
    return str(ep.get("hms_version", DEFAULT_HMS_VERSION))


#: the stack, one row per component: what prepares it, what proves it ready, what it waits for
COMPONENTS: list[Component] = [
    # only with the WAN link (Stack.wan); components after it wait for it only then
    Component("wan", prepare_wan, wan_ready, timeout_s=30),
    # only in the secure stack (Stack.secure): the realm, its keytabs and the CA come first
    Component("kdc", prepare_kdc, kdc_ready, timeout_s=30),
    Component("namenode", prepare_namenode, namenode_ready, timeout_s=120, after=("kdc",)),
    Component("s3", prepare_s3, s3_ready, timeout_s=60),
    Component("trino", prepare_trino, trino_ready, timeout_s=300, after=("kdc",)),
    Component("datanode", prepare_datanode, datanode_ready, timeout_s=120, after=("namenode",)),
    Component("hms", prepare_hms, hms_ready, timeout_s=180, after=("datanode", "s3")),
    # only with ``state="postgres"``: metaproxy's shared state
    Component("postgres", prepare_postgres, postgres_ready, timeout_s=60),
    Component("proxy", prepare_proxy, proxy_ready, timeout_s=60, after=("hms", "wan", "postgres")),
    Component("gateway", prepare_gateway, gateway_ready, timeout_s=60, after=("datanode", "wan", "postgres")),
]


def _stateful(component: str) -> bool:
    """True for the components a change of state backend replaces: PostgreSQL and metaproxy's
    services (the proxy, the gateway nodes, the balancer)."""
    return component in ("postgres", "proxy") or is_gateway_part(component)


def cluster_components(nodes: int) -> list[Component]:
    """The rows of a gateway cluster (``stack up --gateways N``, N > 1): each node, the first
    one in the ``gateway`` row's place, and the balancer once every node is ready."""
    after = ("datanode", "wan", "postgres")
    rows = [
        Component(component_name(i), prepare_node(i), node_ready(i), timeout_s=60, after=after)
        for i in range(1, nodes + 1)
    ]
    names = tuple(r.name for r in rows)
    return [*rows, Component("balancer", prepare_balancer, balancer_ready, timeout_s=60, after=names)]

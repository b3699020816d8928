"""A gateway cluster on the stack (``metaproxy stack up --gateways N``, N > 1): N gateway
nodes, each its own process with its own ports and tiers, and HAProxy in front of them hashing
each object's path to one node (see docs/cluster.md for the same setup in production).

Node 1 is the stack's ``gateway`` component, run as node ``g1``; nodes 2… are ``gateway2``…
HAProxy comes from the machine's packages (Debian's ``haproxy``, installed with ``apt-get``
when missing) and runs as a plain process of the stack with the config written here.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from metaproxy_devstack.common import HOST, StackError

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

#: how often HAProxy checks each node's /health, and after how many failures it takes it out
CHECK_INTERVAL = "1s"
CHECK_FALL = 2
#: a node that has sent nothing for this long is given up for this request, which is retried
#: on another node (a frozen node: its socket accepts, nothing answers)
SERVER_TIMEOUT = "15s"
#: every node's weight (all equal): HAProxy places weight x 16 points of each server on its ring
RING_WEIGHT = 64


def node_name(i: int) -> str:
    return f"g{i}"


def component_name(i: int) -> str:
    """The stack's name for node ``i`` (1-based): node 1 is the stack's ``gateway``."""
    return "gateway" if i == 1 else f"gateway{i}"


def node_ports(st: StackLayout, i: int) -> tuple[int, int]:
    """Node ``i``'s S3 port and admin port."""
    name = component_name(i)
    return st.port(name), st.port(f"{name}_admin")


def gateway_url(st: StackLayout) -> str:
    """Where S3 clients (Trino's ``onprem`` catalog) reach the gateway: the balancer in a cluster."""
    if st.nodes > 1:
        return f"http://{HOST}:{st.port('balancer')}"
    if st.secure:  # TLS, its certificate issued to the stack's service host
        return f"https://{st.service_host}:{st.port('gateway')}"
    return f"http://{HOST}:{st.port('gateway')}"


def is_gateway_part(component: str) -> bool:
    """True for the components a resize replaces: the gateway nodes and the balancer."""
    return component == "balancer" or component.startswith("gateway")


def cluster_endpoints(st: StackLayout) -> dict[str, Any]:
    """The endpoints.json keys of the gateways: ``gateway`` is where S3 clients go (the
    balancer of a cluster), ``gateway_admin`` node 1's admin; with a cluster also each node."""
    ep: dict[str, Any] = {
        "gateways": st.nodes,
        "gateway": gateway_url(st),
        "gateway_admin": f"http://{HOST}:{node_ports(st, 1)[1]}",
    }
    if st.nodes > 1:
        ep["balancer_stats"] = f"http://{HOST}:{st.port('balancer_stats')}/stats"
        ep["gateway_nodes"] = [
            {
                "name": node_name(i),
                "component": component_name(i),
                "s3": f"http://{HOST}:{node_ports(st, i)[0]}",
                "admin": f"http://{HOST}:{node_ports(st, i)[1]}",
            }
            for i in range(1, st.nodes + 1)
        ]
    return ep


def cluster_toml(st: StackLayout) -> str:
    """The ``[cluster]`` block of the stack's metaproxy config ("" for one gateway)."""
    if st.nodes == 1:
        return ""
    lines = [
        "[cluster]",
        f'endpoint = "{gateway_url(st)}"',
        f'balancer_stats = "http://{HOST}:{st.port("balancer_stats")}/stats"',
    ]
    for i in range(1, st.nodes + 1):
        port, admin = node_ports(st, i)
        lines += [
            "",
            "[[cluster.node]]",
            f'name = "{node_name(i)}"',
            f'host = "{HOST}"',
            f"port = {port}",
            f"admin_port = {admin}",
        ]
    return "\n".join(lines) + "\n"


def prepare_node(i: int) -> Callable[[StackLayout], tuple[list[str], dict[str, str]]]:
    """The ``prepare`` function of node ``i`` (node 1 too when there are several)."""
    from metaproxy_devstack.components.services import stack_config

    def prepare(st: StackLayout) -> tuple[list[str], dict[str, str]]:
        cfg = stack_config(st)
        argv = [sys.executable, "-m", "metaproxy", "--config", str(cfg), "gateway"]
        return argv + ["--node", node_name(i)] if st.nodes > 1 else argv, {}

    return prepare


def node_ready(i: int) -> Callable[[StackLayout], bool]:
    """The ``ready`` function of node ``i``: its S3 port answers an unsigned request with 403."""

    def ready(st: StackLayout) -> bool:
        try:
            r = requests.get(f"http://{HOST}:{node_ports(st, i)[0]}/metaproxy/", timeout=5)
            return r.status_code == 403 and b"AccessDenied" in r.content
        except requests.RequestException:
            return False

    return ready


# -- HAProxy ----------------------------------------------------------------------------------


def haproxy_binary() -> str:
    """HAProxy's binary; installed from the machine's packages (``apt-get``) when missing."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        raise StackError("the gateway cluster needs HAProxy (2.6+): install it (no apt-get here)")
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if sudo is None:
        raise StackError("the gateway cluster needs HAProxy: run `apt-get install -y haproxy` as root")
    print("stack: installing HAProxy (apt-get install -y haproxy)...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def install() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*sudo, apt, "install", "-y", "-q", "haproxy"], env=env, capture_output=True, text=True
        )

    if install().returncode != 0:  # stale package lists: update them, then once more
        subprocess.run([*sudo, apt, "update", "-q"], env=env, capture_output=True, text=True)
        r = install()
        if r.returncode != 0:
            raise StackError(f"apt-get install haproxy failed: {r.stderr.strip()[-500:]}")
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if not found:
        raise StackError("apt-get installed haproxy, but no haproxy binary was found")
    return found


def haproxy_config(st: StackLayout) -> str:
    """HAProxy in front of the nodes: each object's path hashed to its owner on a consistent
    ring, health checks on each node's admin ``/health``, and a request whose node failed
    retried on the next node of the ring (which reads through)."""
    servers = []
    for i in range(1, st.nodes + 1):
        port, admin = node_ports(st, i)
        servers.append((node_name(i), i, port, admin))
    checked = "\n".join(
        f"    server {name} {HOST}:{port} id {i} check port {admin}" for name, i, port, admin in servers
    )

    def tracking(backend: str) -> str:
        return "\n".join(
            f"    server {name} {HOST}:{port} id {i} track {backend}/{name}" for name, i, port, _ in servers
        )

    return f"""# written by `metaproxy stack up --gateways {st.nodes}`
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 10m
    timeout server {SERVER_TIMEOUT}
    timeout check 2s
    # response bodies move from node to client in the kernel (splice), not through HAProxy's buffers
    option splice-response
    # a request whose node refused, reset or did not answer goes to the next node of the ring
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout junk-response 503
    # each server holds weight x 16 points on the ring: more points, a more even share
    default-server inter {CHECK_INTERVAL} fastinter 500ms fall {CHECK_FALL} rise 2 weight {RING_WEIGHT}

frontend s3
    bind {HOST}:{st.port("balancer")}
    # a request on the bucket itself (ListObjectsV2) is hashed with its query, so listings of
    # different prefixes spread over the nodes; an object's requests by its path alone
    acl bucket_level path_reg ^/[^/]*/?$
    acl load urlp(metaproxy-load) -m found
    use_backend listings if bucket_level
    use_backend loads if load
    default_backend objects

backend objects
    balance uri
    hash-type consistent
    option httpchk GET /health
    http-check expect status 200
{checked}

# the same ring (same server ids): a load request reaches the node that serves the object;
# loading a whole file sends nothing for a while
backend loads
    balance uri
    hash-type consistent
    timeout server 1h
{tracking("objects")}

backend listings
    balance uri whole
    hash-type consistent
{tracking("objects")}

frontend stats
    bind {HOST}:{st.port("balancer_stats")}
    stats enable
    stats uri /stats
    stats refresh 5s
"""


def prepare_balancer(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    binary = haproxy_binary()
    path = st.conf / "haproxy.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(haproxy_config(st))
    check = subprocess.run([binary, "-c", "-q", "-f", str(path)], capture_output=True, text=True)
    if check.returncode != 0:
        raise StackError(f"HAProxy refused {path}: {check.stderr.strip() or check.stdout.strip()}")
    return [binary, "-db", "-f", str(path)], {}


def balancer_servers(st: StackLayout) -> dict[str, str]:
    """Each node's state in HAProxy's ``objects`` backend (``UP``, ``DOWN``…); {} if unreadable."""
    try:
        r = requests.get(f"http://{HOST}:{st.port('balancer_stats')}/stats;csv", timeout=5)
        r.raise_for_status()
    except requests.RequestException:
        return {}
    rows = csv.DictReader(io.StringIO(r.text.lstrip("# ")))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == "objects" and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def balancer_ready(st: StackLayout) -> bool:
    """Ready once HAProxy has found every node healthy."""
    states = balancer_servers(st)
    return len(states) == st.nodes and all(s == "UP" for s in states.values())

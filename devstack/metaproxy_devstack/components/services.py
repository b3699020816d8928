"""metaproxy's own services on the stack: the metastore proxy and the cache gateway, both run
by the ``metaproxy`` command with the stack's config file (``conf/metaproxy.toml``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import (
    GATEWAY_ACCESS_KEY,
    GATEWAY_SECRET_KEY,
    HOST,
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
)
from metaproxy_devstack.components.cluster import cluster_toml, gateway_url

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

CONFIG = Template(
    """# written by `metaproxy stack up` for the local stack
log_level = "INFO"

[state]
path = "$data/metaproxy/state.db"

[metastore]
uris = ["thrift://$onprem:$hms"]
allow_writes = true
writable_databases = ["scratch.*", "lake.*"]

[proxy]
admin_port = $proxy_admin
mount_refresh = "1s"
audit_log = "$logs/proxy-audit.log"

[[proxy.listener]]
port = $proxy
profile = "cloud"

[[proxy.listener]]
port = $proxy_onprem
profile = "onprem"

[[proxy.listener]]
port = $proxy_passthrough
profile = "passthrough"

[gateway]
port = $gateway
endpoint = "$gateway_url"
bucket = "metaproxy"
access_key = "$gateway_access_key"
secret_key = "$gateway_secret_key"
block_size = "1MiB"
# the metastore's notification log keeps listings fresh: what changes on-prem through the HMS is
# re-read at once, so a listing is otherwise kept for long
stale_after = "10m"
admin_port = $gateway_admin
pinned_max = "1GiB"
ttl_check_interval = "1s"
writable_mounts = ["/lake"]

[gateway.memory]
capacity = "512MiB"

[gateway.disk]
path = "$data/metaproxy/cache"
capacity = "4GiB"

[hdfs]
namenode = "$hdfs"
webhdfs = "http://$onprem:$hdfs_http"

[s3]
endpoint = "http://$host:$s3"
region = "$s3_region"
access_key = "$s3_access_key"
secret_key = "$s3_secret_key"

[migrate]
target = "s3://metaproxy-migrated/"

[[mount]]
path = "/tpcds"
ufs = "$hdfs/warehouse/tpcds"

[[mount]]
path = "/lake"
ufs = ["$hdfs/warehouse/lake", "s3://metaproxy-lake/lake"]
read_priority = ["s3", "hdfs"]
create_target = "s3"
$cluster"""
)

_PORTS = ("hms", "hdfs_http", "proxy", "proxy_admin", "proxy_onprem", "proxy_passthrough")


def stack_config(st: StackLayout) -> Path:
    """The metaproxy config of the local stack (written at start; tests and the demo read it)."""
    text = CONFIG.substitute(
        {name: st.port(name) for name in (*_PORTS, "gateway", "gateway_admin", "s3")},
        host=HOST,
        onprem=st.onprem_host,
        hdfs=f"hdfs://{st.onprem_host}:{st.port('hdfs_rpc')}",
        data=st.data,
        logs=st.logs,
        gateway_access_key=GATEWAY_ACCESS_KEY,
        gateway_secret_key=GATEWAY_SECRET_KEY,
        s3_region=S3_REGION,
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,
        gateway_url=gateway_url(st),
        cluster=("\n" + cluster_toml(st)) if st.nodes > 1 else "",
    )
    path = st.conf / "metaproxy.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def prepare_proxy(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "serve"], {}


def prepare_gateway(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "gateway"], {}


def proxy_ready(st: StackLayout) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('proxy_admin')}/health", timeout=5)
        return r.status_code == 200 and r.json().get("ok") is True
    except (requests.RequestException, ValueError):
        return False


def gateway_ready(st: StackLayout) -> bool:
    """The gateway answers an unsigned request with S3's 403 AccessDenied."""
    try:
        r = requests.get(f"http://{HOST}:{st.port('gateway')}/metaproxy/", timeout=5)
        return r.status_code == 403 and b"AccessDenied" in r.content
    except requests.RequestException:
        return False

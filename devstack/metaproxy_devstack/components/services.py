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
from metaproxy_devstack.components.kdc import (
    PRINCIPALS,
    REALM,
    SERVICE_HOST,
    kerberos_env,
    keytab,
    tls_files,
)
from metaproxy_devstack.components.postgres import url as postgres_url

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

CONFIG = Template(
    """# written by `metaproxy stack up` for the local stack
log_level = "INFO"

[state]
$state

[metastore]
uris = ["thrift://$onprem:$hms"]
allow_writes = true
writable_databases = ["scratch.*", "lake.*"]
$metastore_extra
[proxy]
admin_port = $proxy_admin
${admin_extra}mount_refresh = "1s"
audit_log = "$logs/proxy-audit.log"

[[proxy.listener]]
port = $proxy
profile = "cloud"
$listener_extra
[[proxy.listener]]
port = $proxy_onprem
profile = "onprem"
$listener_extra
[[proxy.listener]]
port = $proxy_passthrough
profile = "passthrough"
$listener_extra
[gateway]
port = $gateway
endpoint = "$gateway_endpoint"
${admin_extra}${gateway_extra}bucket = "metaproxy"
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
webhdfs = "$webhdfs"
$hdfs_extra
[s3]
endpoint = "http://$host:$s3"
region = "$s3_region"
access_key = "$s3_access_key"
secret_key = "$s3_secret_key"

[migrate]
target = "s3://metaproxy-migrated/"
distcp_classpath = "$lib/distcp"   # for copier = "distcp" (the stack's copier stays builtin)
$secure_sections
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


def _secure_parts(st: StackLayout) -> dict[str, str]:
    """What the secure stack's config adds: Kerberos to the HMS and WebHDFS as metaproxy's
    principal, listeners that take Kerberos clients over TLS, the CA."""
    if not st.secure:
        return {
            "metastore_extra": "",
            "listener_extra": "",
            "hdfs_extra": "",
            "secure_sections": "",
            "webhdfs": f"http://{st.onprem_host}:{st.port('hdfs_http')}",
            "admin_extra": "",
            "gateway_extra": "",
            "gateway_endpoint": gateway_url(st),
        }
    tls = tls_files(st)
    allowed = ", ".join(f'"{PRINCIPALS[r].full}"' for r in ("trino", "user", "metaproxy", "short"))
    return {
        "metastore_extra": (
            f'kerberos_principal = "{PRINCIPALS["metaproxy"].full}"\n'
            f'keytab = "{keytab(st, "metaproxy")}"\n'
            f'service_principal = "hive/_HOST@{REALM}"\n'
        ),
        "listener_extra": f'auth = "kerberos"\nprincipals = [{allowed}]\ntls = true\n',
        "hdfs_extra": 'auth = "kerberos"\n',
        "secure_sections": (
            f'\n[tls]\ncert_file = "{tls.cert}"\nkey_file = "{tls.key}"\nca_file = "{tls.ca}"\n'
            '\n[kerberos]\ncheck_interval = "10s"\n'
        ),
        "webhdfs": f"https://{SERVICE_HOST}:{st.port('hdfs_https')}",
        # the S3 API and both admin endpoints over TLS too
        "admin_extra": "admin_tls = true\n",
        "gateway_extra": "tls = true\n",
        "gateway_endpoint": f"https://{SERVICE_HOST}:{st.port('gateway')}",
    }


def stack_config(st: StackLayout) -> Path:
    """The metaproxy config of the local stack (written at start; tests and the demo read it)."""
    text = CONFIG.substitute(
        {
            **_secure_parts(st),
            **{name: str(st.port(name)) for name in (*_PORTS, "gateway", "gateway_admin", "s3")},
        },
        host=HOST,
        onprem=st.service_host if st.secure else st.onprem_host,
        hdfs=f"hdfs://{st.service_host if st.secure else st.onprem_host}:{st.port('hdfs_rpc')}",
        data=st.data,
        logs=st.logs,
        lib=st.lib,
        gateway_access_key=GATEWAY_ACCESS_KEY,
        gateway_secret_key=GATEWAY_SECRET_KEY,
        s3_region=S3_REGION,
        s3_access_key=S3_ACCESS_KEY,
        s3_secret_key=S3_SECRET_KEY,
        cluster=("\n" + cluster_toml(st)) if st.nodes > 1 else "",
        state=(
            f'url = "{postgres_url(st.port("postgres"))}"'
            if st.state_backend == "postgres"
            else f'path = "{st.data}/metaproxy/state.db"'
        ),
    )
    path = st.conf / "metaproxy.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def prepare_proxy(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "serve"], _env(st)


def prepare_gateway(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    cfg = stack_config(st)
    return [sys.executable, "-m", "metaproxy", "--config", str(cfg), "gateway"], _env(st)


def _env(st: StackLayout) -> dict[str, str]:
    return kerberos_env(st) if st.secure else {}


def _https(st: StackLayout) -> tuple[str, str | bool]:
    """The scheme of the services' HTTP endpoints, and what verifies them."""
    return ("https", str(tls_files(st).ca)) if st.secure else ("http", True)


def proxy_ready(st: StackLayout) -> bool:
    scheme, verify = _https(st)
    try:
        r = requests.get(
            f"{scheme}://{st.service_host}:{st.port('proxy_admin')}/health", timeout=5, verify=verify
        )
        return r.status_code == 200 and r.json().get("ok") is True
    except (requests.RequestException, ValueError):
        return False


def gateway_ready(st: StackLayout) -> bool:
    """The gateway answers an unsigned request with S3's 403 AccessDenied."""
    scheme, verify = _https(st)
    try:
        r = requests.get(
            f"{scheme}://{st.service_host}:{st.port('gateway')}/metaproxy/", timeout=5, verify=verify
        )
        return r.status_code == 403 and b"AccessDenied" in r.content
    except requests.RequestException:
        return False

"""Trino 476 with the stack's Hive catalogs (see the package docstring for which is which)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import (
    GATEWAY_ACCESS_KEY,
    GATEWAY_SECRET_KEY,
    HOST,
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    TRINO_VERSION,
)
from metaproxy_devstack.components.cluster import gateway_url
from metaproxy_devstack.components.hdfs import secure_client_site, secure_core_site, site_xml
from metaproxy_devstack.components.kdc import (
    PRINCIPALS,
    SERVICE_HOST,
    java_kerberos_opts,
    java_truststore_opts,
    keytab,
    tls_files,
)
from metaproxy_devstack.procs import java_home

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

JVM_CONFIG = [
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


def trino_catalog(hms_uri: str, st: StackLayout, extra: dict[str, str] | None = None) -> str:
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


def _write_server_config(st: StackLayout, etc: Path) -> None:
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
    # secure: the gateway's S3 API is reached over TLS, verified with the stack's CA
    jvm = JVM_CONFIG + (java_kerberos_opts(st) + java_truststore_opts(st) if st.secure else [])
    (etc / "jvm.config").write_text("\n".join(jvm) + "\n")
    (etc / "log.properties").write_text("io.trino=INFO\n")


#: how long the ``direct_cache_ttl`` peer trusts what it cached of the metastore and listings
DIRECT_CACHE_TTL = "60s"


def secure_catalog(st: StackLayout, etc: Path, service_principal: str) -> dict[str, str]:
    """A catalog of the secure stack: Kerberos as ``trino`` to its metastore (whose principal is
    ``service_principal``) and to HDFS (SASL data transfer too)."""
    site = etc / "secure-hadoop-site.xml"
    site.write_text(site_xml({**secure_core_site(), **secure_client_site()}))
    trino_keytab = str(keytab(st, "trino"))
    return {
        "hive.metastore.authentication.type": "KERBEROS",
        "hive.metastore.service.principal": service_principal,
        "hive.metastore.client.principal": PRINCIPALS["trino"].full,
        "hive.metastore.client.keytab": trino_keytab,
        "hive.hdfs.authentication.type": "KERBEROS",
        "hive.hdfs.trino.principal": PRINCIPALS["trino"].full,
        "hive.hdfs.trino.keytab": trino_keytab,
        "hive.config.resources": str(site),
    }


def _write_direct_catalogs(st: StackLayout, etc: Path) -> None:
    """``direct`` (the HMS and HDFS themselves); with the WAN link also ``direct_cache`` (Trino's
    file-system cache) and ``direct_cache_ttl`` (that, plus its metastore and listing caches)."""
    if st.secure:
        hms = f"thrift://{SERVICE_HOST}:{st.port('hms')}"
        props = secure_catalog(st, etc, PRINCIPALS["hive"].full)
        (etc / "catalog" / "direct.properties").write_text(trino_catalog(hms, st, props))
        return
    hms = f"thrift://{st.onprem_host}:{st.port('hms')}"
    (etc / "catalog" / "direct.properties").write_text(trino_catalog(hms, st))
    if st.wan is None:
        return
    # across the link, HDFS clients connect to the DataNode by its name (the link's address)
    hdfs_site = etc / "hdfs-site.xml"
    hdfs_site.write_text(site_xml({"dfs.client.use.datanode.hostname": "true"}))
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
    # and as fast as Trino can be made across the link: its metastore cache and its listing
    # cache on top, each fresh for a TTL (a change on-prem is seen up to a TTL late)
    ttl = {
        **cache,
        "fs.cache.directories": str(st.data / "trino-fs-cache-ttl"),  # cold on its own first run
        "hive.metastore-cache-ttl": DIRECT_CACHE_TTL,
        "hive.metastore-stats-cache-ttl": DIRECT_CACHE_TTL,
        "hive.metastore-refresh-interval": "30s",
        "hive.file-status-cache-tables": "*",
        "hive.file-status-cache-expire-time": DIRECT_CACHE_TTL,
    }
    (etc / "catalog" / "direct_cache_ttl.properties").write_text(trino_catalog(hms, st, ttl))


#: a catalog whose metastore is metaproxy: the proxy retries and fails over to the HMS itself and
#: answers at once when it cannot (from its cache, or with the reason), so Trino's own retries
#: (30 s by default) would only hold back a clear error
THROUGH_METAPROXY = {"hive.metastore.thrift.client.max-retry-time": "2s"}


#: ports (and ``endpoints.json`` keys) of proxies run outside the stack, each with a catalog
#: ``onprem_<letter>`` that is ``onprem`` through it
EXTRA_PROXIES = ("proxy_a", "proxy_b")

#: how soon Trino sees a new gateway endpoint in the ``onprem`` mapping
MAPPING_REFRESH_S = 2
MAPPING_REFRESH = f"{MAPPING_REFRESH_S}s"


def write_gateway_mapping(st: StackLayout, etc: Path | None = None, endpoint: str = "") -> Path:
    """The S3 security mapping of ``onprem``: the gateway bucket to the gateway (the balancer of
    a gateway cluster; or ``endpoint``, for a bench's own gateways), every other location to the
    stack's S3."""
    mapping = (etc or st.conf / "trino") / "onprem-s3-mapping.json"
    gateway = {
        "prefix": "s3://metaproxy/",
        "endpoint": endpoint or gateway_url(st),
        "region": S3_REGION,
        "accessKey": GATEWAY_ACCESS_KEY,
        "secretKey": GATEWAY_SECRET_KEY,
    }
    tmp = mapping.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mappings": [gateway, {"useClusterDefault": True}]}, indent=2))
    tmp.replace(mapping)
    return mapping


def _write_metaproxy_catalogs(st: StackLayout, etc: Path) -> None:
    """Through metaproxy: ``onprem`` with the cloud profile (its gateway bucket goes to the cache
    gateway through an S3 security mapping), ``passthrough`` rewriting nothing; on the secure
    stack both with Kerberos to the proxy's own principal, over TLS.
    """
    mapping = write_gateway_mapping(st, etc)
    through = dict(THROUGH_METAPROXY)
    if st.secure:
        # Kerberos to the proxy's own principal, over TLS verified with the stack's CA
        through.update(secure_catalog(st, etc, PRINCIPALS["metaproxy"].full))
        through["hive.metastore.thrift.client.ssl.enabled"] = "true"
        through["hive.metastore.thrift.client.ssl.trust-certificate"] = str(tls_files(st).ca)
    onprem = {
        **through,
        "s3.security-mapping.enabled": "true",
        "s3.security-mapping.config-file": str(mapping),
        # re-read, so a gateway cluster can be added or removed under a running Trino
        "s3.security-mapping.refresh-period": MAPPING_REFRESH,
    }
    proxy = f"thrift://{st.service_host}:{st.port('proxy')}"
    (etc / "catalog" / "onprem.properties").write_text(trino_catalog(proxy, st, onprem))
    if st.wan is not None:
        # with the link, also metaproxy with Trino's file-system cache in front of the gateway
        # (each worker's local disk before the shared gateway; data files are keyed by their
        # modification time, so they stay fresh; metadata comes from the proxy, fresh)
        layered = {
            **onprem,
            "fs.cache.enabled": "true",
            "fs.cache.directories": str(st.data / "trino-fs-cache-metaproxy"),
            "fs.cache.max-sizes": "16GB",
        }
        (etc / "catalog" / "onprem_cache.properties").write_text(trino_catalog(proxy, st, layered))
    (etc / "catalog" / "passthrough.properties").write_text(
        trino_catalog(f"thrift://{st.service_host}:{st.port('proxy_passthrough')}", st, through)
    )
    # ``onprem`` again, through proxies a test or a bench runs itself (several proxies sharing
    # one state, say) on ports the stack reserves: a catalog connects only when queried
    for name in EXTRA_PROXIES:
        extra = f"thrift://{st.service_host}:{st.port(name)}"
        (etc / "catalog" / f"onprem_{name.removeprefix('proxy_')}.properties").write_text(
            trino_catalog(extra, st, onprem)
        )


def prepare_trino(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    home = st.lib / "trino" / f"trino-server-{TRINO_VERSION}"
    etc = st.conf / "trino"
    (etc / "catalog").mkdir(parents=True, exist_ok=True)
    _write_server_config(st, etc)
    _write_direct_catalogs(st, etc)
    _write_metaproxy_catalogs(st, etc)
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


def trino_ready(st: StackLayout) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('trino')}/v1/info", timeout=2)
        return r.status_code == 200 and r.json().get("starting") is False
    except (requests.RequestException, ValueError):
        return False

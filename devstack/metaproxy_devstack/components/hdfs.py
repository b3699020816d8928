"""HDFS: a NameNode and a DataNode on loopback, from the Hadoop jars of the Hive Metastore 4.0
classpath (whatever HMS version the stack runs)."""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from metaproxy.ufs.webhdfs import WebHdfs
from metaproxy_devstack.common import HOST, StackError
from metaproxy_devstack.components.kdc import (
    PRINCIPALS,
    SERVICE_HOST,
    STORE_PASSWORD,
    java_kerberos_opts,
    kerberos_env,
    keytab,
    stack_security,
    tls_files,
)
from metaproxy_devstack.procs import JAVA17_OPENS, java_home

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout


def site_xml(props: dict[str, str]) -> str:
    """A Hadoop ``*-site.xml`` file setting ``props``."""
    body = "\n".join(
        f"  <property><name>{k}</name><value>{_xml_escape(v)}</value></property>" for k, v in props.items()
    )
    return f'<?xml version="1.0"?>\n<configuration>\n{body}\n</configuration>\n'


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _hadoop_conf(st: StackLayout) -> Path:
    """core-site.xml and hdfs-site.xml for the NameNode and DataNode (loopback only)."""
    conf = st.conf / "hdfs"
    for webapp in ("hdfs", "datanode", "secondary", "static"):
        # the daemons' HTTP servers want these folders on the classpath; WebHDFS itself is
        # registered in code, and Maven Central's hadoop-hdfs jar ships no web UI
        (conf / "webapps" / webapp).mkdir(parents=True, exist_ok=True)
    data = st.data / "hdfs"
    core = {"fs.defaultFS": f"hdfs://{HOST}:{st.port('hdfs_rpc')}", "hadoop.tmp.dir": str(data)}
    secure: dict[str, str] = {}
    if st.secure:
        core.update(secure_core_site())
        secure = _secure_hdfs_site(st, conf)
    (conf / "core-site.xml").write_text(site_xml(core))
    (conf / "hdfs-site.xml").write_text(
        site_xml(
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
                **secure,
            }
        )
    )
    return conf


def secure_core_site() -> dict[str, str]:
    """Kerberos for every Hadoop process and client of the secure stack. RPC offers every
    protection level (the HMS asks for privacy, which its own SASL then also asks of clients)."""
    return {
        "hadoop.security.authentication": "kerberos",
        "hadoop.security.authorization": "false",
        "hadoop.rpc.protection": "authentication,integrity,privacy",
        # the HMS works on HDFS as the client it serves, and metaproxy's principal may act for
        # others (delegation tokens it asks the HMS for)
        "hadoop.proxyuser.hive.hosts": "*",
        "hadoop.proxyuser.hive.groups": "*",
        "hadoop.proxyuser.metaproxy.hosts": "*",
        "hadoop.proxyuser.metaproxy.groups": "*",
    }


def secure_client_site() -> dict[str, str]:
    """What an HDFS client of the secure stack needs besides Kerberos: the NameNode's principal
    and SASL on the data transfer."""
    return {
        "dfs.namenode.kerberos.principal": PRINCIPALS["hdfs"].full,
        "dfs.datanode.kerberos.principal": PRINCIPALS["hdfs"].full,
        "dfs.data.transfer.protection": "authentication",
    }


def _http_secret(st: StackLayout) -> Path:
    """The secret HTTP endpoints sign their authentication cookie with (one per realm)."""
    path = st.conf / "hdfs-http-secret"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path


def _secure_hdfs_site(st: StackLayout, conf: Path) -> dict[str, str]:
    """Kerberos on RPC, SPNEGO on HTTP, SASL on data transfer (so the DataNode needs no
    privileged port), and HTTPS only (which SASL data transfer requires) with the stack CA's
    certificate in a PKCS#12 keystore."""
    tls = tls_files(st)
    hdfs_keytab = str(keytab(st, "hdfs"))
    stores = {
        "ssl.server.keystore.location": str(tls.keystore),
        "ssl.server.keystore.password": STORE_PASSWORD,
        "ssl.server.keystore.keypassword": STORE_PASSWORD,
        "ssl.server.keystore.type": "pkcs12",
        "ssl.server.truststore.location": str(tls.truststore),
        "ssl.server.truststore.password": STORE_PASSWORD,
        "ssl.server.truststore.type": "pkcs12",
    }
    (conf / "ssl-server.xml").write_text(site_xml(stores))
    (conf / "ssl-client.xml").write_text(
        site_xml(
            {
                "ssl.client.truststore.location": str(tls.truststore),
                "ssl.client.truststore.password": STORE_PASSWORD,
                "ssl.client.truststore.type": "pkcs12",
            }
        )
    )
    return {
        **secure_client_site(),
        "dfs.block.access.token.enable": "true",
        "dfs.namenode.keytab.file": hdfs_keytab,
        "dfs.datanode.keytab.file": hdfs_keytab,
        "dfs.web.authentication.kerberos.principal": PRINCIPALS["http"].full,
        "dfs.web.authentication.kerberos.keytab": hdfs_keytab,
        "dfs.namenode.kerberos.internal.spnego.principal": PRINCIPALS["http"].full,
        # SPNEGO on the HTTP endpoints (WebHDFS among them); without it their filter lets
        # requests through unauthenticated and WebHDFS then refuses them
        "hadoop.http.authentication.type": "kerberos",
        "hadoop.http.authentication.kerberos.principal": PRINCIPALS["http"].full,
        "hadoop.http.authentication.kerberos.keytab": hdfs_keytab,
        "hadoop.http.authentication.simple.anonymous.allowed": "false",
        "hadoop.http.authentication.signature.secret.file": str(_http_secret(st)),
        "dfs.http.policy": "HTTPS_ONLY",
        "dfs.namenode.https-address": f"{HOST}:{st.port('hdfs_https')}",
        "dfs.datanode.https.address": f"{HOST}:{st.port('datanode_https')}",
        "dfs.https.server.keystore.resource": "ssl-server.xml",
        "dfs.client.https.keystore.resource": "ssl-client.xml",
    }


#: the classpath with the HDFS daemons (hadoop-hdfs): the one of Hive Metastore 4.0 (java/hms-4.0)
HADOOP_LIB = "hms-4.0"


def _hadoop_argv(st: StackLayout, conf: Path, main: str, *args: str) -> list[str]:
    java = Path(java_home(17, 21)) / "bin" / "java"
    krb = java_kerberos_opts(st) if st.secure else []
    return [str(java), "-Xmx512m", *JAVA17_OPENS, *krb, "-cp", f"{conf}:{st.lib / HADOOP_LIB}/*", main, *args]


def prepare_namenode(st: StackLayout) -> tuple[list[str], dict[str, str]]:
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
    return _hadoop_argv(st, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"), _env(st)


def prepare_datanode(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    return _hadoop_argv(st, _hadoop_conf(st), "org.apache.hadoop.hdfs.server.datanode.DataNode"), _env(st)


def _env(st: StackLayout) -> dict[str, str]:
    return kerberos_env(st) if st.secure else {}


def _secure_webhdfs(st: StackLayout) -> WebHdfs:
    return WebHdfs(f"https://{SERVICE_HOST}:{st.port('hdfs_https')}", timeout=5, security=stack_security(st))


def namenode_ready(st: StackLayout) -> bool:
    if st.secure:  # SPNEGO over HTTPS
        try:
            _secure_webhdfs(st).stat("/")
            return True
        except Exception:
            return False
    try:
        r = requests.get(
            f"http://{HOST}:{st.port('hdfs_http')}/webhdfs/v1/?op=GETFILESTATUS&user.name=hdfs", timeout=2
        )
        return r.status_code == 200
    except requests.RequestException:
        return False


def datanode_ready(st: StackLayout) -> bool:
    """A DataNode accepts a block: write a probe file through WebHDFS and read it back."""
    if st.secure:
        try:
            fs = _secure_webhdfs(st)
            fs.write("/tmp/.metaproxy-probe", b"ok")
            stream = fs.open_read("/tmp/.metaproxy-probe", 0, 2)
            try:
                return stream.read(2) == b"ok"
            finally:
                stream.close()
        except Exception:
            return False
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

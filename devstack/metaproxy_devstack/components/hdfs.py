"""HDFS: a NameNode and a DataNode on loopback, from the Hadoop jars of the Hive Metastore 4.0
classpath (whatever HMS version the stack runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import HOST, StackError
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
    (conf / "core-site.xml").write_text(
        site_xml({"fs.defaultFS": f"hdfs://{HOST}:{st.port('hdfs_rpc')}", "hadoop.tmp.dir": str(data)})
    )
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
            }
        )
    )
    return conf


#: the classpath with the HDFS daemons (hadoop-hdfs): the one of Hive Metastore 4.0 (java/hms-4.0)
HADOOP_LIB = "hms-4.0"


def _hadoop_argv(st: StackLayout, conf: Path, main: str, *args: str) -> list[str]:
    java = Path(java_home(17, 21)) / "bin" / "java"
    return [str(java), "-Xmx512m", *JAVA17_OPENS, "-cp", f"{conf}:{st.lib / HADOOP_LIB}/*", main, *args]


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
    return _hadoop_argv(st, conf, "org.apache.hadoop.hdfs.server.namenode.NameNode"), {}


def prepare_datanode(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    return _hadoop_argv(st, _hadoop_conf(st), "org.apache.hadoop.hdfs.server.datanode.DataNode"), {}


def namenode_ready(st: StackLayout) -> bool:
    try:
        r = requests.get(
            f"http://{HOST}:{st.port('hdfs_http')}/webhdfs/v1/?op=GETFILESTATUS&user.name=hdfs", timeout=2
        )
        return r.status_code == 200
    except requests.RequestException:
        return False


def datanode_ready(st: StackLayout) -> bool:
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

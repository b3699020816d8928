"""The Hive Metastore 4: the standalone server on embedded Derby, warehouse on HDFS, s3a:// to
the stack's S3 server.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from metaproxy_devstack.common import HOST, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from metaproxy_devstack.components.hdfs import site_xml
from metaproxy_devstack.procs import JAVA17_OPENS, java_home, port_open

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout


def _metastore_site(st: StackLayout, hdfs: str) -> dict[str, str]:
    derby = st.data / "hms" / "metastore_db"
    derby.parent.mkdir(parents=True, exist_ok=True)
    return {
        "metastore.thrift.port": str(st.port("hms")),
        "metastore.thrift.bind.host": HOST,
        "metastore.warehouse.dir": f"{hdfs}/warehouse",
        "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={derby};create=true",
        "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
        "datanucleus.schema.autoCreateAll": "true",
        "metastore.schema.verification": "false",
        # the notification-log API without its check that only the server's own user may read
        # it: the metastore.* name of this setting is misspelt in Hive 4.0
        # (metastore.metastore.event.db.notification.api.auth), so the one set here was ignored
        "hive.metastore.event.db.notification.api.auth": "false",
        "metastore.metrics.enabled": "false",
        "metastore.server.min.threads": "8",
        # no translation layer: clients get the locations that were stored, as from
        # a classic on-prem HMS (Hive 4 otherwise rewrites database locations)
        "metastore.metadata.transformer.class": " ",
    }


def prepare_hms(st: StackLayout) -> tuple[list[str], dict[str, str]]:
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
    (conf / "core-site.xml").write_text(site_xml({"fs.defaultFS": hdfs, **s3a}))
    (conf / "metastore-site.xml").write_text(site_xml(_metastore_site(st, hdfs)))
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


def hms_ready(st: StackLayout) -> bool:
    if not port_open(st.port("hms")):
        return False
    try:
        from metaproxy.hms import connect

        with connect(f"thrift://{HOST}:{st.port('hms')}", timeout_s=10) as client:
            return "default" in client.get_all_databases()
    except Exception:
        return False

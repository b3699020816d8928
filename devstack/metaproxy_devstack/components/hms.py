"""The Hive Metastore, in the version the stack was asked for (``StackLayout.hms_version``):
Hive 2.3, 3.1 or 4.0, each its own server on embedded Derby (the schema created at the first
start: ``datanucleus.schema.autoCreateAll``, schema verification off), warehouse on HDFS,
``s3a://`` to the stack's S3 server, on Java 17.

The versions read differently named settings from differently named files:

- 4.0 and 3.1 (the standalone metastore) read ``metastore-site.xml`` with ``MetastoreConf``'s
  ``metastore.*`` names (each also answers to an older ``hive.metastore.*`` name);
- 2.3 (the metastore of Hive itself) reads ``hive-site.xml`` with ``HiveConf``'s ``hive.*`` names.

Only 4.0 can be bound to loopback (``metastore.thrift.bind.host``); 2.3 and 3.1 have no such
setting and listen on every interface.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from metaproxy_devstack.common import HOST, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from metaproxy_devstack.components.hdfs import site_xml
from metaproxy_devstack.procs import JAVA17_OPENS, java_home, port_open

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

#: the versions whose server listens on loopback only (the others have no bind-host setting)
LOOPBACK_ONLY = ("4.0",)

#: the metastore's own partition-expression class: the default, PartitionExpressionForMetastore,
#: is part of Hive's query engine (hive-exec), which the 2.3 and 3.1 classpaths leave out. With it
#: get_partitions_by_expr is refused; filters by string (get_partitions_by_filter) still work.
DEFAULT_EXPRESSION_PROXY = "org.apache.hadoop.hive.metastore.DefaultPartitionExpressionProxy"

#: the notification-log API without the check that only the server's own user may read it. The
#: ``metastore.*`` name of this setting is misspelt in 3.1 and 4.0
#: (``metastore.metastore.event.db.notification.api.auth``); every version reads this one.
EVENT_API_AUTH_OFF = {"hive.metastore.event.db.notification.api.auth": "false"}

#: the writer of the notification log (every change an event, in the change's transaction): Hive's
#: own DbNotificationListener for 2.3 and 3.1, and for 4.0 — whose listener Maven Central does not
#: have — the stack's own (``java/notify``, compiled into the 4.0 classpath at install)
HIVE_LOG_WRITER = "org.apache.hive.hcatalog.listener.DbNotificationListener"
STACK_LOG_WRITER = "io.metaproxy.devstack.NotificationLogWriter"


def _derby(st: StackLayout) -> dict[str, str]:
    derby = st.data / "hms" / "metastore_db"
    derby.parent.mkdir(parents=True, exist_ok=True)
    return {
        "javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={derby};create=true",
        "javax.jdo.option.ConnectionDriverName": "org.apache.derby.jdbc.EmbeddedDriver",
        "datanucleus.schema.autoCreateAll": "true",
    }


def _site_4_0(st: StackLayout, hdfs: str) -> dict[str, str]:
    return {
        "metastore.thrift.port": str(st.port("hms")),
        "metastore.thrift.bind.host": HOST,
        "metastore.warehouse.dir": f"{hdfs}/warehouse",
        **_derby(st),
        "metastore.schema.verification": "false",
        **EVENT_API_AUTH_OFF,
        "metastore.transactional.event.listeners": STACK_LOG_WRITER,
        "metastore.metrics.enabled": "false",
        "metastore.server.min.threads": "8",
        # no translation layer: clients get the locations that were stored, as from
        # a classic on-prem HMS (Hive 4 otherwise rewrites database locations)
        "metastore.metadata.transformer.class": " ",
    }


def _site_3_1(st: StackLayout, hdfs: str) -> dict[str, str]:
    return {
        "metastore.thrift.port": str(st.port("hms")),
        "metastore.warehouse.dir": f"{hdfs}/warehouse",
        **_derby(st),
        "metastore.schema.verification": "false",
        **EVENT_API_AUTH_OFF,
        "metastore.transactional.event.listeners": HIVE_LOG_WRITER,
        "metastore.metrics.enabled": "false",
        "metastore.server.min.threads": "8",
        "metastore.expression.proxy": DEFAULT_EXPRESSION_PROXY,
        # the default list adds a replication task of hive-exec (repl.DumpDirCleanerTask)
        "metastore.task.threads.always": (
            "org.apache.hadoop.hive.metastore.events.EventCleanerTask,"
            "org.apache.hadoop.hive.metastore.RuntimeStatsCleanerTask"
        ),
    }


def _site_2_3(st: StackLayout, hdfs: str) -> dict[str, str]:
    return {
        "hive.metastore.port": str(st.port("hms")),
        "hive.metastore.warehouse.dir": f"{hdfs}/warehouse",
        **_derby(st),
        "hive.metastore.schema.verification": "false",
        "hive.metastore.transactional.event.listeners": HIVE_LOG_WRITER,
        "hive.metastore.server.min.threads": "8",
        "hive.metastore.expression.proxy": DEFAULT_EXPRESSION_PROXY,
        "hive.async.log.enabled": "false",
    }


#: per version: the config file it reads, and what the stack writes into it
SITES = {
    "4.0": ("metastore-site.xml", _site_4_0),
    "3.1": ("metastore-site.xml", _site_3_1),
    "2.3": ("hive-site.xml", _site_2_3),
}


def _core_site(st: StackLayout, hdfs: str) -> dict[str, str]:
    return {
        "fs.defaultFS": hdfs,
        "fs.s3a.endpoint": f"http://{HOST}:{st.port('s3')}",
        "fs.s3a.endpoint.region": S3_REGION,
        "fs.s3a.path.style.access": "true",
        "fs.s3a.access.key": S3_ACCESS_KEY,
        "fs.s3a.secret.key": S3_SECRET_KEY,
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }


def prepare_hms(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    version = st.hms
    conf = st.conf / "hms"
    # a config file another version left would be read too (3.1 and 4.0 also read hive-site.xml)
    shutil.rmtree(conf, ignore_errors=True)
    conf.mkdir(parents=True)
    hdfs = f"hdfs://{HOST}:{st.port('hdfs_rpc')}"
    (conf / "core-site.xml").write_text(site_xml(_core_site(st, hdfs)))
    name, site = SITES[version]
    (conf / name).write_text(site_xml(site(st, hdfs)))
    java = Path(java_home(17, 21)) / "bin" / "java"
    argv = [
        str(java),
        "-Xmx1g",
        *JAVA17_OPENS,
        f"-Dderby.stream.error.file={st.logs / 'derby.log'}",
        "-cp",
        f"{conf}:{st.lib / f'hms-{version}'}/*",
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

"""The Hive Metastore, in the version the stack was asked for (``StackLayout.hms_version``):
Hive 2.3, 3.1 or 4.0, each its own server on embedded Derby, warehouse on HDFS, ``s3a://`` to
the stack's S3 server, on Java 17.

Each version runs on the schema a production install of it has: before the first start, Hive's
schema tool creates it from Hive's own Derby scripts (:func:`create_schema`), and the metastore
verifies the recorded schema version as it starts. A schema that DataNucleus improvises as tables
are first used differs where it matters — its notification log holds a message of at most
32,700 characters, so one ``add_partitions`` of a hundred partitions failed — and it has none of
the transaction tables.

The versions read differently named settings from differently named files:

- 4.0 and 3.1 (the standalone metastore) read ``metastore-site.xml`` with ``MetastoreConf``'s
  ``metastore.*`` names (each also answers to an older ``hive.metastore.*`` name);
- 2.3 (the metastore of Hive itself) reads ``hive-site.xml`` with ``HiveConf``'s ``hive.*`` names.

Only 4.0 can be bound to loopback (``metastore.thrift.bind.host``); 2.3 and 3.1 have no such
setting and listen on every interface.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from metaproxy_devstack.common import HOST, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, StackError
from metaproxy_devstack.components.hdfs import secure_client_site, secure_core_site, site_xml
from metaproxy_devstack.components.kdc import PRINCIPALS, java_kerberos_opts, kerberos_env, keytab
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


#: the schema version each metastore version checks for as it starts
SCHEMA_VERSIONS = {"4.0": "4.0.0", "3.1": "3.1.0", "2.3": "2.3.0"}

DERBY_DRIVER = "org.apache.derby.jdbc.EmbeddedDriver"
#: the metastore's default database user and password (Derby's own ``APP`` schema)
DERBY_USER, DERBY_PASSWORD = "APP", "mine"


def derby_url(st: StackLayout) -> str:
    return f"jdbc:derby:;databaseName={st.data / 'hms' / 'metastore_db'};create=true"


def _derby(st: StackLayout) -> dict[str, str]:
    return {
        "javax.jdo.option.ConnectionURL": derby_url(st),
        "javax.jdo.option.ConnectionDriverName": DERBY_DRIVER,
        "datanucleus.schema.autoCreateAll": "false",
    }


def _site_4_0(st: StackLayout, hdfs: str) -> dict[str, str]:
    return {
        "metastore.thrift.port": str(st.port("hms")),
        "metastore.thrift.bind.host": HOST,
        "metastore.warehouse.dir": f"{hdfs}/warehouse",
        **_derby(st),
        "metastore.schema.verification": "true",
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
        "metastore.schema.verification": "true",
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
        "hive.metastore.schema.verification": "true",
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
    props = site(st, hdfs)
    env = {"HADOOP_USER_NAME": "hdfs"}
    krb: list[str] = []
    if st.secure:
        props.update(secure_site(st))
        core = {**_core_site(st, hdfs), **secure_core_site(), **secure_client_site()}
        # the quality of protection its SASL asks of clients: privacy (auth-conf)
        core["hadoop.rpc.protection"] = "privacy"
        (conf / "core-site.xml").write_text(site_xml(core))
        env = kerberos_env(st)
        krb = java_kerberos_opts(st)
    (conf / name).write_text(site_xml(props))
    if not (st.data / "hms" / "metastore_db").exists():
        create_schema(st, SCHEMA_VERSIONS[version])
    java = Path(java_home(17, 21)) / "bin" / "java"
    argv = [
        str(java),
        "-Xmx1g",
        *JAVA17_OPENS,
        *krb,
        f"-Dderby.stream.error.file={st.logs / 'derby.log'}",
        "-cp",
        f"{conf}:{st.lib / f'hms-{version}'}/*",
        "org.apache.hadoop.hive.metastore.HiveMetaStore",
    ]
    return argv, env


def secure_site(st: StackLayout) -> dict[str, str]:
    """The metastore's Kerberos: SASL GSSAPI on its Thrift port as ``hive/localhost``."""
    return {
        "metastore.sasl.enabled": "true",
        "hive.metastore.sasl.enabled": "true",
        "metastore.kerberos.principal": PRINCIPALS["hive"].full,
        "hive.metastore.kerberos.principal": PRINCIPALS["hive"].full,
        "metastore.kerberos.keytab.file": str(keytab(st, "hive")),
        "hive.metastore.kerberos.keytab.file": str(keytab(st, "hive")),
    }


def schema_steps(scripts: Path, version: str) -> tuple[str, list[Path]]:
    """How Hive's Derby scripts in ``scripts`` make schema ``version``: the version whose
    ``hive-schema-*`` script to run, then the upgrade scripts after it, in order.

    Hive publishes a full script for some versions only (1.2.0, 3.x, 4.x); the others are reached
    by upgrading, as ``upgrade.order.derby`` lists the steps.
    """
    steps = [line.split("-to-") for line in (scripts / "upgrade.order.derby").read_text().split()]
    base, upgrades = version, list[Path]()
    while not (scripts / f"hive-schema-{base}.derby.sql").exists():
        before = [a for a, b in steps if b == base]
        if not before:
            raise StackError(f"Hive's Derby scripts in {scripts} cannot make schema {version}")
        upgrades.insert(0, scripts / f"upgrade-{before[0]}-to-{base}.derby.sql")
        base = before[0]
    return base, upgrades


def create_schema(st: StackLayout, version: str) -> None:
    """Create schema ``version`` in the stack's (new) Derby database, as an administrator does
    before a metastore's first start: Hive's schema tool (from the 4.0 classpath, which has the
    tool and an SQL shell, with the metastore's own Derby) and the scripts of Hive's metastore distribution, which the
    stack's install unpacks into ``lib/hms-schema``."""
    homes = sorted((st.lib / "hms-schema").glob("apache-hive-metastore-*-bin"))
    if not homes:
        raise StackError(f"Hive's schema scripts are missing from {st.lib / 'hms-schema'}")
    scripts = homes[-1] / "scripts" / "metastore" / "upgrade" / "derby"
    base, upgrades = schema_steps(scripts, version)
    java = str(Path(java_home(17, 21)) / "bin" / "java")
    # Derby's files are written in the format of the Derby that makes them, which an older
    # Derby cannot open: the version's own Derby goes first
    derby = [str(j) for j in sorted((st.lib / f"hms-{st.hms}").glob("derby-*.jar"))]
    cp = ":".join([*derby, f"{st.lib / 'hms-4.0'}/*"])
    url = derby_url(st)
    schema_tool = "org.apache.hadoop.hive.metastore.tools.schematool.MetastoreSchemaTool"
    init = ["-initSchemaTo", base, "-dbType", "derby", "-url", url, "-driver", DERBY_DRIVER]
    login = ["-userName", DERBY_USER, "-passWord", DERBY_PASSWORD]
    shell = ["sqlline.SqlLine", "-u", url, "-n", DERBY_USER, "-p", DERBY_PASSWORD, "-d", DERBY_DRIVER]
    runs = [(f"hive-schema-{base}", [schema_tool, *init, *login])]
    runs += [(u.stem, [*shell, "--silent=true", f"--run={u}"]) for u in upgrades]
    env = {**os.environ, "METASTORE_HOME": str(homes[-1])}
    (st.data / "hms").mkdir(parents=True, exist_ok=True)
    with open(st.logs / "hms-schema.log", "ab") as log:
        for step, argv in runs:
            proc = subprocess.run(
                [java, f"-Dderby.stream.error.file={st.logs / 'derby.log'}", "-cp", cp, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            if proc.returncode != 0:
                shutil.rmtree(st.data / "hms" / "metastore_db", ignore_errors=True)
                raise StackError(
                    f"creating the metastore's schema {version} failed at {step} "
                    f"(exit {proc.returncode}); see {st.logs / 'hms-schema.log'}"
                )


def hms_ready(st: StackLayout) -> bool:
    if not port_open(st.port("hms")):
        return False
    try:
        from metaproxy.hms import connect

        with connect(f"thrift://{st.service_host}:{st.port('hms')}", timeout_s=10) as client:
            return "default" in client.get_all_databases()
    except Exception:
        return False

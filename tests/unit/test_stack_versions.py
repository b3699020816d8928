"""The local stack's choice of Hive Metastore version: each version's config and classpath, the
poms that pin them, and which running stack is reused (no process is started here)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from metaproxy_devstack.common import DEFAULT_HMS_VERSION, HMS_RELEASES, HMS_VERSIONS, StackError
from metaproxy_devstack.components import hms
from metaproxy_devstack.install import _poms
from metaproxy_devstack.launcher import Stack

pytestmark = pytest.mark.unit


def site(path: Path) -> dict[str, str]:
    return {p.findtext("name") or "": p.findtext("value") or "" for p in ET.parse(path).getroot()}


@pytest.fixture
def no_jdk_needed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No JDK and no schema tool: the schema versions asked for are recorded instead."""
    created: list[str] = []
    monkeypatch.setattr(hms, "java_home", lambda lo, hi=99: "/jdk")
    monkeypatch.setattr(hms, "create_schema", lambda st, version: created.append(version))
    return created


@pytest.mark.parametrize("version", HMS_VERSIONS)
def test_each_version_gets_its_own_config_file_names_and_classpath(
    version: str, tmp_path: Path, no_jdk_needed: list[str]
) -> None:
    st = Stack(dir=tmp_path, hms_version=version)
    stale = st.conf / "hms" / "hive-site.xml"  # left by another version: 3.1 and 4.0 would read it
    stale.parent.mkdir(parents=True)
    stale.write_text("<configuration/>")
    argv, env = hms.prepare_hms(st)
    conf = st.conf / "hms"
    name = "hive-site.xml" if version == "2.3" else "metastore-site.xml"
    assert sorted(p.name for p in conf.iterdir()) == sorted(["core-site.xml", name])
    props = site(conf / name)
    port = str(st.port("hms"))
    if version == "2.3":
        assert props["hive.metastore.port"] == port
        assert props["hive.metastore.schema.verification"] == "true"
        assert props["hive.metastore.warehouse.dir"].endswith("/warehouse")
    else:
        assert props["metastore.thrift.port"] == port
        assert props["metastore.schema.verification"] == "true"
        assert props["metastore.warehouse.dir"].endswith("/warehouse")
    # only 4.0 can be bound to loopback; the older ones use the metastore's own expression class
    assert props.get("metastore.thrift.bind.host") == ("127.0.0.1" if version == "4.0" else None)
    assert (version in hms.LOOPBACK_ONLY) == (version == "4.0")
    if version != "4.0":
        assert hms.DEFAULT_EXPRESSION_PROXY in props.values()
    # the schema Hive's own scripts make, created before the first start only, then verified
    assert props["datanucleus.schema.autoCreateAll"] == "false"
    assert no_jdk_needed == [hms.SCHEMA_VERSIONS[version]]
    (st.data / "hms" / "metastore_db").mkdir(parents=True)
    hms.prepare_hms(st)
    assert no_jdk_needed == [hms.SCHEMA_VERSIONS[version]]
    assert props["javax.jdo.option.ConnectionURL"].startswith("jdbc:derby:;databaseName=")
    assert site(conf / "core-site.xml")["fs.s3a.impl"] == "org.apache.hadoop.fs.s3a.S3AFileSystem"
    assert argv[0] == "/jdk/bin/java"
    assert argv[argv.index("-cp") + 1] == f"{conf}:{st.lib / f'hms-{version}'}/*"
    assert argv[-1] == "org.apache.hadoop.hive.metastore.HiveMetaStore"
    assert env == {"HADOOP_USER_NAME": "hdfs"}


def scripts(tmp_path: Path, full: list[str], order: list[str]) -> Path:
    for v in full:
        (tmp_path / f"hive-schema-{v}.derby.sql").write_text("")
    (tmp_path / "upgrade.order.derby").write_text("\n".join(order) + "\n")
    return tmp_path


def test_a_schema_without_its_own_script_is_reached_by_upgrades(tmp_path: Path) -> None:
    d = scripts(
        tmp_path,
        ["1.2.0", "3.1.0", "4.0.0"],
        ["1.2.0-to-2.0.0", "2.0.0-to-2.1.0", "2.1.0-to-2.2.0", "2.2.0-to-2.3.0", "2.3.0-to-3.0.0",
         "3.0.0-to-3.1.0", "3.2.0-to-4.0.0-alpha-1", "4.0.0-alpha-1-to-4.0.0"],
    )  # fmt: skip
    assert hms.schema_steps(d, "4.0.0") == ("4.0.0", [])
    assert hms.schema_steps(d, "3.1.0") == ("3.1.0", [])
    base, ups = hms.schema_steps(d, "2.3.0")
    assert base == "1.2.0"
    assert [u.name for u in ups] == [
        "upgrade-1.2.0-to-2.0.0.derby.sql",
        "upgrade-2.0.0-to-2.1.0.derby.sql",
        "upgrade-2.1.0-to-2.2.0.derby.sql",
        "upgrade-2.2.0-to-2.3.0.derby.sql",
    ]
    with pytest.raises(StackError, match="cannot make schema 0.9.0"):
        hms.schema_steps(d, "0.9.0")


def test_the_poms_pin_the_releases_the_stack_names() -> None:
    poms = _poms()
    root = poms["pom.xml"].decode()
    for version, release in HMS_RELEASES.items():
        assert f"hms-{version}/pom.xml" in poms
        assert f"<module>hms-{version}</module>" in root
        prop = f"hive{version[0]}.version"
        assert re.search(rf"<{prop}>{re.escape(release)}</{prop}>", root), prop
        module = poms[f"hms-{version}/pom.xml"].decode()
        assert f"${{{prop}}}" in module
        assert f"<outputDirectory>${{stack.lib}}/hms-{version}</outputDirectory>" in module


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Hive Metastore version '9.9'"):
        Stack(hms_version="9.9")


def write_endpoints(tmp_path: Path, **ep: Any) -> None:
    (tmp_path / "endpoints.json").write_text(json.dumps({"ports": {"hms": 9083}, "pids": {}, **ep}))


def test_a_running_stack_of_another_version_is_not_reused(tmp_path: Path) -> None:
    write_endpoints(tmp_path, hms_version="2.3")
    st = Stack(dir=tmp_path, hms_version="3.1")
    assert not st.is_running()
    assert st.hms == "3.1" and st.ports == {}  # nothing of the other stack adopted


def test_no_version_asked_for_means_the_running_stacks(tmp_path: Path) -> None:
    write_endpoints(tmp_path, hms_version="2.3")
    st = Stack(dir=tmp_path)
    st.is_running()  # its processes are not there, but its version is what a restart runs
    assert st.hms == "2.3"
    write_endpoints(tmp_path)  # written before there was a choice
    st = Stack(dir=tmp_path)
    st.is_running()
    assert st.hms == DEFAULT_HMS_VERSION == "4.0"
    assert Stack(dir=tmp_path / "none").hms == "4.0"


@pytest.mark.parametrize("version", [v for v in HMS_VERSIONS if v not in hms.LOOPBACK_ONLY])
def test_the_wan_link_is_refused_with_an_hms_on_every_interface(tmp_path: Path, version: str) -> None:
    st = Stack(dir=tmp_path, wan={"rtt_ms": 30, "mbit": 200}, hms_version=version)
    with pytest.raises(StackError, match=f"Hive {version} has no bind-host setting"):
        st.up()
    assert not (tmp_path / "lib").exists()  # refused before installing or starting anything


def test_stack_up_takes_the_version_or_the_environment() -> None:
    from click.testing import CliRunner

    from metaproxy_devstack.cli import stack

    out = CliRunner().invoke(stack, ["up", "--help"]).output
    assert "--hms [2.3|3.1|4.0]" in out and "METAPROXY_HMS" in out and "default: 4.0" in out
    refused = CliRunner().invoke(stack, ["up", "--hms", "9.9"])
    assert refused.exit_code == 2 and "9.9" in refused.output
    refused = CliRunner().invoke(stack, ["up"], env={"METAPROXY_HMS": "2.2"})
    assert refused.exit_code == 2 and "2.2" in refused.output

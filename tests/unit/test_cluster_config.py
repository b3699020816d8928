"""The gateway cluster without processes: ``[cluster]`` in the config, one node's own config,
the path a load request is hashed by, the cluster's totals, the node label on the metrics, and
the stack's cluster: its config, HAProxy's config and which components run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from metaproxy.admin import Labelled
from metaproxy.cache.cluster import ClusterError, merge_reports, node_config, nodes, object_path
from metaproxy.config import ConfigError, parse_config

pytestmark = pytest.mark.unit

CLUSTER = {
    "gateway": {"port": 9185, "admin_port": 9186, "disk": {"path": "/var/mp/cache", "capacity": "1GiB"}},
    "cluster": {
        "endpoint": "http://lb:9190/",
        "node": [
            {"name": "g1", "host": "10.0.0.1", "port": 9200, "admin_port": 9201},
            {"name": "g2", "host": "10.0.0.2", "port": 9200, "admin_port": 9201, "disk_path": "/ssd/g2"},
        ],
    },
}


def test_cluster_section_lists_nodes() -> None:
    cfg = parse_config(CLUSTER, "t.toml")
    assert cfg.cluster.endpoint == "http://lb:9190"
    assert [n.name for n in cfg.cluster.nodes] == ["g1", "g2"]
    assert [n.admin for n in nodes(cfg)] == ["http://10.0.0.1:9201", "http://10.0.0.2:9201"]
    assert parse_config({}, "t.toml").cluster.nodes == ()


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"node": [{"name": "g1", "port": 1, "admin_port": 2}] * 2}, "node"),
        ({"node": [{"name": "g 1", "port": 1, "admin_port": 2}]}, "name"),
        ({"node": [{"name": "g1", "port": 1}]}, "admin_port"),
        ({"node": [{"name": "g1", "port": 1, "admin_port": 2, "weight": 3}]}, "weight"),
    ],
)
def test_bad_cluster_sections_are_refused(bad: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_config({"cluster": bad}, "t.toml")


def test_a_node_runs_with_its_own_address_ports_and_disk_tier() -> None:
    cfg = parse_config(CLUSTER, "t.toml")
    g1, g2 = node_config(cfg, "g1"), node_config(cfg, "g2")
    assert (g1.gateway.host, g1.gateway.port, g1.gateway.admin_port) == ("10.0.0.1", 9200, 9201)
    assert g1.proxy.admin_host == "10.0.0.1"  # the balancer checks /health there
    assert g1.gateway.disk.path == "/var/mp/cache-g1"
    assert g2.gateway.disk.path == "/ssd/g2"
    assert g1.gateway.memory == cfg.gateway.memory and g1.mounts == cfg.mounts
    with pytest.raises(ClusterError, match="g3"):
        node_config(cfg, "g3")


def test_one_gateway_is_one_node() -> None:
    cfg = parse_config({"gateway": {"port": 1, "admin_port": 2}}, "t.toml")
    assert [(n.name, n.s3, n.admin) for n in nodes(cfg)] == [
        ("local", "http://127.0.0.1:1", "http://127.0.0.1:2")
    ]


@pytest.mark.parametrize(
    "key", ["tpcds/store_sales/ss_sold_date_sk=2451000/part-0.parquet", "a b/c+d/é~x", "t/(1)/k,v;w"]
)
def test_a_load_request_has_the_path_an_s3_client_sends(key: str) -> None:
    """The balancer hashes the raw path: a load must be spelled as botocore spells the GET."""
    import botocore.session

    s3 = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://gw:1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    seen: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        seen.append(request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0])
        raise RuntimeError("captured")

    s3.meta.events.register("before-send.s3.GetObject", capture)
    with pytest.raises(RuntimeError, match="captured"):
        s3.get_object(Bucket="metaproxy", Key=key)
    assert object_path("metaproxy", key) == "/" + seen[0]


def test_totals_add_nodes_up_and_name_those_not_answering() -> None:
    one = {
        "tiers": {"memory_used": 10, "memory_capacity": 100},
        "bytes_from_memory": 30,
        "bytes_from_disk": 10,
        "bytes_from_ufs": 10,
        "bytes_read_per_ufs": {"hdfs": 10},
    }
    total = merge_reports({"g1": one, "g2": one, "g3": {"error": "refused"}})
    assert total["tiers"] == {"memory_used": 20, "memory_capacity": 200}
    assert total["bytes_read_per_ufs"] == {"hdfs": 20}
    assert total["hit_ratio"] == pytest.approx(0.8)
    assert (total["nodes"], total["nodes_answering"]) == (3, 2)
    assert total["nodes_not_answering"] == {"g3": "refused"}


def test_every_metric_of_a_node_carries_its_name() -> None:
    reg = CollectorRegistry()
    c = Counter("things", "things done", ["op"], registry=reg)
    c.labels("get").inc()
    text = generate_latest(Labelled(reg, {"node": "g2"})).decode()  # type: ignore[arg-type]
    assert 'things_total{node="g2",op="get"} 1.0' in text
    assert "node=" not in generate_latest(reg).decode()


# -- the stack's cluster ------------------------------------------------------------------------


def test_stack_with_three_gateways_writes_cluster_config_and_haproxy(tmp_path: Path) -> None:
    from metaproxy.config import load_config
    from metaproxy_devstack.components.cluster import gateway_url, haproxy_config
    from metaproxy_devstack.components.services import stack_config
    from metaproxy_devstack.launcher import Stack

    st = Stack(dir=tmp_path, gateways=3)
    names = [c.name for c in st.components()]
    assert [n for n in names if n.startswith("gateway")] == ["gateway", "gateway2", "gateway3"]
    assert names[-1] == "balancer"
    cfg = load_config(stack_config(st))
    assert [n.name for n in cfg.cluster.nodes] == ["g1", "g2", "g3"]
    assert cfg.cluster.endpoint == gateway_url(st) == f"http://127.0.0.1:{st.port('balancer')}"
    assert cfg.gateway.port == cfg.cluster.nodes[0].port  # node 1 is the stack's gateway
    text = haproxy_config(st)
    for i, n in enumerate(cfg.cluster.nodes, 1):
        assert f"server g{i} 127.0.0.1:{n.port} id {i} check port {n.admin_port}" in text
        assert text.count(f"server g{i} 127.0.0.1:{n.port} id {i} track objects/g{i}") == 2
    assert "balance uri\n    hash-type consistent" in text and "balance uri whole" in text
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if Path(binary).exists():  # HAProxy itself accepts it
        (tmp_path / "h.cfg").write_text(text)
        r = subprocess.run(
            [binary, "-c", "-q", "-f", str(tmp_path / "h.cfg")], capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr


def test_one_gateway_stack_is_as_before(tmp_path: Path) -> None:
    from metaproxy.config import load_config
    from metaproxy_devstack.components.cluster import gateway_url
    from metaproxy_devstack.components.services import stack_config
    from metaproxy_devstack.launcher import Stack

    st = Stack(dir=tmp_path)
    assert "balancer" not in [c.name for c in st.components()]
    text = stack_config(st).read_text()
    assert "[cluster]" not in text
    assert load_config(stack_config(st)).cluster.nodes == ()
    assert gateway_url(st) == f"http://127.0.0.1:{st.port('gateway')}"

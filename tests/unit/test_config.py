"""The config file is parsed once into typed objects; a bad key gets one precise error."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from metaproxy.config import (
    Config,
    ConfigError,
    config_keys,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_parses() -> None:
    cfg = load_config(ROOT / "etc" / "metaproxy.toml")
    assert cfg.proxy.listeners[0].profile in ("cloud", "onprem", "passthrough")
    assert cfg.gateway.block_size >= 64 * 1024
    # relative paths in etc/metaproxy.toml resolve against the deployment root, not etc/
    assert not cfg.state_path.startswith(str(ROOT / "etc"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4MiB", 4 << 20), ("512MB", 512 << 20), ("1G", 1 << 30), (1234, 1234), ("10 KiB", 10240)],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("30s", 30), ("1m", 60), ("2h", 7200), ("7d", 604800), (5, 5)]
)
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"gateway": {"block_size": "huge"}}, "[gateway] block_size"),
        ({"gateway": {"block_size": "1KiB"}}, "between 64KiB and 64MiB"),
        ({"gateway": {"port": "80"}}, "[gateway] port: expected a int"),
        ({"gateway": {"bucket": "Bad_Bucket"}}, "[gateway] bucket"),
        ({"gateway": {"io_threads": 0}}, "[gateway] io_threads: expected a number of threads from 1 to 1024"),
        ({"metastore": {"uris": ["http://x"]}}, "[metastore] uris"),
        ({"metastore": {"writable_databases": ["("]}}, "regular expressions"),
        ({"proxy": {"listener": [{"profile": "lan"}]}}, "[proxy.listener.0] profile: expected one of cloud"),
        ({"proxy": {"colour": "blue"}}, "[proxy]: unknown key 'colour'"),
        ({"mount": [{"path": "tpcds", "ufs": "hdfs://nn/x"}]}, "[mount.0] path"),
        ({"mount": [{"path": "/t", "ufs": "hdfs://nn/x", "create_target": "s3"}]}, "[mount.0] create_target"),
        ({"migrate": {"target": "hdfs://nn/x"}}, "[migrate] target"),
        ({"s3": {"secret_key_env": "not a name"}}, "[s3] secret_key_env"),
        ({"s3": {"secret_key_env": "X", "secret_key": "y"}}, "[s3] secret_key: expected either"),
        ({"nonsense": 1}, "unknown key 'nonsense'"),
        ({"gateway": {"memory": {"path": "x"}}}, "[gateway.memory]: unknown key 'path'"),
        ({"state": {"path": "x", "size": 1}}, "[state]: unknown key 'size'"),
        (
            {"state": {"url": "mysql://h/db"}},
            "[state] url: expected a postgresql://user@host:port/database URL",
        ),
        ({"state": {"url": "postgresql://u@h:5432"}}, "[state] url: expected a URL that names the database"),
        ({"state": {"url": "postgresql://u@h:port/db"}}, "[state] url: expected a postgresql://"),
        ({"migrate": {"lease": "0s"}}, "[migrate] lease: expected between 1s and 1d"),
        ({"mount": [{"path": "/t"}]}, "[mount.0] ufs: expected a value, got nothing"),
        (
            {"mount": [{"path": "/t", "ufs": "hdfs://nn/a"}, {"path": "/t/", "ufs": "hdfs://nn/b"}]},
            "mount: expected each",
        ),
    ],
)
def test_bad_keys_are_named(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "test.toml")
    assert needle in str(e.value)
    assert str(e.value).startswith("test.toml: ")


def test_config_is_frozen_and_hides_secrets() -> None:
    cfg = parse_config({"s3": {"access_key": "AKIDVISIBLE", "secret_key": "s3cr3t-value"}}, "t.toml")
    with pytest.raises(AttributeError):
        cfg.s3.secret_key = "x"  # type: ignore[misc]
    assert "s3cr3t-value" not in repr(cfg)
    assert cfg.s3.secret_key == "s3cr3t-value"


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MP_TEST_SECRET", "from-env")
    cfg = parse_config({"gateway": {"secret_key_env": "MP_TEST_SECRET"}}, "t.toml")
    assert cfg.gateway.secret_key == "from-env"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_listing_refresh_window() -> None:
    assert parse_config({}, "t.toml").gateway.refresh_listings_for_s == 60.0
    off = parse_config({"gateway": {"refresh_listings_for": "0s"}}, "t.toml")
    assert off.gateway.refresh_listings_for_s == 0.0
    with pytest.raises(ConfigError, match="refresh_listings_for"):
        parse_config({"gateway": {"refresh_listings_for": "soon"}}, "t.toml")


def _example_keys(text: str) -> list[str]:
    """The keys etc/metaproxy.toml shows, set or commented out, as ``section.key`` by the
    ``[section]`` or ``[[array]]`` block (itself perhaps commented out) each line is in."""
    section, keys = "", []
    for line in text.splitlines():
        if header := re.fullmatch(r"#?\s*\[\[?([\w.]+)\]\]?\s*(#.*)?", line):
            section = header.group(1)
        elif key := re.match(r"#?\s*(\w+)\s*=", line):
            keys.append(f"{section}.{key.group(1)}" if section else key.group(1))
    return keys


def test_example_config_documents_every_key() -> None:
    shown = _example_keys((ROOT / "etc" / "metaproxy.toml").read_text())
    missing = [k for k in config_keys() if k not in shown]
    assert not missing, f"keys the parser reads but etc/metaproxy.toml does not show: {missing}"
    stale = sorted(set(shown) - set(config_keys()))
    assert not stale, f"keys etc/metaproxy.toml shows but the parser does not read: {stale}"


def test_config_keys() -> None:
    keys = config_keys()
    assert len(keys) == len(set(keys))
    for key in (
        "log_level",
        "state.path",
        "metastore.connect_timeout",
        "metastore.database_map",
        "proxy.listener.port",
        "gateway.memory.capacity",
        "gateway.disk.path",
        "s3.secret_key",
        "s3.secret_key_env",
        "mount.path",
    ):
        assert key in keys
    assert "gateway.memory.path" not in keys  # only the disk tier has a path


def _assert_defaults(parsed: Any, default: Any, base: Path, where: str = "") -> None:
    for f in fields(default):
        if "key" not in f.metadata:
            continue
        got, want = getattr(parsed, f.name), getattr(default, f.name)
        name = where + f.metadata["key"]
        if f.metadata["kind"] == "section":
            _assert_defaults(got, want, base, name + ".")
            continue
        if f.metadata["kind"] == "path" and want:
            want = str((base / want).resolve())
        assert got == want, f"{name}: parsed {got!r}, but the dataclass says {want!r}"


def test_parser_defaults_are_the_dataclass_defaults(tmp_path: Path) -> None:
    _assert_defaults(parse_config({}, "t.toml", tmp_path), Config(source="t.toml"), tmp_path)


def test_derived_defaults_follow_other_keys() -> None:
    gw = parse_config({"gateway": {"host": "10.0.0.1", "port": 9999}}, "t.toml").gateway
    assert gw.endpoint == "http://10.0.0.1:9999"
    small_disk = parse_config({"gateway": {"disk": {"capacity": "1GiB"}}}, "t.toml").gateway
    assert small_disk.pinned_max == 1 << 30
    no_disk = parse_config({"gateway": {"disk": {"capacity": 0}, "memory": {"capacity": "2GiB"}}}, "t.toml")
    assert no_disk.gateway.pinned_max == 2 << 30
    with pytest.raises(ConfigError, match="pinned_max: expected at most the disk tier's capacity"):
        parse_config({"gateway": {"disk": {"capacity": "1GiB"}, "pinned_max": "2GiB"}}, "t.toml")
    union = {"path": "/sales/", "ufs": ["hdfs://nn/sales", "s3://lake/sales"]}
    (mount,) = parse_config({"mount": [union]}, "t.toml").mounts
    assert (mount.path, mount.read_priority, mount.create_target) == ("/sales", ("hdfs", "s3"), "hdfs")


def test_a_state_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"state": {"url": "postgresql://u:hunter2@h/db"}}, "test.toml")
    assert "without a password" in str(e.value) and "hunter2" not in str(e.value)
    cfg = parse_config({"state": {"url": "postgresql://u@h:5433/db?sslmode=verify-full"}}, "test.toml")
    assert cfg.state == "postgresql://u@h:5433/db?sslmode=verify-full"
    assert parse_config({"state": {"path": "/x/s.db"}}, "test.toml").state == "/x/s.db"


def test_distcp_copier_keys(tmp_path: Path) -> None:
    default = parse_config({}, "t.toml", tmp_path).migrate
    assert default.copier == "builtin" and default.distcp_framework == "local"
    m = parse_config(
        {
            "migrate": {
                "copier": "distcp",
                "distcp_threshold": "256MiB",
                "distcp_classpath": "lib/distcp",
                "distcp_options": ["-m", "8", "-D", "mapreduce.job.queuename=etl", "-Dx.y=z"],
                "distcp_timeout": "30m",
            }
        },
        "t.toml",
        tmp_path,
    ).migrate
    assert m.distcp_threshold == 256 << 20 and m.distcp_timeout_s == 1800
    assert m.distcp_classpath == str(tmp_path / "lib" / "distcp")  # relative to the deployment
    assert parse_config({"migrate": {"copier": "distcp", "distcp_hadoop": "hadoop"}}, "t.toml").migrate.copier


@pytest.mark.parametrize(
    ("migrate", "needle"),
    [
        ({"copier": "fast"}, "[migrate] copier: expected one of builtin, distcp, got 'fast'"),
        ({"copier": "distcp"}, "[migrate] distcp_classpath: expected exactly one of distcp_hadoop"),
        (
            {"copier": "distcp", "distcp_hadoop": "hadoop", "distcp_classpath": "/opt/jars"},
            "[migrate] distcp_classpath: expected exactly one of distcp_hadoop",
        ),
        ({"distcp_threshold": "big"}, "[migrate] distcp_threshold: expected a size"),
        ({"distcp_framework": "k8s"}, "[migrate] distcp_framework: expected one of local, yarn"),
        ({"distcp_timeout": "0s"}, "[migrate] distcp_timeout: expected a duration of at least 1s"),
        ({"distcp_options": ["-update"]}, "[migrate] distcp_options: expected DistCp options other than"),
        ({"distcp_options": "-f"}, "(the copier sets those), got '-f'"),
        ({"distcp_options": ["-Dnovalue"]}, "expected -Dkey=value properties, got '-Dnovalue'"),
        ({"distcp_options": ["-m", "2", "-D"]}, "expected a key=value after -D"),
        ({"distcp_options": [1]}, "[migrate] distcp_options: expected a list of strings"),
    ],
)
def test_bad_distcp_keys_are_named(migrate: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"migrate": migrate}, "test.toml")
    assert needle in str(e.value)


@pytest.mark.parametrize("option", ["-Dfs.s3a.secret.key=hunter2", "fs.s3a.access.key=hunter2"])
def test_distcp_options_refuse_secrets_without_showing_them(option: str) -> None:
    options = [option] if option.startswith("-D") else ["-D", option]
    with pytest.raises(ConfigError, match="no secrets on the command line") as e:
        parse_config({"migrate": {"distcp_options": options}}, "test.toml")
    assert "hunter2" not in str(e.value)

"""The config file is parsed once into typed objects; a bad key gets one precise error."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaproxy.config import ConfigError, load_config, parse_config, parse_duration, parse_size

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

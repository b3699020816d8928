"""The command line prints what users typed literally, and JSON for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from metaproxy.cli import cli

pytestmark = pytest.mark.unit

POLICY = "ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"


@pytest.fixture
def run(tmp_path: Path):  # noqa: ANN201 - a small test helper
    config = tmp_path / "metaproxy.toml"
    config.write_text(
        f'[state]\npath = "{tmp_path}/state.db"\n\n[[mount]]\npath = "/tpcds"\nufs = "hdfs://nn:8020/w/tpcds"\n'
    )

    def invoke(*args: str) -> Result:
        result = CliRunner().invoke(cli, ["--config", str(config), *args], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        return result

    return invoke


def test_every_command_that_shows_a_policy_shows_it_as_written(run) -> None:  # noqa: ANN001
    assert POLICY in run("policy", "add", "/tpcds/store_sales", POLICY, "--name", "sales").output
    assert POLICY in run("policy", "list").output
    listed = json.loads(run("policy", "list", "--json").output)
    assert [(p["name"], p["path"], p["expr"]) for p in listed] == [("sales", "/tpcds/store_sales", POLICY)]


def test_status_and_mounts_as_json(run) -> None:  # noqa: ANN001
    assert json.loads(run("policy", "status", "--json").output) == {}
    mounts = json.loads(run("mount", "list", "--json").output)
    assert mounts == [
        {
            "path": "/tpcds",
            "ufs": ["hdfs://nn:8020/w/tpcds"],
            "read_priority": ["hdfs"],
            "create_target": "hdfs",
            "declared_in": mounts[0]["declared_in"],
        }
    ]
    run("mount", "add", "/lake", "hdfs://nn:8020/w/lake", "s3://b/lake", "--read-priority", "s3,hdfs")
    assert [m["declared_in"] for m in json.loads(run("mount", "list", "--json").output)] == [
        "state",
        mounts[0]["declared_in"],
    ]
    assert "s3://b/lake" in run("mount", "list").output


def test_state_show_and_copy(run, tmp_path: Path) -> None:  # noqa: ANN001
    run("policy", "add", "/tpcds/store_sales", POLICY, "--name", "sales")
    shown = json.loads(run("state", "show", "--json").output)
    assert shown["backend"] == "sqlite" and shown["rows"]["policies"] == 1 and shown["schema_version"] >= 3
    target = tmp_path / "copy.db"
    assert "copied 1 rows" in run("state", "copy", str(target)).output
    again = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "metaproxy.toml"), "state", "copy", str(target)]
    )
    assert again.exit_code != 0 and "already holds 1 rows" in str(again.exception)

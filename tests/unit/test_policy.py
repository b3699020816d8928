"""Migration policy expressions: the grammar, the errors that point at the bad token, storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from metaproxy.cli import cli
from metaproxy.migrate.policy import (
    Condition,
    PolicyError,
    add_policy,
    list_policies,
    parse_policy,
    remove_policy,
)
from metaproxy.state import open_state

pytestmark = pytest.mark.unit


def test_the_alluxio_example_parses() -> None:
    p = parse_policy("ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)")
    assert p.action == "ufsMigrate"
    assert p.conditions == (Condition("olderThan", 60.0),)
    assert p.store == ("s3",) and p.remove == ("hdfs",)
    assert str(p) == "ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("30s", 30), ("1m", 60), ("2h", 7200), ("7d", 604800), ("500ms", 0.5), ("0s", 0)],
)
def test_durations(expr: str, seconds: float) -> None:
    p = parse_policy(f"ufsMigrate(olderThan({expr}), UFS[s3]:STORE)")
    assert p.conditions[0].seconds == seconds


def test_conditions_combine_and_spaces_do_not_matter() -> None:
    p = parse_policy(" ufsMigrate ( olderThan(1h) & unusedFor(7d) ,UFS[ s3a ] : STORE ) ")
    assert p.conditions == (Condition("olderThan", 3600), Condition("unusedFor", 604800))
    assert p.store == ("s3",)
    assert parse_policy(str(p)) == p


@pytest.mark.parametrize(
    ("expr", "bad", "says"),
    [
        ("ufsMigrate(olderThan(1x), UFS[s3]:STORE)", "1x", "not a duration"),
        ("ufsMigrate(olderThan(), UFS[s3]:STORE)", ")", "expected a duration"),
        ("ufsMigrate(newerThan(1m), UFS[s3]:STORE)", "newerThan", "unknown condition"),
        ("ufsCopy(olderThan(1m), UFS[s3]:STORE)", "ufsCopy", "unknown action"),
        ("ufsMigrate(olderThan(1m), UFS[gcs]:STORE)", "gcs", "unknown UFS"),
        ("ufsMigrate(olderThan(1m), UFS[s3]:COPY)", "COPY", "unknown operation"),
        ("ufsMigrate(olderThan(1m) UFS[s3]:STORE)", "UFS", "expected ',' or ')'"),
        ("ufsMigrate(olderThan(1m), UFS[s3]:STORE) extra", "extra", "after the policy"),
        ("ufsMigrate(olderThan(1m), UFS[s3]:STORE, UFS[s3]:REMOVE)", "s3]:REMOVE", "twice"),
        ("ufsMigrate(olderThan(1m), UFS[s3]:STORE;", ";", "unexpected character"),
        ("ufsMigrate(olderThan(1m), s3:STORE)", "s3", "expected UFS[name]"),
    ],
)
def test_errors_point_at_the_bad_token(expr: str, bad: str, says: str) -> None:
    with pytest.raises(PolicyError) as e:
        parse_policy(expr)
    assert says in str(e.value)
    assert expr[e.value.pos :].startswith(bad)
    caret_line = str(e.value).splitlines()[-1]
    assert caret_line.index("^") - 2 == e.value.pos


def test_truncated_and_storeless_policies() -> None:
    with pytest.raises(PolicyError, match="got the end of the policy"):
        parse_policy("ufsMigrate(olderThan(1m), UFS[s3]:STORE")
    with pytest.raises(PolicyError, match="needs a UFS"):
        parse_policy("ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE)")
    with pytest.raises(PolicyError):
        parse_policy("")


def test_policies_are_stored(tmp_path: Path) -> None:
    db = open_state(tmp_path / "state.db")
    add_policy(db, "sales", "/tpcds/store_sales/", "ufsMigrate(olderThan(1m), UFS[s3]:STORE)")
    with pytest.raises(ValueError, match="exists already"):
        add_policy(db, "sales", "/tpcds/x", "ufsMigrate(olderThan(1m), UFS[s3]:STORE)")
    with pytest.raises(ValueError, match="mount path"):
        add_policy(db, "evil", "/tpcds/../etc", "ufsMigrate(olderThan(1m), UFS[s3]:STORE)")
    rows = list_policies(open_state(tmp_path / "state.db"))
    assert [(r.name, r.path) for r in rows] == [("sales", "/tpcds/store_sales")]
    remove_policy(db, "sales")
    assert list_policies(db) == []
    with pytest.raises(ValueError, match="no policy"):
        remove_policy(db, "sales")


def test_policy_cli(tmp_path: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text(f'[state]\npath = "{tmp_path}/state.db"\n')
    run = CliRunner().invoke
    r = run(
        cli,
        [
            "--config",
            str(conf),
            "policy",
            "add",
            "/tpcds/store_sales",
            "ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)",
        ],
    )
    assert r.exit_code == 0 and "policy tpcds-store_sales" in r.output, r.output
    r = run(cli, ["--config", str(conf), "policy", "add", "/x", "ufsMigrate(olderThan(1q), UFS[s3]:STORE)"])
    assert r.exit_code != 0 and "bad policy" in r.output and "^" in r.output
    r = run(cli, ["--config", str(conf), "policy", "list"], terminal_width=200)
    assert "tpcds-store_sales" in r.output and "olderThan(1m)" in r.output
    r = run(cli, ["--config", str(conf), "policy", "remove", "tpcds-store_sales"])
    assert r.exit_code == 0
    assert "no policies" in run(cli, ["--config", str(conf), "policy", "list"]).output


def test_conditions_decide_on_file_times_and_read_times() -> None:
    import time

    from metaproxy.migrate.loop import Migrator
    from metaproxy.ufs import FileStatus

    now_ms = int(time.time() * 1000)
    old = [FileStatus("a", 1, now_ms - 3_600_000), FileStatus("b", 1, now_ms - 7_200_000)]
    fresh = [*old, FileStatus("c", 1, now_ms - 10_000)]
    older = parse_policy("ufsMigrate(olderThan(30m), UFS[s3]:STORE)")
    assert Migrator.unmet(older, old) == ""
    assert "olderThan" in Migrator.unmet(older, fresh)
    assert Migrator.unmet(older, []) == "no files"
    unused = parse_policy("ufsMigrate(olderThan(0s) & unusedFor(1h), UFS[s3]:STORE)")
    assert Migrator.unmet(unused, old, last_read=None) == ""  # never read through the gateway
    assert Migrator.unmet(unused, old, last_read=time.time() - 7200) == ""
    assert "unusedFor" in Migrator.unmet(unused, old, last_read=time.time() - 60)


def test_cache_load_policies() -> None:
    p = parse_policy("cacheLoad(newerThan(7d), pinFor(1d))")
    assert (p.action, p.newer_than(), p.pin_s, p.migrates) == ("cacheLoad", 604800, 86400, False)
    assert str(p) == "cacheLoad(newerThan(7d), pinFor(1d))" and parse_policy(str(p)) == p
    assert parse_policy("cacheLoad(newerThan(2h))").pin_s == 0


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("cacheLoad(olderThan(1d))", "unknown condition 'olderThan' for cacheLoad"),
        ("cacheLoad(newerThan(0s))", "newerThan needs a positive duration"),
        ("cacheLoad(newerThan(1d), UFS[s3]:STORE)", "expected pinFor"),
        ("cacheLoad(newerThan(1d), pinFor(1h), pinFor(2h))", "pinFor appears twice"),
        ("ufsMigrate(newerThan(1d), UFS[s3]:STORE)", "unknown condition 'newerThan' for ufsMigrate"),
    ],
)
def test_cache_load_mistakes_are_pointed_at(expr: str, says: str) -> None:
    with pytest.raises(PolicyError, match=says) as e:
        parse_policy(expr)
    assert "^" in str(e.value)

"""The DistCp runner without Hadoop: how files become jobs, what a job is given (no secret on
its command line, the keys in a private file), and how a failed or stuck job is reported.
A stand-in ``hadoop`` command (a shell script) records what it was called with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from metaproxy.config import Config, parse_config
from metaproxy.migrate.distcp import DistCp, DistCpError, groups, s3a

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Key-value"


def test_files_become_one_job_per_folder() -> None:
    src, dst = "hdfs://nn:8020/w/t/d=1", "s3://b/t/d=1/a1-x"
    flat = [(f"{src}/p-{i}.parquet", f"{dst}/p-{i}.parquet") for i in range(3)]
    assert groups(flat) == [([s for s, _ in flat], dst)]
    # a lone file is given its full destination: DistCp copies it *as* a missing target
    assert groups(flat[:1]) == [([flat[0][0]], flat[0][1])]
    nested = [*flat, (f"{src}/sub/q.parquet", f"{dst}/sub/q.parquet")]
    assert groups(nested) == [
        ([s for s, _ in flat], dst),
        ([f"{src}/sub/q.parquet"], f"{dst}/sub/q.parquet"),
    ]
    renamed = [*flat[:2], (f"{src}/x", f"{dst}/y")]
    assert groups(renamed)[-1] == ([f"{src}/x"], f"{dst}/y")
    assert s3a("s3://b/k") == "s3a://b/k" and s3a("s3a://b/k") == "s3a://b/k"


def _config(tmp_path: Path, script: str, **migrate: Any) -> Config:
    hadoop = tmp_path / "hadoop"
    hadoop.write_text("#!/bin/bash\n" + script)
    hadoop.chmod(0o755)
    return parse_config(
        {
            "s3": {"endpoint": "http://127.0.0.1:9", "access_key": "AKID-visible", "secret_key": SECRET},
            "migrate": {
                "copier": "distcp",
                "distcp_hadoop": str(hadoop),
                "distcp_log_dir": str(tmp_path / "logs"),
                "parallelism": 3,
                **migrate,
            },
        },
        "t.toml",
        tmp_path,
    )


# records its arguments, the mode and content of the -conf file, and says the secret aloud
RECORDER = (
    """
echo "$@" > "$(dirname "$0")/argv"
conf=$(echo "$@" | sed -n 's/.*-conf \\([^ ]*\\).*/\\1/p')
stat -c %a "$conf" > "$(dirname "$0")/mode"
cp "$conf" "$(dirname "$0")/conf.xml"
echo "the job saw fs.s3a.secret.key="""
    + SECRET
    + """ and went on"
"""
)


def test_a_job_gets_the_keys_in_a_private_file_never_on_its_command_line(tmp_path: Path) -> None:
    runner = DistCp(_config(tmp_path, RECORDER))
    files = [(f"hdfs://nn/w/d=1/p-{i}", f"s3://b/t/a1/p-{i}") for i in range(2)]
    run = runner.copy(files, "unit-7-a1")
    argv = (tmp_path / "argv").read_text().split()
    assert argv[0] == "distcp"
    assert argv[-1] == "s3a://b/t/a1" and argv[-3] == "-f"
    assert {"-overwrite", "-direct"} <= set(argv) and argv[argv.index("-m") + 1] == "2"
    assert SECRET not in " ".join(argv) and "AKID-visible" not in " ".join(argv)
    assert (tmp_path / "mode").read_text().strip() == "600"
    conf = (tmp_path / "conf.xml").read_text()
    assert f"<name>fs.s3a.secret.key</name><value>{SECRET}</value>" in conf
    assert "<name>fs.s3a.endpoint</name><value>http://127.0.0.1:9</value>" in conf
    assert "<name>mapreduce.framework.name</name><value>local</value>" in conf
    assert "<name>fs.s3a.path.style.access</name><value>true</value>" in conf
    # the private folder is gone with the job; the log stays, the secret masked in it
    conf_path = Path(" ".join(argv).split("-conf ", 1)[1].split()[0])
    assert not conf_path.parent.exists()
    log = run.log.read_text()
    assert run.log.name.startswith("unit-7-a1-") and run.files == 2
    assert "fs.s3a.secret.key=*** and went on" in log and SECRET not in log


def test_yarn_and_more_options(tmp_path: Path) -> None:
    options = ["-m", "40", "-Dk=v", "-bandwidth", "50", "-D", "q=etl"]
    runner = DistCp(_config(tmp_path, RECORDER, distcp_framework="yarn", distcp_options=options))
    runner.copy([("hdfs://nn/w/a", "s3://b/t/a")], "u")
    argv = (tmp_path / "argv").read_text().split()
    assert argv.count("-m") == 1 and argv[argv.index("-m") + 1] == "40"
    # Hadoop's generic options come before DistCp's own, or DistCp takes them for sources
    assert argv[1:3] == ["-conf", argv[2]] and argv[3:6] == ["-Dk=v", "-D", "q=etl"]
    assert argv.index("-bandwidth") > argv.index("-overwrite")
    conf = (tmp_path / "conf.xml").read_text()
    assert "<value>yarn</value>" in conf and "hadoop.tmp.dir" not in conf  # the nodes' own


def test_a_failed_job_says_why_with_its_log(tmp_path: Path) -> None:
    script = 'echo "ERROR tools.DistCp: NoSuchBucket: the bucket is gone"\nfor i in 1 2 3; do echo "\tat Frame$i"; done\nexit 3\n'
    runner = DistCp(_config(tmp_path, script))
    with pytest.raises(DistCpError) as e:
        runner.copy([("hdfs://nn/w/a", "s3://b/t/a")], "u")
    msg = str(e.value)
    assert msg.startswith("DistCp failed (exit 3); log ") and "NoSuchBucket: the bucket is gone" in msg
    assert "Frame" not in msg  # stack frames stay in the log


def test_a_stuck_job_is_stopped_at_its_timeout(tmp_path: Path) -> None:
    runner = DistCp(_config(tmp_path, "echo started\nexec sleep 60\n", distcp_timeout="1s"))
    t0 = time.monotonic()
    with pytest.raises(DistCpError, match=r"ran past \[migrate\] distcp_timeout \(1s\)"):
        runner.copy([("hdfs://nn/w/a", "s3://b/t/a")], "u")
    assert time.monotonic() - t0 < 15


def test_missing_commands_and_jars_are_named(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "exit 0\n", distcp_hadoop="no-such-hadoop-command")
    with pytest.raises(DistCpError, match="distcp_hadoop: no command 'no-such-hadoop-command'"):
        DistCp(cfg).copy([("hdfs://nn/w/a", "s3://b/t/a")], "u")
    cfg = parse_config(
        {"migrate": {"copier": "distcp", "distcp_classpath": str(tmp_path), "distcp_java": "sh"}}, "t.toml"
    )
    with pytest.raises(DistCpError, match="holds no hadoop-distcp jar"):
        DistCp(cfg).copy([("hdfs://nn/w/a", "s3://b/t/a")], "u")

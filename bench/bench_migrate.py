"""Migration throughput beside its baseline, in one run.

* baseline: boto3's transfer manager (``s3transfer``, ``upload_file``) uploading the files from
  local disk to the stack's S3 server, with the same part size and concurrency;
* metaproxy: the migration copier streaming the same bytes from HDFS (WebHDFS) to the same S3
  server, files side by side as the loop copies a unit's files, with a SHA-256 computed while
  reading — copy only, and copy + verify (the files go up in parts, and S3 keeps a multipart
  upload's SHA-256 only as a checksum of its parts' checksums, so verification reads the copy
  back).

Then the three copiers side by side on the same files on HDFS, each to a fresh S3 prefix, for a
set of small files, a set of big ones, and one tiny file (the fixed cost):

* DistCp (``[migrate] copier = "distcp"``): one DistCp job per set on MapReduce's local job
  runner (the stack's ``lib/distcp``), and the same followed by the source's SHA-256 read
  through WebHDFS, which the loop adds to a DistCp copy before it verifies;
* the built-in copier (``metaproxy.migrate.copier.Copier``, SHA-256 while reading), files side
  by side as the loop copies a unit;
* plain boto3: ``upload_fileobj`` streaming each file from WebHDFS, files side by side.

Each reports MB/s and CPU seconds (this process's, plus the DistCp JVM's as a waited-for
child); the tiny file gives each copier its fixed cost per unit, the big set its per-byte rate,
and where DistCp's line crosses the built-in copier's is the unit size above which DistCp is
faster here. Verification, the same whichever copier ran, is left out.

Rounds alternate; the median counts. Results go to ``bench/out/migrate.json``.

    .venv/bin/python bench/bench_migrate.py [--files 4] [--mib 32] [--rounds 3] [--quick]
        [--small 64x256KiB] [--big 4x64MiB] [--distcp-classpath DIR] [--copiers-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from metaproxy.config import Config, S3Config, parse_config, parse_size
from metaproxy.migrate.copier import Copier
from metaproxy.migrate.distcp import DistCp, source_sha256
from metaproxy.ufs.s3 import S3Ufs
from metaproxy.ufs.webhdfs import WebHdfs
from metaproxy_devstack.launcher import Stack

OUT = Path(__file__).resolve().parent / "out"
MiB = 1024 * 1024
PART = 16 * MiB
PARALLEL = 4


def _workspace(stack: dict[str, Any], name: str) -> tuple[Any, WebHdfs, str, Path]:
    """A boto3 client of the stack's S3, its HDFS, a new bucket and a local scratch folder."""
    s3 = boto3.client(
        "s3",
        endpoint_url=stack["s3"],
        aws_access_key_id=stack["s3_access_key"],
        aws_secret_access_key=stack["s3_secret_key"],
        region_name=stack["s3_region"],
    )
    bucket = f"{name}-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    return s3, WebHdfs(stack["webhdfs"]), bucket, Path(tempfile.mkdtemp(prefix=f"{name}-"))


def measure(stack: dict[str, Any], files: int, mib: int, rounds: int) -> dict[str, list[float]]:
    """MB/s per round of each side: s3transfer from local disk, the copier, copier + verify."""
    s3, fs, bucket, work = _workspace(stack, "bench-migrate")
    root = "/bench-migrate"
    size = mib * MiB
    names = [f"f{i}.bin" for i in range(files)]
    for n in names:
        data = os.urandom(size)
        (work / n).write_bytes(data)
        fs.write(f"{root}/{n}", data)
    total = size * len(names)
    target = S3Ufs(
        S3Config(stack["s3"], stack["s3_region"], stack["s3_access_key"], stack["s3_secret_key"]), client=s3
    )
    copier = Copier(fs, target, PART, PARALLEL)
    pool = ThreadPoolExecutor(PARALLEL)
    tc = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=PARALLEL)
    runs: dict[str, list[float]] = {"s3transfer": [], "copy": [], "copy_verify": []}

    def timed(side: str, work: Any) -> Any:
        t0 = time.perf_counter()
        out = work()
        runs[side].append(total / (time.perf_counter() - t0) / 1e6)
        return out

    try:
        for r in range(rounds):
            timed(
                "s3transfer",
                lambda r=r: [
                    s3.upload_file(str(work / n), bucket, f"base/{r}/{n}", Config=tc) for n in names
                ],
            )
            # files side by side, as the migration loop copies the files of a unit
            shas = timed(
                "copy",
                lambda r=r: list(
                    pool.map(lambda n: copier.copy(f"{root}/{n}", size, f"s3://{bucket}/copy/{r}/{n}"), names)
                ),
            )
            assert len(set(shas)) == len(names)

            def copy_verify(n: str, r: int = r) -> None:
                dest = f"s3://{bucket}/verify/{r}/{n}"
                assert copier.verify(dest, size, copier.copy(f"{root}/{n}", size, dest)) == ""

            timed("copy_verify", lambda: list(pool.map(copy_verify, names)))
    finally:
        copier.close()
        pool.shutdown()
        fs.delete(root, recursive=True)
        shutil.rmtree(work, ignore_errors=True)
    return runs


#: the three copiers, in the order each round runs them
WAYS = ("distcp", "distcp_hash", "builtin", "boto3")


def parse_set(text: str) -> tuple[int, int]:
    """``"64x256KiB"`` → (64 files, 262144 bytes each)."""
    n, _, size = text.partition("x")
    return int(n), parse_size(size)


def human(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n / 1024:g} KiB"


def cpu_now() -> tuple[float, float]:
    """CPU seconds so far: this process (user + system), and its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


class FileLike:
    """A WebHDFS stream of ``length`` bytes as the file object boto3 reads (``read()`` too)."""

    def __init__(self, stream: Any, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.stream.read(n) if n else b""
        self.left -= len(data)
        return data


def distcp_config(stack: dict[str, Any], bucket: str, classpath: str, logs: Path) -> Config:
    raw = tomllib.loads(Path(stack["config"]).read_text())
    raw["migrate"] = {
        "target": f"s3://{bucket}/",
        "part_size": f"{PART // MiB}MiB",
        "parallelism": PARALLEL,
        "copier": "distcp",
        "distcp_threshold": 0,
        "distcp_classpath": classpath,
        "distcp_log_dir": str(logs),
    }
    return parse_config(raw, stack["config"])


def measure_copiers(
    stack: dict[str, Any], sets: dict[str, tuple[int, int]], rounds: int, classpath: str
) -> dict[str, Any]:
    """Per set and copier: seconds, MB/s and CPU seconds of each round."""
    s3, fs, bucket, work = _workspace(stack, "bench-copiers")
    config = distcp_config(stack, bucket, classpath, work / "logs")
    distcp = DistCp(config)
    target = S3Ufs(config.s3, client=s3)
    copier = Copier(fs, target, PART, PARALLEL)
    pool = ThreadPoolExecutor(PARALLEL)
    tc = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=PARALLEL)
    hdfs = stack["hdfs"]
    out: dict[str, Any] = {}

    def distcp_copy(pairs: list[tuple[str, str]], job: str) -> None:
        distcp.copy(pairs, job)

    def distcp_hash(pairs: list[tuple[str, str]], job: str, size: int) -> None:
        distcp.copy(pairs, job)
        list(pool.map(lambda p: source_sha256(fs, p[0], size), pairs))

    def builtin(pairs: list[tuple[str, str]], size: int) -> None:
        list(pool.map(lambda p: copier.copy(p[0], size, p[1]), pairs))

    def upload(pair: tuple[str, str], size: int) -> None:
        stream = fs.open_read(pair[0], 0, size)
        try:
            key = pair[1].split("://", 1)[1].split("/", 1)[1]
            s3.upload_fileobj(FileLike(stream, size), bucket, key, Config=tc)
        finally:
            stream.close()

    def plain_boto3(pairs: list[tuple[str, str]], size: int) -> None:
        list(pool.map(lambda p: upload(p, size), pairs))

    def timed(total: int, fn: Any, *args: Any) -> dict[str, float]:
        c0, t0 = cpu_now(), time.perf_counter()
        fn(*args)
        secs = time.perf_counter() - t0
        c1 = cpu_now()
        return {
            "seconds": secs,
            "mb_s": total / secs / 1e6,
            "cpu_self_s": c1[0] - c0[0],
            "cpu_children_s": c1[1] - c0[1],
        }

    try:
        # one untimed job first: the first JVM reads its jars from disk, later ones from the page cache
        warm = f"{hdfs}/bench-copiers/warm-up"
        fs.write(f"{warm}/f.bin", b"x")
        distcp.copy([(f"{warm}/f.bin", f"s3://{bucket}/warm-up/f.bin")], "bench-warm-up")
        fs.delete(warm, recursive=True)
        for name, (count, size) in sets.items():
            root = f"{hdfs}/bench-copiers/{name}"
            names = [f"f{i:04d}.bin" for i in range(count)]
            print(f"  writing the {name} set to HDFS: {count} x {human(size)}", flush=True)
            list(pool.map(lambda n: fs.write(f"{root}/{n}", os.urandom(size)), names))  # noqa: B023
            total = count * size
            runs: dict[str, list[dict[str, float]]] = {w: [] for w in WAYS}
            for r in range(rounds):

                def pairs(way: str, r: int = r, name: str = name) -> list[tuple[str, str]]:
                    return [(f"{root}/{n}", f"s3://{bucket}/{name}/{r}/{way}/{n}") for n in names]  # noqa: B023

                job = f"bench-{name}-{r}"
                runs["distcp"].append(timed(total, distcp_copy, pairs("distcp"), job))
                runs["distcp_hash"].append(
                    timed(total, distcp_hash, pairs("distcp_hash"), job + "-hash", size)
                )
                runs["builtin"].append(timed(total, builtin, pairs("builtin"), size))
                runs["boto3"].append(timed(total, plain_boto3, pairs("boto3"), size))
                print(
                    f"  {name} round {r + 1}: "
                    + ", ".join(f"{w} {runs[w][-1]['mb_s']:.0f} MB/s" for w in WAYS),
                    flush=True,
                )
            copies = target.walk_files(f"s3://{bucket}/{name}")
            assert len(copies) == count * len(WAYS) * rounds, len(copies)  # every copier wrote every file
            med = {w: {k: statistics.median(run[k] for run in runs[w]) for k in runs[w][0]} for w in WAYS}
            out[name] = {
                "files": count,
                "file_bytes": size,
                "total_bytes": total,
                "rounds": runs,
                "median": med,
            }
            fs.delete(root, recursive=True)
    finally:
        copier.close()
        pool.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    out["model"] = crossover(out)
    return out


def crossover(out: dict[str, Any]) -> dict[str, Any]:
    """Per copier, seconds = fixed + bytes / rate: the fixed cost is the tiny set's time (one
    file of 1 KiB: a JVM, a job, a listing for DistCp), the rate the big set's bytes over its
    time less that; and the unit size above which DistCp with the hash the loop adds beats the
    built-in copier (none when its rate is not the better one)."""
    model: dict[str, Any] = {}
    big = out["big"]
    for way in WAYS:
        fixed = out["tiny"]["median"][way]["seconds"]
        rest = big["median"][way]["seconds"] - fixed
        model[way] = {"fixed_s": fixed, "mb_s": big["total_bytes"] / rest / 1e6 if rest > 0 else None}
    d, b = model["distcp_hash"], model["builtin"]
    if d["mb_s"] and b["mb_s"] and d["mb_s"] > b["mb_s"]:
        per_byte = 1 / (b["mb_s"] * 1e6) - 1 / (d["mb_s"] * 1e6)
        model["crossover_bytes"] = max(0.0, (d["fixed_s"] - b["fixed_s"]) / per_byte)
    else:
        model["crossover_bytes"] = None
    return model


def print_copiers(res: dict[str, Any], rounds: int) -> None:
    print(
        f"\ncopiers side by side, HDFS -> S3 (median of {rounds} rounds; CPU: this process + DistCp's JVM):"
    )
    print(
        f"  {'set':<24} {'copier':<22} {'MB/s':>7} {'ratio':>6} {'seconds':>8} {'CPU s':>7} {'CPU s/GB':>9}"
    )
    for name, s in res.items():
        if name == "model":
            continue
        label = f"{name}: {s['files']} x {human(s['file_bytes'])}"
        base = s["median"]["builtin"]["mb_s"]
        for way in WAYS:
            m = s["median"][way]
            cpu = m["cpu_self_s"] + m["cpu_children_s"]
            per_gb = f"{cpu / (s['total_bytes'] / 1e9):9.1f}" if s["total_bytes"] >= MiB else "        -"
            print(
                f"  {label:<24} {way:<22} {m['mb_s']:7.1f} {m['mb_s'] / base:6.2f} {m['seconds']:8.2f}"
                f" {cpu:7.2f} {per_gb}"
            )
            label = ""
    model = res["model"]
    print("  seconds = fixed + bytes / rate (fixed: the tiny set; rate: the big set beyond it):")
    for way in WAYS:
        rate = model[way]["mb_s"]
        shown = f"{rate:7.1f} MB/s" if rate else "    n/a"
        print(f"    {way:<12} fixed {model[way]['fixed_s']:6.2f} s   rate {shown}")
    x = model["crossover_bytes"]
    if x is None:
        print("  crossover: none here - DistCp (+ hash) moves bytes no faster than the built-in copier")
    else:
        print(f"  crossover: DistCp (+ hash) is faster for units above ~{x / MiB:.0f} MiB")


def default_classpath(stack: dict[str, Any]) -> str:
    if os.environ.get("METAPROXY_DISTCP_CLASSPATH"):
        return os.environ["METAPROXY_DISTCP_CLASSPATH"]
    raw = tomllib.loads(Path(stack["config"]).read_text())
    return str(raw.get("migrate", {}).get("distcp_classpath", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and smaller sets")
    ap.add_argument("--small", default="64x256KiB", help="the small-files set: COUNTxSIZE")
    ap.add_argument("--big", default="4x64MiB", help="the big-files set: COUNTxSIZE")
    ap.add_argument("--copier-rounds", type=int, default=3)
    ap.add_argument("--distcp-classpath", default="", help="DistCp's jars (default: the stack's lib/distcp)")
    ap.add_argument("--copiers-only", action="store_true", help="only the three copiers side by side")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.files, args.copier_rounds = 2, 2, 1
        args.small, args.big = "16x256KiB", "2x32MiB"
    stack = Stack().up()
    results: dict[str, Any] = {}
    if not args.copiers_only:
        runs = measure(stack, args.files, args.mib, args.rounds)
        med = {k: statistics.median(v) for k, v in runs.items()}
        results.update(
            {
                "files": args.files,
                "file_mib": args.mib,
                "part_mib": PART // MiB,
                "parallel": PARALLEL,
                "rounds_mb_s": runs,
                "median_mb_s": med,
                "ratio_copy": med["copy"] / med["s3transfer"],
                "ratio_copy_verify": med["copy_verify"] / med["s3transfer"],
            }
        )
        print(
            f"\n{args.files} files x {args.mib} MiB, parts of {PART // MiB} MiB, {PARALLEL} at once (median of {args.rounds}):"
        )
        print(f"  s3transfer upload_file from local disk   {med['s3transfer']:7.0f} MB/s")
        print(
            f"  migration copy, HDFS -> S3               {med['copy']:7.0f} MB/s   ratio {results['ratio_copy']:.2f}  (goal >= 0.8)"
        )
        print(
            f"  migration copy + verify                  {med['copy_verify']:7.0f} MB/s   ratio {results['ratio_copy_verify']:.2f}"
        )
    classpath = args.distcp_classpath or default_classpath(stack)
    if classpath and any(Path(classpath).glob("hadoop-distcp-*.jar")):
        print("\ncopiers side by side ...", flush=True)
        sets = {"tiny": (1, 1024), "small": parse_set(args.small), "big": parse_set(args.big)}
        results["copiers"] = measure_copiers(stack, sets, args.copier_rounds, classpath)
        print_copiers(results["copiers"], args.copier_rounds)
    else:
        print(f"\n(DistCp's jars not found in {classpath or 'the stack'}: the copier comparison is skipped)")
    OUT.mkdir(exist_ok=True)
    (OUT / "migrate.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

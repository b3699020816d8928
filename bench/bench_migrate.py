"""Migration throughput beside its baseline, in one run.

* baseline: boto3's transfer manager (``s3transfer``, ``upload_file``) uploading the files from
  local disk to the stack's S3 server, with the same part size and concurrency;
* metaproxy: the migration copier streaming the same bytes from HDFS (WebHDFS) to the same S3
  server, files side by side as the loop copies a unit's files, with a SHA-256 computed while
  reading — copy only, and copy + verify (the files go up in parts, and S3 keeps a multipart
  upload's SHA-256 only as a checksum of its parts' checksums, so verification reads the copy
  back).

Rounds alternate; the median counts. Results go to ``bench/out/migrate.json``.

    .venv/bin/python bench/bench_migrate.py [--files 4] [--mib 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig

from metaproxy.config import S3Config
from metaproxy.migrate.copier import Copier
from metaproxy.ufs.s3 import S3Ufs
from metaproxy.ufs.webhdfs import WebHdfs
from metaproxy_devstack.launcher import Stack

OUT = Path(__file__).resolve().parent / "out"
MiB = 1024 * 1024
PART = 16 * MiB
PARALLEL = 4


def measure(stack: dict[str, Any], files: int, mib: int, rounds: int) -> dict[str, list[float]]:
    """MB/s per round of each side: s3transfer from local disk, the copier, copier + verify."""
    s3 = boto3.client(
        "s3",
        endpoint_url=stack["s3"],
        aws_access_key_id=stack["s3_access_key"],
        aws_secret_access_key=stack["s3_secret_key"],
        region_name=stack["s3_region"],
    )
    fs = WebHdfs(stack["webhdfs"])
    bucket = f"bench-migrate-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    runs = measure(Stack().up(), args.files, args.mib, args.rounds)
    med = {k: statistics.median(v) for k, v in runs.items()}
    results: dict[str, Any] = {
        "files": args.files,
        "file_mib": args.mib,
        "part_mib": PART // MiB,
        "parallel": PARALLEL,
        "rounds_mb_s": runs,
        "median_mb_s": med,
        "ratio_copy": med["copy"] / med["s3transfer"],
        "ratio_copy_verify": med["copy_verify"] / med["s3transfer"],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "migrate.json").write_text(json.dumps(results, indent=2))
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


if __name__ == "__main__":
    main()

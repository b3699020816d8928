"""A seeded, TPC-DS-shaped star schema for the demo, the tests and the benchmarks.

``store_sales`` (the fact table, partitioned by ``ss_sold_date_sk`` as Hive lays it out:
one ``ss_sold_date_sk=N/`` directory per day) and the dimensions ``item``, ``date_dim`` and
``store`` are generated from one seed, written as Parquet with pyarrow onto HDFS through
WebHDFS, and registered in the Hive Metastore the way Hive registers external Parquet tables.

The same seed and scale give the same rows and the same Parquet bytes, so a test can
recompute any aggregate from :func:`generate` and compare it with what a query engine returns.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from metaproxy.ufs import UfsNotFound
from metaproxy.ufs.s3 import S3Ufs
from metaproxy.ufs.webhdfs import WebHdfs

DATABASE = "tpcds"
DEFAULT_SEED = 20261124
DEFAULT_PARTITIONS = 120
ROWS_PER_PARTITION = 2_000
ITEMS = 1_000
STORES = 12
FIRST_DATE = dt.date(2024, 1, 1)
FIRST_DATE_SK = 2_460_311  # a Julian-day-like surrogate key, as TPC-DS uses

PARQUET_SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
PARQUET_INPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
PARQUET_OUTPUT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

MONEY = pa.decimal128(7, 2)

SCHEMAS: dict[str, pa.Schema] = {
    "date_dim": pa.schema(
        [
            ("d_date_sk", pa.int64()),
            ("d_date_id", pa.string()),
            ("d_date", pa.date32()),
            ("d_year", pa.int32()),
            ("d_moy", pa.int32()),
            ("d_dom", pa.int32()),
            ("d_qoy", pa.int32()),
            ("d_day_name", pa.string()),
        ]
    ),
    "item": pa.schema(
        [
            ("i_item_sk", pa.int64()),
            ("i_item_id", pa.string()),
            ("i_item_desc", pa.string()),
            ("i_current_price", MONEY),
            ("i_brand", pa.string()),
            ("i_class", pa.string()),
            ("i_category", pa.string()),
            ("i_manufact_id", pa.int32()),
        ]
    ),
    "store": pa.schema(
        [
            ("s_store_sk", pa.int64()),
            ("s_store_id", pa.string()),
            ("s_store_name", pa.string()),
            ("s_city", pa.string()),
            ("s_state", pa.string()),
            ("s_number_employees", pa.int32()),
        ]
    ),
    # the partition column ss_sold_date_sk lives in the directory name, not in the files
    "store_sales": pa.schema(
        [
            ("ss_sold_time_sk", pa.int64()),
            ("ss_item_sk", pa.int64()),
            ("ss_customer_sk", pa.int64()),
            ("ss_store_sk", pa.int64()),
            ("ss_ticket_number", pa.int64()),
            ("ss_quantity", pa.int32()),
            ("ss_sales_price", MONEY),
            ("ss_ext_sales_price", MONEY),
            ("ss_net_profit", MONEY),
        ]
    ),
}

HIVE_TYPES = {
    pa.int64(): "bigint",
    pa.int32(): "int",
    pa.string(): "string",
    pa.date32(): "date",
    MONEY: "decimal(7,2)",
}

CATEGORIES = [
    "Books",
    "Electronics",
    "Home",
    "Jewelry",
    "Men",
    "Music",
    "Shoes",
    "Sports",
    "Children",
    "Women",
]
CLASSES = ["classic", "pop", "accessories", "fitness", "furniture", "kids", "dresses", "romance"]
CITIES = [
    ("Fairview", "TN"),
    ("Midway", "AL"),
    ("Oak Grove", "GA"),
    ("Riverside", "CA"),
    ("Five Points", "SC"),
]
DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@dataclass
class SampleData:
    """The generated tables; ``store_sales`` is one Arrow table per partition key."""

    date_dim: pa.Table
    item: pa.Table
    store: pa.Table
    store_sales: dict[int, pa.Table] = field(default_factory=dict)

    def fact(self) -> pa.Table:
        """All of store_sales with the partition column added, as a query engine sees it."""
        parts = []
        for sk, t in sorted(self.store_sales.items()):
            parts.append(t.append_column("ss_sold_date_sk", pa.array([sk] * t.num_rows, pa.int64())))
        return pa.concat_tables(parts)


def _money(rng: random.Random, lo: int, hi: int) -> Decimal:
    return Decimal(rng.randint(lo * 100, hi * 100)) / 100


def _cents(cents: np.ndarray) -> pa.Array:
    """An int64 array of cents as ``decimal(7,2)`` values (128-bit two's complement words)."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(MONEY, len(cents), [None, pa.py_buffer(words.tobytes())])


def generate(
    scale: float = 1.0, seed: int = DEFAULT_SEED, partitions: int = DEFAULT_PARTITIONS
) -> SampleData:
    """Generate the schema in memory. ``scale`` multiplies fact rows per partition and items."""
    if scale <= 0 or partitions <= 0:
        raise ValueError("scale and partitions must be positive")
    rng = random.Random(seed)
    days = max(partitions, 365)
    dates = [FIRST_DATE + dt.timedelta(days=i) for i in range(days)]
    date_dim = pa.table(
        {
            "d_date_sk": [FIRST_DATE_SK + i for i in range(days)],
            "d_date_id": [f"AAAAAAAA{FIRST_DATE_SK + i:08X}" for i in range(days)],
            "d_date": dates,
            "d_year": [d.year for d in dates],
            "d_moy": [d.month for d in dates],
            "d_dom": [d.day for d in dates],
            "d_qoy": [(d.month - 1) // 3 + 1 for d in dates],
            "d_day_name": [DAY_NAMES[d.weekday()] for d in dates],
        },
        schema=SCHEMAS["date_dim"],
    )
    n_items = max(10, int(ITEMS * scale))
    item = pa.table(
        {
            "i_item_sk": list(range(1, n_items + 1)),
            "i_item_id": [f"AAAAAAAA{i:08d}" for i in range(1, n_items + 1)],
            "i_item_desc": [f"item {i} of the sample catalogue" for i in range(1, n_items + 1)],
            "i_current_price": [_money(rng, 1, 300) for _ in range(n_items)],
            "i_brand": [f"brand#{rng.randint(1, 50)}" for _ in range(n_items)],
            "i_class": [rng.choice(CLASSES) for _ in range(n_items)],
            "i_category": [rng.choice(CATEGORIES) for _ in range(n_items)],
            "i_manufact_id": [rng.randint(1, 100) for _ in range(n_items)],
        },
        schema=SCHEMAS["item"],
    )
    cities = [CITIES[i % len(CITIES)] for i in range(STORES)]
    store = pa.table(
        {
            "s_store_sk": list(range(1, STORES + 1)),
            "s_store_id": [f"AAAAAAAA{i:08d}" for i in range(1, STORES + 1)],
            "s_store_name": [f"store {chr(ord('a') + i)}" for i in range(STORES)],
            "s_city": [c for c, _ in cities],
            "s_state": [s for _, s in cities],
            "s_number_employees": [rng.randint(150, 300) for _ in range(STORES)],
        },
        schema=SCHEMAS["store"],
    )
    rows = max(1, int(ROWS_PER_PARTITION * scale))
    # the fact rows are drawn with numpy, one partition at a time, so large scales load fast
    gen = np.random.Generator(np.random.PCG64(seed))
    sales: dict[int, pa.Table] = {}
    ticket = 1
    for p in range(partitions):
        sk = FIRST_DATE_SK + p
        qty = gen.integers(1, 101, rows, dtype=np.int64)
        price = gen.integers(100, 20_001, rows, dtype=np.int64)  # cents
        ext = np.minimum(qty * price, 9_999_999)
        pct = gen.integers(-30, 51, rows, dtype=np.int64)
        profit = np.round(ext * pct / 100).astype(np.int64)  # half-even, like Decimal.quantize
        new_ticket = gen.random(rows) < 0.3
        tickets = ticket + np.cumsum(new_ticket)
        ticket = int(tickets[-1])
        sales[sk] = pa.table(
            {
                "ss_sold_time_sk": gen.integers(28_800, 75_601, rows, dtype=np.int64),
                "ss_item_sk": gen.integers(1, n_items + 1, rows, dtype=np.int64),
                "ss_customer_sk": gen.integers(1, 100_001, rows, dtype=np.int64),
                "ss_store_sk": gen.integers(1, STORES + 1, rows, dtype=np.int64),
                "ss_ticket_number": tickets,
                "ss_quantity": qty.astype(np.int32),
                "ss_sales_price": _cents(price),
                "ss_ext_sales_price": _cents(ext),
                "ss_net_profit": _cents(profit),
            },
            schema=SCHEMAS["store_sales"],
        )
    return SampleData(date_dim=date_dim, item=item, store=store, store_sales=sales)


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as one Parquet file; byte-identical for identical input and pyarrow version."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", row_group_size=1 << 20, write_statistics=True)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# loading into HDFS + HMS


@dataclass
class LoadResult:
    database: str
    location: str
    tables: dict[str, int]
    partitions: int
    files: int
    bytes: int
    seconds: float


def _columns(schema: pa.Schema) -> list:  # list[FieldSchema]
    from hive_metastore.ttypes import FieldSchema

    return [FieldSchema(name=f.name, type=HIVE_TYPES[f.type], comment=None) for f in schema]


def _storage(schema: pa.Schema, location: str):  # -> StorageDescriptor
    from hive_metastore.ttypes import SerDeInfo, StorageDescriptor

    return StorageDescriptor(
        cols=_columns(schema),
        location=location,
        inputFormat=PARQUET_INPUT,
        outputFormat=PARQUET_OUTPUT,
        compressed=False,
        numBuckets=-1,
        serdeInfo=SerDeInfo(
            name=None, serializationLib=PARQUET_SERDE, parameters={"serialization.format": "1"}
        ),
        bucketCols=[],
        sortCols=[],
        parameters={},
        storedAsSubDirectories=False,
    )


SAMPLE_PARAM = "metaproxy.sample"


def sample_id(scale: float, seed: int, partitions: int) -> str:
    """What a loaded sample was generated from (kept as a database parameter)."""
    return f"seed={seed},scale={scale:g},partitions={partitions}"


def loaded_sample(hms_uri: str, database: str = DATABASE) -> str | None:
    """The :func:`sample_id` of the sample loaded in the HMS, or None."""
    from hive_metastore.ttypes import NoSuchObjectException

    from metaproxy.hms import connect

    with connect(hms_uri) as hms:
        try:
            db = hms.get_database(database)
        except NoSuchObjectException:
            return None
        return (db.parameters or {}).get(SAMPLE_PARAM)


def _files(data: SampleData, base_path: str) -> list[tuple[str, bytes]]:
    """The Parquet files of a sample under ``base_path``, laid out as Hive lays out tables."""
    files: list[tuple[str, bytes]] = []
    for name in ("date_dim", "item", "store"):
        files.append((f"{base_path}/{name}/part-00000.parquet", parquet_bytes(getattr(data, name))))
    for sk, table in data.store_sales.items():
        files.append(
            (f"{base_path}/store_sales/ss_sold_date_sk={sk}/part-00000.parquet", parquet_bytes(table))
        )
    return files


def _write(
    files: list[tuple[str, bytes]],
    put: Callable[[str, bytes], object],
    progress: Callable[[int, int], None] | None,
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        for done, _ in enumerate(pool.map(lambda f: put(*f), files), 1):
            if progress:
                progress(done, len(files))


def _result(
    database: str, location: str, data: SampleData, files: list[tuple[str, bytes]], t0: float
) -> LoadResult:
    return LoadResult(
        database=database,
        location=location,
        tables={n: getattr(data, n).num_rows for n in ("date_dim", "item", "store")}
        | {"store_sales": sum(t.num_rows for t in data.store_sales.values())},
        partitions=len(data.store_sales),
        files=len(files),
        bytes=sum(len(b) for _, b in files),
        seconds=time.monotonic() - t0,
    )


def drop_database(hms: Any, database: str) -> None:
    """Drop ``database`` with its tables, if it exists.

    Asked to drop a database it lacks, Hive 2.3 and 3.1 answer with a MetaException wrapping a
    NullPointerException rather than NoSuchObjectException; so look first.
    """
    from hive_metastore.ttypes import NoSuchObjectException

    try:
        hms.get_database(database)
    except NoSuchObjectException:
        return
    with contextlib.suppress(NoSuchObjectException):  # dropped meanwhile
        hms.drop_database(database, False, True)


def _register(hms: Any, database: str, location: str, data: SampleData, sample: str) -> None:
    """Create the database, its four external tables and the fact table's partitions."""
    from hive_metastore.ttypes import Database, FieldSchema, Partition, Table

    hms.create_database(
        Database(
            name=database,
            description="metaproxy sample data (TPC-DS-shaped)",
            locationUri=location,
            parameters={SAMPLE_PARAM: sample},
        )
    )
    now = int(time.time())
    for name in ("date_dim", "item", "store", "store_sales"):
        keys = (
            [FieldSchema(name="ss_sold_date_sk", type="bigint", comment=None)]
            if name == "store_sales"
            else []
        )
        hms.create_table(
            Table(
                tableName=name,
                dbName=database,
                owner="metaproxy",
                createTime=now,
                lastAccessTime=0,
                retention=0,
                sd=_storage(SCHEMAS[name], f"{location}/{name}"),
                partitionKeys=keys,
                parameters={"EXTERNAL": "TRUE"},
                tableType="EXTERNAL_TABLE",
            )
        )
    parts = [
        Partition(
            values=[str(sk)],
            dbName=database,
            tableName="store_sales",
            createTime=now,
            lastAccessTime=0,
            sd=_storage(SCHEMAS["store_sales"], f"{location}/store_sales/ss_sold_date_sk={sk}"),
            parameters={},
        )
        for sk in sorted(data.store_sales)
    ]
    for i in range(0, len(parts), 500):
        hms.add_partitions(parts[i : i + 500])


def load_to_s3(
    hms_uri: str,
    s3: S3Ufs,
    bucket: str,
    scale: float = 1.0,
    seed: int = DEFAULT_SEED,
    partitions: int = DEFAULT_PARTITIONS,
    database: str = DATABASE,
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """The same sample in an S3 bucket (``s3://bucket/database/…``), registered as ``database``;
    the bucket is created when missing and an old copy replaced."""
    from metaproxy.hms import connect

    t0 = time.monotonic()
    data = generate(scale, seed, partitions)
    files = _files(data, database)
    s3.ensure_bucket(bucket)
    with connect(hms_uri) as hms:
        drop_database(hms, database)
        s3.delete_prefix(f"s3://{bucket}/{database}")
        _write(files, lambda key, body: s3.write(f"s3://{bucket}/{key}", body), progress)
        _register(hms, database, f"s3://{bucket}/{database}", data, sample_id(scale, seed, partitions))
    return _result(database, f"s3://{bucket}/{database}", data, files, t0)


def load(
    hms_uri: str,
    hdfs_uri: str,
    webhdfs_url: str,
    scale: float = 1.0,
    seed: int = DEFAULT_SEED,
    partitions: int = DEFAULT_PARTITIONS,
    database: str = DATABASE,
    root: str = "/warehouse",
    progress: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Generate the sample, write it to HDFS and register it in the HMS (replacing any old copy)."""
    from metaproxy.hms import connect

    t0 = time.monotonic()
    data = generate(scale, seed, partitions)
    fs = WebHdfs(webhdfs_url)
    base_path = f"{root.rstrip('/')}/{database}"
    location = f"{hdfs_uri.rstrip('/')}{base_path}"
    files = _files(data, base_path)

    with connect(hms_uri) as hms:
        drop_database(hms, database)
        with contextlib.suppress(UfsNotFound):
            fs.delete(base_path, recursive=True)
        _write(files, lambda path, body: fs.write(path, body), progress)
        _register(hms, database, location, data, sample_id(scale, seed, partitions))
    return _result(database, location, data, files, t0)

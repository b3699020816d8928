"""The sample data set is deterministic, TPC-DS-shaped and grows with its scale."""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from metaproxy_devstack import sample_data

pytestmark = pytest.mark.unit


def test_same_seed_same_bytes() -> None:
    a = sample_data.generate(scale=0.05, partitions=5)
    b = sample_data.generate(scale=0.05, partitions=5)
    for sk in a.store_sales:
        assert sample_data.parquet_bytes(a.store_sales[sk]) == sample_data.parquet_bytes(b.store_sales[sk])
    assert sample_data.parquet_bytes(a.item) == sample_data.parquet_bytes(b.item)


def test_other_seed_other_rows() -> None:
    a = sample_data.generate(scale=0.05, partitions=3, seed=1)
    b = sample_data.generate(scale=0.05, partitions=3, seed=2)
    assert a.fact().to_pylist() != b.fact().to_pylist()


def test_default_shape() -> None:
    s = sample_data.generate()
    assert len(s.store_sales) >= 100
    fact = s.fact()
    assert fact.num_rows == sample_data.ROWS_PER_PARTITION * len(s.store_sales)
    # foreign keys resolve into the dimensions
    assert pc.all(pc.is_in(fact["ss_item_sk"], s.item["i_item_sk"])).as_py()
    assert pc.all(pc.is_in(fact["ss_store_sk"], s.store["s_store_sk"])).as_py()
    assert pc.all(pc.is_in(fact["ss_sold_date_sk"], s.date_dim["d_date_sk"])).as_py()


def test_scale_grows_the_fact_table() -> None:
    small = sample_data.generate(scale=0.1, partitions=4)
    big = sample_data.generate(scale=0.3, partitions=4)
    assert big.fact().num_rows == 3 * small.fact().num_rows
    assert big.item.num_rows > small.item.num_rows


def test_bad_scale() -> None:
    with pytest.raises(ValueError):
        sample_data.generate(scale=0)

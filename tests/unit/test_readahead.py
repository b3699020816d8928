"""Read-ahead decisions: sequential readers get runs that double; a jump starts over."""

from __future__ import annotations

import pytest

from metaproxy.cache.readahead import ReadAhead

pytestmark = pytest.mark.unit

MB = 1 << 20


def test_only_a_read_that_continues_the_last_one_reads_ahead() -> None:
    ra = ReadAhead(4)
    assert ra.after_read("v", 0, MB, 100 * MB) == 0  # the first read: nothing to continue
    assert ra.after_read("v", MB, 2 * MB, 100 * MB) == 4
    assert ra.after_read("v", 10 * MB, 11 * MB, 100 * MB) == 0  # a jump
    assert ra.after_read("w", MB, 2 * MB, 100 * MB) == 0  # another version knows nothing of v


def test_runs_double_up_to_four_times_and_reset_on_a_jump() -> None:
    ra = ReadAhead(4)
    ra.after_read("v", 0, MB, 100 * MB)
    ra.after_read("v", MB, 2 * MB, 100 * MB)
    assert [ra.take_run("v") for _ in range(4)] == [4, 8, 16, 16]
    ra.after_read("v", 50 * MB, 51 * MB, 100 * MB)
    assert ra.take_run("v") == 4


def test_nothing_past_the_end_and_off_when_zero() -> None:
    ra = ReadAhead(4)
    ra.after_read("v", 0, MB, 2 * MB)
    assert ra.after_read("v", MB, 2 * MB, 2 * MB) == 0
    off = ReadAhead(0)
    off.after_read("v", 0, MB, 100 * MB)
    assert off.after_read("v", MB, 2 * MB, 100 * MB) == 0

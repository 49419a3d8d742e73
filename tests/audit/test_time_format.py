"""Record times: RFC 3339 UTC, microseconds, fixed width; the cached fast form writes exactly
what datetime writes, including where rounding carries into the next second."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.model import format_time, parse_time


def _datetime_form(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="microseconds")[:-6] + "Z"


@pytest.mark.parametrize("t", [0.0, 1e-7, 5e-7, 1.5e-6, 2.5e-6, 0.9999995, 1.0000005,
                               1763779200.9999996, 1763779200.0000005, 253402300799.5])
def test_edges_match_datetime(t: float) -> None:
    assert format_time(t) == _datetime_form(t)


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_any_time_matches_datetime(t: float) -> None:
    assert format_time(t) == _datetime_form(t)


@given(st.integers(min_value=0, max_value=4 * 10**9), st.integers(min_value=0, max_value=999_999))
def test_text_reads_back_to_the_microsecond(second: int, micros: int) -> None:
    text = format_time(second + micros / 1e6)
    assert len(text) == len("2026-11-22T01:55:40.733641Z")
    assert abs(parse_time(text) - (second + micros / 1e6)) < 2e-6


def test_the_cache_does_not_leak_between_seconds() -> None:
    assert format_time(1763779200.25) == "2025-11-22T02:40:00.250000Z"
    assert format_time(1763779201.5) == "2025-11-22T02:40:01.500000Z"
    assert format_time(1763779200.75) == "2025-11-22T02:40:00.750000Z"



"""Durations and sizes as people write them in config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obflow.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300s", 300),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("90", 90),
        (42, 42),
        ("2 d", 172800),
    ],
)
def test_duration_forms(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m5", "", "1x", "-5s", True, None, [1]])
def test_duration_rejects_with_hint(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * 1024**2),
        ("1GiB", 1024**3),
        ("1GB", 10**9),
        ("4096", 4096),
        (10, 10),
        ("1.5KiB", 1536),
    ],
)
def test_size_forms(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["12XB", "GiB", "", "-1", True, 1.5])
def test_size_rejects_with_hint(text: object) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=315_360_000_000))
def test_duration_text_round_trips(millis: int) -> None:
    assert parse_duration(format_duration(millis / 1000)) == pytest.approx(millis / 1000)


@given(st.integers(min_value=0, max_value=2**50))
def test_size_text_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@pytest.mark.parametrize("text", ["99999999999h", "inf", "nan", 1e308, float("inf"), float("nan"), "3651d"])
def test_a_duration_past_ten_years_or_not_finite_is_refused(text: object) -> None:
    """Such a duration was accepted, and ``obflow config show`` then crashed formatting it (issue 21)."""
    with pytest.raises(ValueError, match=r"expected a duration|at most 3650d"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["1" * 400, "99999999999TiB", 10**30, 1024**5 + 1])
def test_a_size_past_a_pebibyte_is_refused_not_overflowed(text: object) -> None:
    with pytest.raises(ValueError, match="at most 1024TiB"):
        parse_size(text)

"""Time as the ledger writes it: one text form, sortable, equal to the strftime it replaced."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from charter.primitives import format_time, parse_time

moments = st.datetimes(
    min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)


@given(moments)
def test_format_time_is_the_ledger_form_and_parses_back(value: datetime) -> None:
    text = format_time(value)
    assert text == value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert parse_time(text) == value


@given(moments, moments)
def test_formatted_times_sort_as_the_times_do(a: datetime, b: datetime) -> None:
    assert (format_time(a) < format_time(b)) == (a < b)

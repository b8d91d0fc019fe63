from __future__ import annotations

import re
from datetime import timedelta

import pytest

from charter.primitives import DURATION_PATTERN, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 2m ", timedelta(minutes=2)),
        ("1m1m", timedelta(minutes=2)),
    ],
)
def test_parse(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "5", "m", "5 minutes", "1.5h", "-1h", "PT1H", "1w"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration; write a number and a unit"):
        parse_duration(text)
    assert not re.match(DURATION_PATTERN, text.strip())


@pytest.mark.parametrize("text", ["250ms", "30s", "5m", "4h", "1d", "1h30m", "1d2h3m4s5ms"])
def test_format_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


def test_format_zero() -> None:
    assert format_duration(timedelta()) == "0s"


def test_the_published_schemas_use_the_one_duration_and_import_path_syntax() -> None:
    from charter.contract.validate import schema
    from charter.primitives import DURATION_PATTERN, IMPORT_PATH_PATTERN

    for name in ("contract", "pack"):
        defs = schema(name).get("$defs", {})
        if "duration" in defs:
            assert defs["duration"]["pattern"] == DURATION_PATTERN
        if "import_path" in defs:
            assert defs["import_path"]["pattern"] == IMPORT_PATH_PATTERN

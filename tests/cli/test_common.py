"""JSON arguments: inline or ``@file``, with errors that name the option and position."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import UsageError
from charter.cli.common import parse_json_arg, parse_json_object


def test_inline_and_file_json(tmp_path: Path) -> None:
    assert parse_json_arg(None, "--x") is None
    assert parse_json_arg('{"a": [1, 2]}', "--x") == {"a": [1, 2]}
    assert parse_json_arg("3", "--x") == 3
    f = tmp_path / "a.json"
    f.write_text('{"b": "é"}', encoding="utf-8")
    assert parse_json_arg(f"@{f}", "--x") == {"b": "é"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{", "option --x: malformed JSON at line 1 column 2"),
        ("{'a': 1}", "option --x: malformed JSON at line 1 column 2"),
        ("", "option --x: malformed JSON at line 1 column 1"),
        ("@/no/such/file.json", "--x: cannot read /no/such/file.json"),
    ],
)
def test_bad_json_is_a_usage_error(value: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_json_arg(value, "--x")
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_objects_only() -> None:
    assert parse_json_object('{"a": 1}', "--x") == {"a": 1}
    assert parse_json_object(None, "--x") is None
    with pytest.raises(UsageError, match="expected a JSON object, got list"):
        parse_json_object("[]", "--x")

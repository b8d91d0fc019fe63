"""Reading YAML with positions: paths, locations, syntax errors as ContractError."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import ContractError
from charter.contract.source import format_path, parse_yaml, read_yaml

TEXT = """\
contract: shop
policy:
  rules:
    - id: a
      when: 'true'
    - {id: b, when: 'false'}
created: 2026-01-31
amount: 1.5
"""


def test_format_path_renders_keys_and_indexes() -> None:
    assert format_path(["policy", "rules", 3, "when"]) == "policy.rules[3].when"
    assert format_path([]) == ""
    assert format_path([0, "a"]) == "[0].a"


def test_locate_returns_one_based_key_positions() -> None:
    doc = parse_yaml(TEXT, "t.yaml")
    assert doc.locate(["contract"]) == (1, 1)
    assert doc.locate(["policy", "rules"]) == (3, 3)
    assert doc.locate(["policy", "rules", 0]) == (4, 7)
    assert doc.locate(["policy", "rules", 0, "when"]) == (5, 7)
    assert doc.locate(["policy", "rules", 1, "when"]) == (6, 15)


def test_locate_stops_at_the_deepest_existing_node() -> None:
    doc = parse_yaml(TEXT, "t.yaml")
    assert doc.locate(["policy", "rules", 7, "when"]) == (3, 3)
    assert doc.locate(["policy", "missing"]) == (2, 1)
    assert doc.locate(["nothing"]) == (1, 1)
    assert doc.locate(["contract", "deeper"]) == (1, 1)


def test_issue_carries_file_position_and_path() -> None:
    issue = parse_yaml(TEXT, "t.yaml").issue(["policy", "rules", 1, "when"], "bad", "fix it")
    assert (issue.file, issue.line, issue.column, issue.path) == (
        "t.yaml",
        6,
        15,
        "policy.rules[1].when",
    )
    assert str(issue) == "t.yaml:6:15: policy.rules[1].when: bad (fix: fix it)"


def test_data_is_plain_python() -> None:
    data = parse_yaml(TEXT, "t.yaml").data
    assert type(data) is dict
    assert type(data["policy"]["rules"]) is list
    assert type(data["policy"]["rules"][1]) is dict
    assert type(data["contract"]) is str
    assert data["created"] == "2026-01-31"  # dates keep their ISO text
    assert type(data["amount"]) is float


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("a: [1, 2\n", 2, 1, "while parsing a flow sequence started at line 1, column 4"),
        ("a: b: c\n", 1, 5, "mapping values are not allowed here"),
        ("a: 1\na: 2\n", 2, 1, 'found duplicate key "a"'),
        ("a:\n\t- b\n", 2, 1, "found character '\\t' that cannot start any token"),
        ("a: 'unclosed\n", 2, 1, "while scanning a quoted scalar started at line 1, column 4"),
    ],
)
def test_syntax_errors_are_contract_errors_with_position(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "bad.yaml")
    (issue,) = info.value.issues
    assert (issue.file, issue.line, issue.column) == ("bad.yaml", line, column)
    assert message in issue.message
    assert issue.hint


def test_control_characters_are_a_contract_error_not_a_reader_error() -> None:
    with pytest.raises(ContractError) as info:
        parse_yaml("contract: shop\nversion: \x01\n", "ctl.yaml")
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (2, 10)
    assert "unacceptable character #x0001" in issue.message
    assert "\n" not in issue.message


def test_missing_and_undecodable_files(tmp_path: Path) -> None:
    with pytest.raises(ContractError) as info:
        read_yaml(tmp_path / "absent.yaml")
    assert info.value.issues[0].message == "file not found"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"contract: caf\xe9\n")
    with pytest.raises(ContractError) as info:
        read_yaml(latin)
    (issue,) = info.value.issues
    assert (issue.line, issue.column) == (1, 14)
    assert issue.message == "invalid UTF-8: byte 0xe9 at byte offset 13 (invalid continuation byte)"
    assert "UTF-8" in issue.hint

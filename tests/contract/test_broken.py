"""The corpus of broken contracts: every file fails to load with exactly the expected issues.

Each row names a file in ``broken/`` and the issues it must produce, in file order:
(path, line, column, message substring, hint substring). All issues of a file are
reported at once, in one ContractError, and nothing ever half-loads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import Contract, ContractError, Issue
from charter.cli import cli

BROKEN = Path(__file__).parent / "broken"

Expected = tuple[str, int, int, str, str]

CORPUS: dict[str, list[Expected]] = {
    "yaml_syntax.yaml": [
        (
            "",
            5,
            8,
            "YAML syntax error: expected ',' or '}', but got ':' "
            "(while parsing a flow mapping started at line 4, column 8)",
            "check indentation, quoting and brackets",
        )
    ],
    "duplicate_key.yaml": [
        ("", 9, 5, 'found duplicate key "effect"', "remove or rename the repeated key"),
    ],
    "not_a_mapping.yaml": [
        ("", 1, 1, "a contract must be a YAML mapping", "start the file with `contract: NAME`"),
    ],
    "missing_required.yaml": [
        ("domain", 1, 1, "'domain' is a required property", "add `domain`"),
        ("policy.rules[0].when", 11, 7, "'when' is a required property", "add `when`"),
    ],
    "unknown_key.yaml": [
        ("policy.rules[0].effect", 12, 7, "'effect' is a required property", "add `effect`"),
        (
            "policy.rules[0].efect",
            14,
            7,
            "unknown key 'efect'",
            "remove it or fix its spelling; allowed keys: at, effect, id, reason, reviewers, when",
        ),
    ],
    "unknown_top_level_key.yaml": [
        ("policy", 1, 1, "'policy' is a required property", "add `policy`"),
        ("polices", 10, 1, "unknown key 'polices'", "allowed keys: actions, autonomy, budget"),
    ],
    "wrong_effect.yaml": [
        (
            "policy.rules[0].effect",
            14,
            7,
            "'permit' is not one of ['allow', 'batch', 'review', 'escalate', 'deny']",
            "use one of: allow, batch, review, escalate, deny",
        ),
    ],
    "wrong_type.yaml": [
        ("actions", 5, 1, "['send'] is not of type 'object'", "make it an object"),
    ],
    "bad_duration.yaml": [
        (
            "channels.orders.max_age",
            6,
            24,
            "'5 minutes' does not match",
            "write a duration like 30s, 5m, 4h, 1d or 1h30m",
        ),
    ],
    "duplicate_rule_id.yaml": [
        (
            "policy.rules[1].id",
            15,
            7,
            "duplicate rule id 'same' (first used by rules[0])",
            "give every rule a unique id",
        ),
    ],
    "cel_syntax.yaml": [
        (
            "policy.rules[0].when",
            13,
            7,
            "CEL expression does not compile: ERROR: <input>:1:25: Syntax error",
            "fix the expression syntax",
        ),
    ],
    "cel_unknown_function.yaml": [
        (
            "policy.rules[0].when",
            13,
            7,
            "CEL expression calls unknown function 'toLower'",
            "check the spelling",
        ),
    ],
    "cel_bad_duration_literal.yaml": [
        (
            "policy.rules[0].when",
            14,
            7,
            'CEL cannot evaluate duration("1d")',
            "use h, m, s or ms, e.g. 24h",
        ),
    ],
    "blank_condition.yaml": [
        ("policy.rules[0].when", 13, 7, "CEL expression is blank", "write a condition"),
    ],
    "compensate_undeclared.yaml": [
        (
            "actions.send.compensate",
            9,
            5,
            "compensate names undeclared action 'unsend'",
            "declare `unsend` under actions or use one of: send",
        ),
    ],
    "bad_args_schema.yaml": [
        (
            "actions.send.args.properties.amount.type",
            12,
            18,
            "not a valid JSON Schema (2020-12): 'money' is not valid",
            "fix the schema keyword at this path",
        ),
    ],
    "bad_input_schema.yaml": [
        (
            "input.required",
            6,
            3,
            "not a valid JSON Schema (2020-12): 'message' is not of type 'array'",
            "fix the schema keyword",
        ),
    ],
    "bad_version.yaml": [
        ("version", 2, 1, "'v2' is not a valid version", "use a positive integer (3)"),
    ],
    "bad_action_name.yaml": [
        ("actions.Send Mail", 6, 3, "invalid name 'Send Mail'", "use lower-case letters"),
    ],
    "labels_without_egress.yaml": [
        (
            "actions.send.allows_labels",
            9,
            5,
            "allows_labels only applies to actions with `egress: external`",
            "add `egress: external` or remove allows_labels",
        ),
    ],
    "several_problems.yaml": [
        ("contract", 2, 1, "'Shop' does not match", "lower-case letters"),
        ("version", 3, 1, "0 is not a valid version", "positive integer"),
        ("actions.send.effect", 9, 5, "'delete' is not one of", "read, write, irreversible"),
        ("actions.send.compensate", 10, 5, "undeclared action 'unsend'", "declare `unsend`"),
        ("policy.default", 13, 3, "'maybe' is not one of", "allow, batch, review"),
        ("policy.rules[0].when", 16, 7, "does not compile", "fix the expression syntax"),
        ("policy.rules[1].id", 18, 7, "duplicate rule id 'a'", "unique id"),
        ("escalation.sla", 21, 14, "'soon' does not match", "write a duration"),
    ],
}


def _load_error(name: str) -> ContractError:
    with pytest.raises(ContractError) as info:
        Contract.load(BROKEN / name)
    return info.value


def test_every_corpus_file_has_a_row_and_the_corpus_is_large() -> None:
    files = {p.name for p in BROKEN.glob("*.yaml")}
    assert files == set(CORPUS)
    assert len(files) >= 15


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_broken_contract_reports_exactly_the_expected_issues(name: str) -> None:
    error = _load_error(name)
    expected = CORPUS[name]
    got = [(i.path, i.line, i.column) for i in error.issues]
    assert got == [(e[0], e[1], e[2]) for e in expected], "\n".join(map(str, error.issues))
    for issue, (_path, _line, _col, message, hint) in zip(error.issues, expected, strict=True):
        assert isinstance(issue, Issue)
        assert issue.file == str(BROKEN / name)
        assert message in issue.message
        assert hint in issue.hint
    # the exception text lists every issue with file:line:column
    text = str(error)
    count = len(expected)
    assert text.startswith(f"{count} problem{'s' if count != 1 else ''} found")
    for issue in error.issues:
        assert f"{issue.file}:{issue.line}:{issue.column}:" in text


def test_several_problems_are_all_reported_in_one_error_in_file_order() -> None:
    error = _load_error("several_problems.yaml")
    assert len(error.issues) == 8
    positions = [(i.line, i.column) for i in error.issues]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_issue_positions_point_at_the_named_field(name: str) -> None:
    """Where the path names an existing key, line:column is where that key is written."""
    lines = (BROKEN / name).read_text(encoding="utf-8").splitlines()
    for issue in _load_error(name).issues:
        last = issue.path.rsplit(".", 1)[-1].split("[")[0]
        if not issue.path or issue.message.endswith("is a required property"):
            continue  # a missing key is located at its parent
        line = lines[issue.line - 1]
        assert line[issue.column - 1 :].startswith(last), (issue, line)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_broken_contract_never_raises_anything_but_contract_error(name: str) -> None:
    try:
        Contract.load(BROKEN / name)
    except ContractError as exc:
        assert exc.exit_code == 4
        assert exc.code == "invalid_contract"
        assert exc.issues
    else:  # pragma: no cover - the assertion is the point
        pytest.fail(f"{name} loaded")


def test_cli_validate_reports_the_whole_corpus_at_once() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["contract", "validate", str(BROKEN)])
    assert result.exit_code == 4
    total = sum(len(v) for v in CORPUS.values())
    assert f"{total} problem(s) found" in result.stderr
    assert "Traceback" not in result.output
    for name in CORPUS:
        assert str(BROKEN / name) in result.stderr

"""Issues and ContractError messages."""

from __future__ import annotations

from charter import ContractError, Issue


def test_issue_str_and_dict() -> None:
    issue = Issue("c.yaml", 3, 7, "policy.rules[0].when", "does not compile", "fix it")
    assert str(issue) == "c.yaml:3:7: policy.rules[0].when: does not compile (fix: fix it)"
    assert Issue("c.yaml", 1, 1, "", "bad").__str__() == "c.yaml:1:1: bad"
    assert issue.to_dict() == {
        "file": "c.yaml",
        "line": 3,
        "column": 7,
        "path": "policy.rules[0].when",
        "message": "does not compile",
        "hint": "fix it",
    }


def test_contract_error_lists_every_issue() -> None:
    issues = [Issue("a.yaml", 1, 1, "x", "one"), Issue("a.yaml", 2, 1, "y", "two")]
    err = ContractError(issues)
    assert err.issues == issues
    assert str(err) == "2 problems found:\n  a.yaml:1:1: x: one\n  a.yaml:2:1: y: two"
    assert str(ContractError(issues[:1])).startswith("1 problem found:")
    issues.clear()
    assert len(err.issues) == 2  # a copy, not the caller's list

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


def _drawn_tree() -> dict[str, tuple[str, str, int]]:
    """class name -> (parent name, code, exit code) as drawn in charter.errors' docstring."""
    import re

    import charter.errors

    doc = charter.errors.__doc__ or ""
    found: dict[str, tuple[str, str, int]] = {}
    parents: list[tuple[int, str]] = []
    for line in doc.splitlines():
        m = re.match(r"^ {4}((?:[│ ]   |[├└]── )*)(\w+Error)\s+(\w+)\s+(\d+)", line)
        if not m:
            continue
        depth = len(m.group(1)) // 4
        name = m.group(2)
        while parents and parents[-1][0] >= depth:
            parents.pop()
        found[name] = (parents[-1][1] if parents else "", m.group(3), int(m.group(4)))
        parents.append((depth, name))
    return found


def test_the_drawn_exception_tree_is_the_real_one() -> None:
    import inspect

    import charter.errors as errors

    classes = {
        name: cls
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.CharterError) and cls.__module__ == "charter.errors"
    }
    drawn = _drawn_tree()
    assert sorted(drawn) == sorted(classes)
    for name, (parent, code, exit_code) in drawn.items():
        cls = classes[name]
        real_parent = next(
            (b.__name__ for b in cls.__bases__ if issubclass(b, errors.CharterError)), ""
        )
        assert (real_parent, cls.code, cls.exit_code) == (parent, code, exit_code), name
    codes = [cls.code for cls in classes.values()]
    assert len(codes) == len(set(codes)), "error codes are stable identifiers: one per class"


def test_every_charter_error_lives_in_charter_errors() -> None:
    import importlib
    import pkgutil

    import charter
    import charter.errors as errors

    for info in pkgutil.walk_packages(charter.__path__, "charter."):
        if info.name.startswith("charter.ledger.postgres"):
            continue  # needs the postgres extra; checked below when installed
        importlib.import_module(info.name)

    def subclasses(cls: type) -> list[type]:
        return [cls, *[s for sub in cls.__subclasses__() for s in subclasses(sub)]]

    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for c in subclasses(errors.CharterError)
        if c.__module__ != "charter.errors" and c.__module__.startswith("charter")
    ]
    assert outside == []

"""``charter policy eval`` and ``charter policy test``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from charter import Decision
from charter.cli import cli
from tests.helpers import to_yaml

NOW = "2026-03-02T10:15:00Z"
REFUND = '{"name": "refund", "args": {"order_id": "o-1", "amount": 10}}'


def run_eval(runner: CliRunner, contract: Path, *args: str) -> Result:
    return runner.invoke(cli, ["policy", "eval", str(contract), *args])


def decision(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_eval_prints_the_decision_as_json(runner: CliRunner, contract_file: Path) -> None:
    out = decision(run_eval(runner, contract_file, "--action", REFUND, "--now", NOW))
    assert out["effect"] == "allow"
    assert out["rules"] == ["routine"]
    assert out["contract"] == "shop@1"
    assert out["now"] == NOW
    assert "elapsed_us" not in out
    assert Decision.from_dict(out).effect == "allow"


def test_eval_with_timing(runner: CliRunner, contract_file: Path) -> None:
    out = decision(run_eval(runner, contract_file, "--action", REFUND, "--now", NOW, "--timing"))
    assert out["elapsed_us"] > 0


def test_eval_reads_arguments_from_files(
    runner: CliRunner, contract_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "action.json").write_text(
        '{"name": "refund", "args": {"order_id": "o-1", "amount": 5000}}'
    )
    (tmp_path / "context.json").write_text('{"tier": "vip"}')
    out = decision(
        run_eval(
            runner,
            contract_file,
            "--action",
            f"@{tmp_path / 'action.json'}",
            "--context",
            f"@{tmp_path / 'context.json'}",
            "--now",
            NOW,
        )
    )
    assert (out["effect"], out["rules"], out["reviewers"]) == ("review", ["big"], ["leads"])


def test_eval_admit(runner: CliRunner, contract_file: Path) -> None:
    out = decision(
        run_eval(
            runner, contract_file, "--at", "admit", "--context", '{"tier": "vip"}', "--now", NOW
        )
    )
    assert (out["at"], out["effect"], out["rules"]) == ("admit", "allow", ["vip"])
    out = decision(run_eval(runner, contract_file, "--at", "admit", "--now", NOW))
    assert out["effect"] == "deny"  # there are admit rules and none matched: the default


def test_eval_outcome_without_outcome_rules_accepts(runner: CliRunner, contract_file: Path) -> None:
    out = decision(
        run_eval(
            runner, contract_file, "--at", "outcome", "--outcome", '{"ok": true}', "--now", NOW
        )
    )
    assert out["effect"] == "allow"


@pytest.mark.parametrize(
    ("now", "effect"),
    [
        ("2026-03-02T10:15:00Z", "allow"),
        ("2026-03-02T07:59:59Z", "escalate"),
        ("2026-03-02T09:30:00+02:00", "escalate"),  # 07:30 UTC
        ("2026-03-02T03:30:00-05:00", "allow"),  # 08:30 UTC
    ],
)
def test_eval_now_parsing(runner: CliRunner, contract_file: Path, now: str, effect: str) -> None:
    out = decision(run_eval(runner, contract_file, "--action", REFUND, "--now", now))
    assert out["effect"] == effect


def test_eval_history_and_observations(runner: CliRunner, contract_file: Path) -> None:
    history = json.dumps(
        [{"action": "refund", "args": {"order_id": "o-1"}, "at": "2026-03-02T10:00:00Z"}]
    )
    out = decision(
        run_eval(runner, contract_file, "--action", REFUND, "--history", history, "--now", NOW)
    )
    assert (out["effect"], out["rules"]) == ("deny", ["rate"])
    obs = json.dumps(
        [{"channel": "crm.notes", "labels": ["confidential"], "content": "case ZX99881"}]
    )
    email = json.dumps({"name": "email", "args": {"body": "about ZX99881"}})
    out = decision(
        run_eval(runner, contract_file, "--action", email, "--observations", obs, "--now", NOW)
    )
    assert (out["effect"], out["rules"]) == ("deny", ["flow:email"])
    assert "'confidential' data flows into args.body" in out["reasons"][0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--action", '{"name": "refund"'], "option --action: malformed JSON at line 1 column 18"),
        (
            ["--action", REFUND, "--context", "{tier: vip}"],
            "option --context: malformed JSON at line 1 column 2",
        ),
        (["--action", "[1, 2]"], "option --action: expected a JSON object, got list"),
        (
            ["--action", "@/definitely/not/here.json"],
            "--action: cannot read /definitely/not/here.json",
        ),
        (
            ["--action", REFUND, "--now", "2026-03-02T10:15:00"],
            "option --now: '2026-03-02T10:15:00' has no timezone",
        ),
        (["--action", REFUND, "--now", "yesterday"], "option --now: Invalid isoformat string"),
        (["--now", NOW], "--action is required when --at is action"),
        (["--action", '{"name": "launch"}'], "action 'launch' is not declared by contract shop@1"),
        (
            ["--action", REFUND, "--observations", '{"a": 1}'],
            "option --observations: expected a JSON array",
        ),
        (["--action", REFUND, "--observations", "[3]"], "option --observations: item [0] needs"),
        (
            ["--action", REFUND, "--observations", '[{"channel": "c", "labels": 5}]'],
            "option --observations: item [0] 'labels' must be a list of strings",
        ),
        (
            ["--action", REFUND, "--observations", '[{"channel": "c", "labels": [1]}]'],
            "option --observations: item [0] 'labels' must be a list of strings",
        ),
        (
            ["--action", REFUND, "--history", '[{"action": "refund"}]'],
            "option --history: item [0] needs action",
        ),
        (["--action", REFUND, "--history", '"x"'], "option --history: expected a JSON array"),
    ],
)
def test_eval_usage_errors_exit_2_without_traceback(
    runner: CliRunner, contract_file: Path, args: list[str], message: str
) -> None:
    result = run_eval(runner, contract_file, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_eval_malformed_json_in_a_file_names_the_file(
    runner: CliRunner, contract_file: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "name": "refund",\n  "args": {,}\n}')
    result = run_eval(runner, contract_file, "--action", f"@{bad}")
    assert result.exit_code == 2
    assert f"{bad} (from --action): malformed JSON at line 3 column 12" in result.stderr


def test_eval_invalid_at_choice(runner: CliRunner, contract_file: Path) -> None:
    result = run_eval(runner, contract_file, "--at", "later")
    assert result.exit_code == 2
    assert "Invalid value for '--at'" in result.stderr


def test_eval_broken_contract_exits_4(runner: CliRunner) -> None:
    broken = Path(__file__).parent.parent / "contract" / "broken" / "cel_syntax.yaml"
    result = run_eval(runner, broken, "--action", REFUND)
    assert result.exit_code == 4
    assert "policy.rules[0].when: CEL expression does not compile" in result.stderr


def test_eval_missing_contract_exits_4(runner: CliRunner, tmp_path: Path) -> None:
    result = run_eval(runner, tmp_path / "nope.yaml", "--action", REFUND)
    assert result.exit_code == 4
    assert "file not found" in result.stderr


def test_eval_with_packs(runner: CliRunner, contract_file: Path, tmp_path: Path) -> None:
    pack = tmp_path / "guard.yaml"
    pack.write_text(
        "pack: guard\napplies_to: {contracts: [shop]}\nrules: [{id: stop, when: 'true', effect: deny}]\n"
    )
    out = decision(
        run_eval(runner, contract_file, "--action", REFUND, "--packs", str(pack), "--now", NOW)
    )
    assert (out["effect"], out["rules"]) == ("deny", ["guard/stop"])


# -- policy test ------------------------------------------------------------------------


def write_tests(contract_file: Path, cases: list[dict[str, Any]], **extra: Any) -> Path:
    path = contract_file.with_name("shop.tests.yaml")
    doc = {"defaults": {"now": NOW}, "cases": cases, **extra}
    path.write_text(to_yaml(doc), encoding="utf-8")
    return path


REFUND_ACTION = {"name": "refund", "args": {"order_id": "o-1", "amount": 10}}
PASSING = [
    {
        "name": "routine refund",
        "action": REFUND_ACTION,
        "expect": {"effect": "allow", "rules": ["routine"]},
    },
    {
        "name": "big refund",
        "action": {"name": "refund", "args": {"order_id": "o-1", "amount": 5000}},
        "expect": {
            "effect": "review",
            "rules": ["big"],
            "matched": ["big", "routine"],
            "errors": 0,
        },
    },
    {
        "name": "vip admitted",
        "at": "admit",
        "context": {"tier": "vip"},
        "expect": {"effect": "allow"},
    },
]


def run_test(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, ["policy", "test", *args])


def test_policy_test_passes_and_reports_coverage(runner: CliRunner, contract_file: Path) -> None:
    tests = write_tests(contract_file, PASSING)
    result = run_test(runner, str(tests))
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed; rule coverage 3/6" in result.stdout
    assert "night, rate, never" in result.stdout  # the rules no case exercised
    assert "coverage: 50.0%" in result.stdout
    assert "FAIL" not in result.stdout
    assert "PASS" not in result.stdout  # only failures unless -v


def test_policy_test_verbose_lists_every_case(runner: CliRunner, contract_file: Path) -> None:
    result = run_test(runner, "-v", str(write_tests(contract_file, PASSING)))
    assert result.stdout.count("PASS") == 3


def test_policy_test_discovers_files_in_a_directory(runner: CliRunner, contract_file: Path) -> None:
    write_tests(contract_file, PASSING)
    result = run_test(runner, str(contract_file.parent))
    assert result.exit_code == 0
    assert "(shop@1)" in result.stdout


def test_policy_test_failing_case(runner: CliRunner, contract_file: Path) -> None:
    cases = [
        *PASSING,
        {
            "name": "wrong",
            "action": REFUND_ACTION,
            "expect": {"effect": "deny", "rules": ["never"], "errors": 1},
        },
    ]
    result = run_test(runner, str(write_tests(contract_file, cases)))
    assert result.exit_code == 1
    assert "  FAIL  wrong" in result.stdout
    assert "effect: expected deny, got allow" in result.stdout
    assert "rules: expected ['never'], got ['routine']" in result.stdout
    assert "errors: expected 1, got []" in result.stdout
    assert "3 passed, 1 failed" in result.stdout


def test_policy_test_a_case_that_cannot_decide_fails(
    runner: CliRunner, contract_file: Path
) -> None:
    cases = [{"name": "undeclared", "action": {"name": "launch"}, "expect": {"effect": "deny"}}]
    result = run_test(runner, str(write_tests(contract_file, cases)))
    assert result.exit_code == 1
    assert "cannot decide: action 'launch' is not declared" in result.stdout


def test_policy_test_min_coverage(runner: CliRunner, contract_file: Path) -> None:
    tests = str(write_tests(contract_file, PASSING))
    ok = run_test(runner, "--min-coverage", "50", tests)
    assert ok.exit_code == 0, ok.output
    low = run_test(runner, "--min-coverage", "75", tests)
    assert low.exit_code == 1
    assert "coverage: 50.0%" in low.stdout
    assert "(below --min-coverage 75%)" in low.stdout
    bad = run_test(runner, "--min-coverage", "101", tests)
    assert bad.exit_code == 2


def test_policy_test_full_coverage(runner: CliRunner, contract_file: Path) -> None:
    cases = [
        *PASSING,
        {
            "name": "night",
            "now": "2026-03-02T03:00:00Z",
            "action": REFUND_ACTION,
            "expect": {"effect": "escalate"},
        },
        {
            "name": "rate",
            "action": REFUND_ACTION,
            "history": [{"action": "refund", "args": {"order_id": "o-1"}, "ago": "10m"}],
            "expect": {"effect": "deny", "rules": ["rate"]},
        },
        {
            "name": "errors do not count as coverage",
            "action": REFUND_ACTION,
            "context": {"tier": 3},
            "at": "admit",
            "expect": {"effect": "deny"},
        },
    ]
    result = run_test(runner, "--min-coverage", "80", str(write_tests(contract_file, cases)))
    assert result.exit_code == 0, result.output
    assert "rule coverage 5/6" in result.stdout
    assert result.stdout.count("never") == 1  # the one rule no case exercised


def test_policy_test_json(runner: CliRunner, contract_file: Path) -> None:
    cases = [*PASSING, {"name": "wrong", "action": REFUND_ACTION, "expect": {"effect": "deny"}}]
    result = run_test(runner, "--json", str(write_tests(contract_file, cases)))
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert (out["passed"], out["failed"], out["coverage_pct"]) == (3, 1, 50.0)
    (file,) = out["files"]
    assert file["contract"] == "shop@1"
    assert file["coverage"] == {"rules": 6, "covered": 3, "uncovered": ["night", "rate", "never"]}
    wrong = file["cases"][3]
    assert wrong["name"] == "wrong"
    assert wrong["passed"] is False
    assert wrong["decision"]["effect"] == "allow"
    assert "elapsed_us" not in wrong["decision"]


def test_policy_test_invalid_test_file_exits_4(runner: CliRunner, contract_file: Path) -> None:
    cases = [{"name": "typo", "action": REFUND_ACTION, "expcet": {"effect": "allow"}}]
    path = write_tests(contract_file, cases)
    result = run_test(runner, str(path))
    assert result.exit_code == 4
    assert f"{path}:" in result.stderr
    assert "cases[0]" in result.stderr
    result = run_test(runner, "--json", str(path))
    assert result.exit_code == 4
    err = json.loads(result.stdout)["error"]
    assert err["code"] == "invalid_contract"
    assert {i["path"] for i in err["issues"]} == {"cases[0]"}


def test_policy_test_no_files(runner: CliRunner, tmp_path: Path) -> None:
    result = run_test(runner, str(tmp_path))
    assert result.exit_code == 2
    assert "no *.tests.yaml files found" in result.stderr


def test_policy_test_coverage_counts_each_rule_once_per_contract(
    runner: CliRunner, contract_file: Path
) -> None:
    first = write_tests(contract_file, PASSING[:1])  # exercises routine
    second = contract_file.with_name("more.tests.yaml")
    second.write_text(
        to_yaml({"contract": contract_file.name, "defaults": {"now": NOW}, "cases": PASSING[:2]}),
        encoding="utf-8",
    )  # routine again, and big
    result = run_test(runner, "--json", str(first), str(second))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [f["coverage"]["covered"] for f in out["files"]] == [1, 2]
    assert out["coverage_pct"] == round(100 * 2 / 6, 2)  # {routine, big} of 6 rules

"""``charter contract validate`` and ``charter contract schema``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from charter.cli import cli
from charter.contract.validate import schema
from tests.helpers import BASELINE, REFUNDS

BROKEN = Path(__file__).parent.parent / "contract" / "broken"


def test_validate_ok(runner: CliRunner, contract_file: Path) -> None:
    result = runner.invoke(cli, ["contract", "validate", str(contract_file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok  {contract_file}  shop@1  sha256:")
    assert result.stderr == ""


def test_validate_contracts_and_packs_together(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["contract", "validate", str(REFUNDS), str(BASELINE)])
    assert result.exit_code == 0, result.output
    assert "refunds@1" in result.stdout
    assert "pack baseline" in result.stdout


def test_validate_failing_lists_every_error_and_exits_4(
    runner: CliRunner, contract_file: Path
) -> None:
    bad = [str(BROKEN / "bad_version.yaml"), str(BROKEN / "wrong_effect.yaml")]
    result = runner.invoke(cli, ["contract", "validate", *bad, str(contract_file)])
    assert result.exit_code == 4
    assert "ok  " in result.stdout  # the valid file is still reported
    lines = result.stderr.splitlines()
    assert lines == [
        f"{bad[0]}:2:1: version: 'v2' is not a valid version "
        "(fix: use a positive integer (3) or a dotted version ('1.2.0'))",
        f"{bad[1]}:14:7: policy.rules[0].effect: 'permit' is not one of "
        "['allow', 'batch', 'review', 'escalate', 'deny'] "
        "(fix: use one of: allow, batch, review, escalate, deny)",
        "2 problem(s) found",
    ]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_validate_json(runner: CliRunner, contract_file: Path) -> None:
    bad = BROKEN / "several_problems.yaml"
    result = runner.invoke(cli, ["contract", "validate", "--json", str(contract_file), str(bad)])
    assert result.exit_code == 4
    out = json.loads(result.stdout)
    assert [v["contract"] for v in out["valid"]] == ["shop@1"]
    assert len(out["valid"][0]["hash"]) == 64
    assert len(out["issues"]) == 8
    first = out["issues"][0]
    assert first == {
        "file": str(bad),
        "line": 2,
        "column": 1,
        "path": "contract",
        "message": first["message"],
        "hint": first["hint"],
    }


def test_validate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["contract", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 4
    assert "file not found" in result.stderr
    assert "Traceback" not in result.output


def test_validate_requires_a_path(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["contract", "validate"])
    assert result.exit_code == 2
    assert "Missing argument" in result.stderr


def test_validate_with_a_broken_pack_option(
    runner: CliRunner, contract_file: Path, tmp_path: Path
) -> None:
    pack = tmp_path / "packs" / "p.yaml"
    pack.parent.mkdir()
    pack.write_text(
        "pack: p\napplies_to: {domains: [sales]}\nrules: [{id: x, when: 'oops(', effect: deny}]\n"
    )
    result = runner.invoke(cli, ["contract", "validate", str(contract_file), "--packs", str(pack)])
    assert result.exit_code == 4
    assert f"{pack}:3:" in result.stderr
    assert "rules[0].when" in result.stderr


def test_schema_prints_the_published_schemas(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["contract", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == schema("contract")
    result = runner.invoke(cli, ["contract", "schema", "--pack"])
    assert json.loads(result.stdout) == schema("pack")


def test_version_and_help(runner: CliRunner) -> None:
    from charter import __version__

    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout
    result = runner.invoke(cli, ["-h"])
    assert result.exit_code == 0
    assert "contract" in result.stdout and "policy" in result.stdout

"""The command line with real providers: ``run start --model``, ``run show``, ``report``,
``contract validate`` of a contract's prompt template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from charter.cli import cli
from tests.models.fake_servers import FakeModelServer, chat_completion, final
from tests.runs.domain import EFFECTS_ENV, contract


@pytest.fixture(autouse=True)
def _effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects.db"))
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_run_start_with_a_model_override_report_and_show(
    tmp_path: Path, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    ops = tmp_path / "ops.yaml"
    contract(ops, budget={"max_spend_per_day_usd": 5, "max_model_calls": 5})
    db = str(tmp_path / "ledger.db")
    fake.push(chat_completion(content=json.dumps(final({"ok": True})), cached_tokens=1000))
    result = invoke(
        "run", "start", str(ops), "--input", '{"item": "bolt"}', "--wait",
        "--model", "openai:gpt-4o-mini", "--db", db, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "completed" and summary["model_calls"] == 1
    assert fake.bodies()[0]["model"] == "gpt-4o-mini"

    show = invoke("run", "show", summary["run_id"], "--db", db)
    assert (
        "model openai:gpt-4o-mini-2024-07-18 step 1 attempt 1: 1200+80 tokens (1000 cached)"
        in show.output
    )
    assert "(prices charter-2026.05)" in show.output and "redacted profile" in show.output

    report = invoke("report", "--db", db)
    assert report.exit_code == 0, report.output
    assert (
        "openai:gpt-4o-mini-2024-07-18: 1 calls, 1200 in + 80 out tokens (1000 cached)"
        in report.output
    )
    assert "spend:    this day $0.0002 of $5.00, this month $0.0002" in report.output
    data = json.loads(invoke("report", "--db", db, "--json").output)
    [ops_report] = data
    [model] = ops_report["models"]
    expected = (200 * 0.15 + 1000 * 0.075 + 80 * 0.6) / 1e6
    assert model["cost_usd"] == pytest.approx(expected)
    assert ops_report["spend"]["day"]["limit_usd"] == 5
    assert ops_report["spend"]["month"]["spent_usd"] == pytest.approx(expected, abs=1e-6)


def test_an_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    contract(ops)
    result = invoke(
        "run", "start", str(ops), "--input", "{\"item\": \"x\"}", "--model", "gemini:pro",
        "--db", str(tmp_path / "l.db"),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown model provider 'gemini'" in result.output


def test_contract_validate_checks_the_prompt_template(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    contract(ops, model={"prompt": "prompts/ops.md.j2"})
    result = invoke("contract", "validate", str(ops))
    assert result.exit_code == 4
    assert "model.prompt: prompt template 'prompts/ops.md.j2' not found" in result.output
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "ops.md.j2").write_text("{{ reply_format }}", encoding="utf-8")
    assert invoke("contract", "validate", str(ops)).exit_code == 0

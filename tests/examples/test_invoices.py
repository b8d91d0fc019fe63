"""The invoices example: its policy tests, an offline batch with the scripted model, and the
same contract driven by the openai provider against a local fake server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter import Contract, Runtime
from charter.cli import cli
from charter.ledger.events import ActionCompleted, ModelCalled
from examples.invoices import ap
from examples.invoices.demo import CONTRACT, choose_model, run
from tests.models.fake_servers import FakeModelServer, chat_completion, final, proposal, running


@pytest.fixture
def ap_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ap.db"
    monkeypatch.setenv(ap.ENV_VAR, str(path))
    return path


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(str(tmp_path / "ledger.db"), worker_id="invoices-test")
    yield rt
    rt.store.close()


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with running() as server:
        yield server


def test_the_policy_tests_pass_with_full_rule_coverage() -> None:
    result = CliRunner().invoke(
        cli, ["policy", "test", str(CONTRACT.parent), "--min-coverage", "100"]
    )
    assert result.exit_code == 0, result.output
    assert "rule coverage 17/17" in result.output


def test_the_model_is_chosen_from_the_environment() -> None:
    assert choose_model({}) is None
    assert choose_model({"OPENAI_API_KEY": "k"}) == "openai:gpt-4o-mini"
    assert choose_model({"OPENAI_BASE_URL": "http://localhost:11434/v1"}) == "openai:llama3.2"
    assert choose_model({"ANTHROPIC_API_KEY": "k"}) == "anthropic:claude-haiku-4-5"
    assert choose_model(
        {"ANTHROPIC_API_KEY": "k", "CHARTER_INVOICES_MODEL": "claude-sonnet-4-5"}
    ) == ("anthropic:claude-sonnet-4-5")
    # the suite clears the SDKs' variables: offline, the scripted model plays
    assert choose_model() is None


def test_an_offline_batch_pays_only_what_matches(ap_db: Path, runtime: Runtime) -> None:
    summary = run(runtime, invoices=40, seed=11)
    assert summary["model"].startswith("scripted")
    assert summary["invoices"] == 40
    assert set(summary["runs"]) <= {"completed", "waiting", "refused", "escalated"}
    assert summary["ap"]["queries_to_others"] == 0  # no injected recipient was written to
    _, cases = ap.generate(40, 11)
    kinds = {c.invoice_id: c.kind for c in cases}
    with ap.connection() as conn:
        approved = [r[0] for r in conn.execute("SELECT invoice_id FROM approvals")]
        held = dict(conn.execute("SELECT invoice_id, reason FROM holds").fetchall())
    # nothing that fails the three-way match was approved, whatever the model proposed
    assert approved and {kinds[i] for i in approved} <= {"match", "injection", "large"}
    assert {kinds[i] for i in held} <= {"price", "short", "no_po", "duplicate"}
    assert "price_mismatch" in held.values()
    # a second run of the same batch finds the same runs (idempotency keys): nothing twice
    again = run(runtime, invoices=40, seed=11)
    assert again["ap"] == summary["ap"]


def test_the_contract_runs_on_a_real_provider_when_one_is_configured(
    ap_db: Path, runtime: Runtime, fake: FakeModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{fake.url}/v1")
    model = choose_model()
    assert model == "openai:llama3.2"
    suppliers, cases = ap.generate(12, 11)
    ap.seed(suppliers, cases)
    case = next(c for c in cases if c.kind == "match" and c.expected == "approve")
    total = sum(x["qty"] * x["unit_price_cents"] for x in case.invoice["lines"])
    fake.push(
        chat_completion(
            content=json.dumps(
                proposal(
                    ("approve_invoice", {"invoice_id": case.invoice_id, "amount_cents": total})
                )
            ),
            model="llama3.2",
        ),
        chat_completion(
            content=json.dumps(
                final({"invoice_id": case.invoice_id, "decision": "approved", "minutes_saved": 6})
            ),
            model="llama3.2",
        ),
    )
    run_id = runtime.submit(Contract.load(CONTRACT), case.input, model=model)
    state = runtime.run(run_id)
    assert state.status == "completed"
    assert [
        e.event.action for e in runtime.store.events(run_id) if isinstance(e.event, ActionCompleted)
    ] == ["approve_invoice"]
    first = next(e.event for e in runtime.store.events(run_id) if isinstance(e.event, ModelCalled))
    assert (first.provider, first.model) == ("openai", "llama3.2")
    # local models are priced at 0 by the contract's price file, so its cost limits hold
    assert (first.cost_usd, first.price_version) == (0.0, "charter-2026.05+invoices-local-1")
    body = fake.bodies()[0]
    assert body["model"] == "llama3.2"
    assert body["response_format"]["type"] == "json_schema"
    prompt = body["messages"][0]["content"]
    assert prompt.startswith("You are the accounts-payable assistant of contract invoices@1")
    assert '## supplier.bank [confidential]\n\n{"account": "[redacted: confidential]"}' in prompt
    assert "<<<UNTRUSTED DATA" in prompt  # the memo
    assert {r["channel"] for r in first.redacted or []} == {"supplier.bank", "ap.notes"}
    with ap.connection() as conn:
        assert (
            conn.execute(
                "SELECT status FROM invoices WHERE invoice_id = ?", (case.invoice_id,)
            ).fetchone()[0]
            == "approved"
        )

"""Sealed at rest, erasable by destroying keys, and the chain still verifies: on every store."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ed25519

from charter import ConfigurationError, Contract, Runtime, open_store
from charter.cli import cli
from charter.ledger.events import ChannelRead, RunSubmitted
from charter.ledger.sealing import ERASED_TEXT
from charter.ledger.sqlbase import SqlStore
from charter.ledger.verify import verify_ledger, verify_run
from charter.runs.replay import replay
from tests.ledger.test_signing import Keys, write_key, write_public
from tests.runs.domain import PROFILE_EMAIL, Effects, contract, contract_data, to_yaml
from tests.stores import sql

SECRET_NOTE = "passport X9Z8Y7W6 of Ann"


def new_kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def kek(monkeypatch: pytest.MonkeyPatch) -> str:
    key = new_kek()
    monkeypatch.setenv("CHARTER_KEK", key)
    return key


@pytest.fixture
def sealed_rt(ledger: str, kek: str, effects: Effects) -> Iterator[Runtime]:
    rt = Runtime(open_store(ledger))
    yield rt
    rt.store.close()


def private_data(**changes: object) -> dict[str, Any]:
    """The ops contract's document, with its runs' subject named by the input's ``item``."""
    return contract_data(script="email_then_finish", privacy={"subject": "item"}, **changes)


def private(**changes: object) -> Contract:
    return contract(script="email_then_finish", privacy={"subject": "item"}, **changes)


def stored_text(ledger: str) -> str:
    return "\n".join(str(r[0]) for r in sql(ledger, "SELECT data FROM events"))


def test_a_sensitive_contracts_content_is_sealed_and_reads_back(
    sealed_rt: Runtime, ledger: str, effects: Effects
) -> None:
    run_id = sealed_rt.submit(
        private(), {"item": "cust-1", "to": PROFILE_EMAIL, "note": SECRET_NOTE}
    )
    state = sealed_rt.run(run_id)
    assert state.status == "completed"
    text = stored_text(ledger)
    for secret in (SECRET_NOTE, PROFILE_EMAIL, "cust-1"):
        assert secret not in text  # input, the pii channel, arguments: ciphertext only
    assert '"$sealed"' in text
    # reads unseal transparently; the chain covers the ciphertext; replay agrees
    [submitted] = [
        e.event for e in sealed_rt.store.events(run_id) if isinstance(e.event, RunSubmitted)
    ]
    assert submitted.input["note"] == SECRET_NOTE
    assert verify_run(sealed_rt.store, run_id) is None
    assert replay(sealed_rt.store, sealed_rt.contract_for(state.policy_hash), run_id).agrees
    # the projection count() reads holds the recipient blinded, and still matches it
    assert PROFILE_EMAIL not in str(sql(ledger, "SELECT args FROM executed_actions"))
    assert sealed_rt.store.count_executed("send_email", {"to": PROFILE_EMAIL}, "2000", "2999") == 1


def test_a_contract_reading_no_sensitive_data_is_not_sealed(
    sealed_rt: Runtime, ledger: str, effects: Effects
) -> None:
    plain = contract(channels={"profile": {"labels": []}})
    run_id = sealed_rt.submit(plain, {"item": "bolt", "note": "nothing secret"})
    assert sealed_rt.run(run_id).status == "completed"
    assert "nothing secret" in stored_text(ledger)
    assert sql(ledger, "SELECT count(*) FROM run_keys") == [(0,)]


def test_erasing_a_subject_destroys_its_content_not_its_chain(
    sealed_rt: Runtime, ledger: str, effects: Effects
) -> None:
    c = private()
    mine = [
        sealed_rt.submit(c, {"item": "cust-1", "to": PROFILE_EMAIL, "note": f"{SECRET_NOTE} {n}"})
        for n in (1, 2)
    ]
    other = sealed_rt.submit(c, {"item": "cust-2", "to": "bo@example.com", "note": "keep me"})
    for run_id in [*mine, other]:
        assert sealed_rt.run(run_id).status == "completed"
    assert isinstance(sealed_rt.store, SqlStore)
    erased = sealed_rt.store.erase_subject("cust-1", by="dpo", at="2026-03-03T00:00:00.000000Z")
    assert erased == sorted(mine)
    for run_id in mine:
        events = sealed_rt.store.events(run_id)
        submitted = events[0]
        assert submitted.unreadable_reason == "erased" and "input" in submitted.unreadable
        assert submitted.event.input == {}  # type: ignore[attr-defined]
        reads = [e for e in events if isinstance(e.event, ChannelRead) and e.unreadable]
        assert reads and all(e.event.content in ({}, [], ERASED_TEXT, None) for e in reads)  # type: ignore[attr-defined]
        assert verify_run(sealed_rt.store, run_id) is None  # the chain covers the ciphertext
        result = replay(
            sealed_rt.store, sealed_rt.contract_for(events[0].event.policy_hash), run_id
        )  # type: ignore[attr-defined]
        assert result.agrees and result.unreplayable and result.erased_events[0] == 1
        assert sealed_rt.state(run_id).status == "completed"
    # the other subject is untouched
    kept = sealed_rt.store.events(other)[0]
    assert kept.unreadable == () and kept.event.input["note"] == "keep me"  # type: ignore[attr-defined]
    # the projection no longer knows the erased subject's recipient, even blinded
    assert sealed_rt.store.count_executed("send_email", {"to": PROFILE_EMAIL}, "2000", "2999") == 0
    assert sealed_rt.store.count_executed("send_email", {}, "2000", "2999") == 3
    assert sql(ledger, "SELECT count(*) FROM data_keys WHERE erased_by = 'dpo'") == [(1,)]


def test_a_run_erased_before_it_ends_fails_instead_of_going_on(
    sealed_rt: Runtime, effects: Effects
) -> None:
    big = [[["write", {"item": "crate", "qty": 500}]]]
    run_id = sealed_rt.submit(
        contract(script="planned", privacy={"subject": "item"}), {"item": "cust-9", "plan": big}
    )
    assert sealed_rt.run(run_id).status == "waiting"
    sealed_rt.store.erase_subject("cust-9", by="dpo", at="2026-03-03T00:00:00.000000Z")  # type: ignore[attr-defined]
    sealed_rt.store.list_reviews()
    state = sealed_rt.state(run_id)
    assert state.status == "waiting"
    # a reviewer's verdict wakes it: the worker finds nothing to go on and fails it
    sealed_rt.decide_review(state.review.review_id, "approve", by="ann")  # type: ignore[union-attr]
    done = sealed_rt.run(run_id)
    assert done.status == "failed" and effects.applied() == []
    assert "the subject's data was erased" in done.terminal.event.error  # type: ignore[union-attr]


def test_without_the_key_content_reads_as_unreadable_and_workers_refuse(
    ledger: str, kek: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(open_store(ledger))
    run_id = rt.submit(private(), {"item": "cust-1", "to": PROFILE_EMAIL})
    rt.store.close()
    monkeypatch.delenv("CHARTER_KEK")
    keyless = Runtime(open_store(ledger))
    first = keyless.store.events(run_id)[0]
    assert (first.unreadable_reason, first.event.input) == ("no key", {})  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError, match="sealed at rest and this process has no key"):
        keyless.work_once()
    assert keyless.store.get_run(run_id).status == "queued"  # left for a worker that has it
    # a wrong key is refused as such, not read as garbage
    monkeypatch.setenv("CHARTER_KEK", new_kek())
    with pytest.raises(ConfigurationError, match="cannot be unwrapped"):
        Runtime(open_store(ledger)).store.events(run_id)
    keyless.store.close()


def test_rotating_the_kek_rewraps_keys_and_rewrites_no_event(
    ledger: str, kek: str, effects: Effects, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(open_store(ledger))
    run_id = rt.submit(private(), {"item": "cust-1", "to": PROFILE_EMAIL, "note": SECRET_NOTE})
    assert rt.run(run_id).status == "completed"
    rt.store.close()
    before = sql(ledger, "SELECT seq, data, hash FROM events ORDER BY run_id, seq")
    new_file = tmp_path / "new.kek"
    new_file.write_text(new_kek() + "\n")
    result = CliRunner().invoke(
        cli, ["keys", "rotate", "--new-kek-file", str(new_file), "--db", ledger]
    )
    assert result.exit_code == 0, result.output
    assert "re-wrapped 2 data key(s)" in result.stdout  # the index key and cust-1's key
    assert sql(ledger, "SELECT seq, data, hash FROM events ORDER BY run_id, seq") == before
    monkeypatch.setenv("CHARTER_KEK", new_file.read_text().strip())
    assert Runtime(open_store(ledger)).store.events(run_id)[0].event.input["note"] == SECRET_NOTE  # type: ignore[attr-defined]
    monkeypatch.setenv("CHARTER_KEK", kek)  # the old key no longer opens anything
    with pytest.raises(ConfigurationError, match="cannot be unwrapped"):
        Runtime(open_store(ledger)).store.events(run_id)


def test_charter_erase_from_the_command_line(ledger: str, kek: str, effects: Effects) -> None:
    rt = Runtime(open_store(ledger))
    run_id = rt.submit(private(), {"item": "cust-1", "to": PROFILE_EMAIL})
    assert rt.run(run_id).status == "completed"
    rt.store.close()
    result = CliRunner().invoke(
        cli, ["erase", "--subject", "cust-1", "--by", "dpo", "-y", "--db", ledger]
    )
    assert result.exit_code == 0, result.output
    assert "the sealed content of 1 run(s) is gone" in result.stdout and run_id in result.stdout
    shown = CliRunner().invoke(cli, ["run", "show", run_id, "--db", ledger])
    assert shown.exit_code == 0 and "erased" in shown.stdout
    again = CliRunner().invoke(cli, ["erase", "--subject", "cust-1", "-y", "--db", ledger])
    assert "nothing erased" in again.stdout
    # replay says which decisions can no longer be re-made, and is not a divergence
    replayed = CliRunner().invoke(cli, ["replay", run_id, "--db", ledger])
    assert replayed.exit_code == 0, replayed.output
    assert "decision(s) cannot be replayed (events " in replayed.stdout
    assert "what they were made on is erased" in replayed.stdout
    assert "0 agree, 0 diverge, 1 cannot be replayed" in replayed.stdout
    # a backtest leaves the run out instead of re-deciding on stand-ins
    contract_file = Path(ledger).parent / "private.yaml" if "://" not in ledger else None
    if contract_file is not None:
        contract_file.write_text(to_yaml(private_data()), encoding="utf-8")
        tested = CliRunner().invoke(cli, ["policy", "backtest", str(contract_file), "--db", ledger])
        assert tested.exit_code == 0, tested.output
        assert "0 decisions, 0 would change" in tested.stdout
        assert "1 run(s) left out: their content is erased" in tested.stdout


def test_verify_checks_a_sealed_runs_projections_with_and_without_its_key(
    ledger: str, kek: str, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = Runtime(open_store(ledger))
    c = private()
    runs = [rt.submit(c, {"item": f"cust-{n}", "to": PROFILE_EMAIL}) for n in (1, 2)]
    for run_id in runs:
        assert rt.run(run_id).status == "completed"
    ids = [r.run_id for r in rt.store.list_runs()]
    clean = verify_ledger(rt.store, ids, whole=True)
    assert clean.ok and clean.notes == []  # blinded arguments are what the events say
    # an administrator who rewrites a sealed run's projected arguments is found
    sql(ledger, 'UPDATE executed_actions SET args = \'{"to": "x"}\' WHERE run_id = ?', (runs[0],))
    [mismatch] = verify_ledger(rt.store, ids, whole=True).mismatches
    assert (mismatch.table, mismatch.field) == ("executed_actions", "args")
    rt.store.close()
    # without the key nothing can be blinded: the arguments are not compared, and it says so
    monkeypatch.delenv("CHARTER_KEK")
    keyless = open_store(ledger, read_only=True)
    found = verify_ledger(keyless, ids, whole=True)
    assert found.ok and len(found.notes) == 2
    assert "no key-encryption key: its executed arguments were not compared" in found.notes[0]
    keyless.close()


def test_verify_after_erasure_is_clean_and_signatures_it_cannot_read_are_noted(
    ledger: str, kek: str, effects: Effects, tmp_path: Path
) -> None:
    rt = Runtime(open_store(ledger))
    big = [[["write", {"item": "crate", "qty": 500}]]]
    run_id = rt.submit(
        contract(script="planned", privacy={"subject": "item"}), {"item": "cust-3", "plan": big}
    )
    review = rt.run(run_id).review
    assert review is not None
    keys = Keys(tmp_path / "private", tmp_path / "trusted")
    ann = ed25519.Ed25519PrivateKey.generate()
    write_key(keys.private, "ann", ann)
    write_public(keys.trusted, "ann", ann)
    rt.decide_review(review.review_id, "approve", by="ann", comment="ok", signer=keys.signer("ann"))
    assert rt.run(run_id).status == "completed"
    checker = keys.checker(require=True)
    before = verify_ledger(rt.store, [run_id], check_events=checker)
    assert before.ok and before.signed == 1
    assert isinstance(rt.store, SqlStore)
    rt.store.erase_subject("cust-3", by="dpo", at="2026-03-03T00:00:00.000000Z")
    after = verify_ledger(rt.store, [run_id], whole=True, check_events=checker)
    assert after.ok and after.signed == 0  # the erased args now project as {}
    [note] = after.notes
    assert "approve of review" in note and "cannot be checked" in note and "erased" in note
    rt.store.close()

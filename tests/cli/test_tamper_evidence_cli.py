"""``charter verify`` (projections, ``--anchors``, ``--sink``, ``--signatures``), ``charter
anchor``, and ``--key`` on verdicts and cancels, as an operator and an auditor use them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from charter.cli import cli
from charter.ledger.signing import KEY_ENV
from charter.runs.runtime import Runtime
from tests.ledger.tampering import delete_run
from tests.runs.conftest import effects
from tests.runs.domain import Effects, contract
from tests.stores import sql

__all__ = ["effects"]

BIG = [[["write", {"item": "crate", "qty": 500}]]]  # rule big-write: review


@pytest.fixture
def ledger(tmp_path: Path, effects: Effects, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A SQLite ledger with a completed run and two runs waiting for a review (real time:
    the CLI decides on the wall clock)."""
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHARTER_ANCHOR_SINK", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    db = tmp_path / "ledger.db"
    rt = Runtime(str(db), worker_id="w")
    rt.run(rt.submit(contract(), {"item": "bolt"}))
    for _ in range(2):
        rt.run(rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG}))
    rt.store.close()
    yield db


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="charter")


def pending(db: Path) -> list[tuple[str, str]]:
    return [
        (str(r), str(v))
        for r, v in sql(
            f"sqlite:///{db}",
            "SELECT review_id, run_id FROM reviews WHERE status = 'pending' ORDER BY review_id",
        )
    ]


def test_verify_checks_projections_and_names_the_row(ledger: Path) -> None:
    ok = charter("verify", "--db", ledger)
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[-1] == "3 run(s) checked, 3 intact, 0 broken"
    sql(f"sqlite:///{ledger}", "UPDATE executed_actions SET args = '{}' WHERE step = 1")
    bad = charter("verify", "--db", ledger)
    assert bad.exit_code == 1
    assert bad.output.splitlines()[-1] == "projections: 1 row(s) or field(s) differ from the events"
    assert "MISMATCH executed_actions run run_" in bad.output
    assert 'step 1: args is {}, the events say {"item": "bolt-1", "qty": 1}' in bad.output
    as_json = json.loads(charter("verify", "--db", ledger, "--json").output)
    assert as_json["projections"] == "ledger"
    [m] = as_json["mismatches"]
    assert (m["table"], m["field"], m["found"]) == ("executed_actions", "args", {})


def test_verify_says_when_the_roll_ups_were_not_checked(ledger: Path) -> None:
    [(_, run_id)] = pending(ledger)[:1]
    named = json.loads(charter("verify", run_id, "--db", ledger, "--json").output)
    assert named["projections"] == "runs"
    some = json.loads(charter("verify", "--limit", "2", "--db", ledger, "--json").output)
    assert some["projections"] == "runs"
    every = json.loads(charter("verify", "--limit", "3", "--db", ledger, "--json").output)
    assert every["projections"] == "ledger"  # a limit that leaves nothing out


def test_anchor_then_verify_anchors_finds_a_deleted_run(ledger: Path, tmp_path: Path) -> None:
    sink = tmp_path / "elsewhere" / "anchors.jsonl"
    sink.parent.mkdir()
    first = charter("anchor", "--db", ledger, "--sink", sink)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("anchor 1 at ")
    assert "over 3 run(s), 3 changed head(s) recorded" in first.output
    assert f"published anchor(s) 1 to {sink}" in first.output
    clean = charter("verify", "--db", ledger, "--sink", sink)
    assert clean.exit_code == 0, clean.output
    assert clean.output.splitlines()[-1] == (
        f"anchors: 1 anchor(s) (1 in {sink}) covering 3 run(s), 0 problem(s)"
    )

    [(_, victim)] = pending(ledger)[:1]
    delete_run(f"sqlite:///{ledger}", victim)
    plain = charter("verify", "--db", ledger)
    assert plain.exit_code == 0  # every remaining chain and row is consistent
    found = charter("verify", "--db", ledger, "--anchors")
    assert found.exit_code == 1
    assert f"ANCHOR deleted: run {victim} was deleted: anchor 1 covered it" in found.output
    report = json.loads(charter("verify", "--db", ledger, "--sink", sink, "--json").output)
    assert [(p["kind"], p["run_id"]) for p in report["anchors"]["problems"]] == [
        ("deleted", victim)
    ]

    again = charter("anchor", "--db", ledger, "--sink", sink, "--json")
    assert again.exit_code == 1  # anchored, and says what an earlier anchor covered is gone
    out = json.loads(again.output)
    assert (out["index"], out["runs"], out["gone"], out["published"]) == (2, 2, [victim], [2])


def test_a_forged_sink_line_fails_verify(ledger: Path, tmp_path: Path) -> None:
    sink = tmp_path / "anchors.jsonl"
    assert charter("anchor", "--db", ledger, "--sink", sink).exit_code == 0
    line = json.loads(sink.read_text())
    sink.write_text(json.dumps({**line, "runs": 2}) + "\n")
    result = charter("verify", "--db", ledger, "--sink", sink)
    assert result.exit_code == 1
    assert "ANCHOR sink: " in result.output and "is forged or damaged" in result.output


def test_verify_refuses_options_that_cannot_work(ledger: Path, tmp_path: Path) -> None:
    no_keys = charter("verify", "--db", ledger, "--signatures")
    assert no_keys.exit_code == 2
    assert "--signatures needs --trusted-keys DIR" in no_keys.output
    no_sink = charter("verify", "--db", ledger, "--sink", tmp_path / "none.jsonl")
    assert no_sink.exit_code == 2 and "no such file" in no_sink.output


def _keys(tmp_path: Path, *names: str) -> tuple[Path, Path]:
    private, trusted = tmp_path / "private", tmp_path / "trusted"
    private.mkdir()
    trusted.mkdir()
    for name in names:
        key = ed25519.Ed25519PrivateKey.generate()
        (private / f"{name}.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (trusted / f"{name}.pem").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, trusted


def test_signed_approvals_and_cancels_from_the_command_line(
    ledger: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, trusted = _keys(tmp_path, "alice", "ops")
    (review, _), (_, other) = pending(ledger)
    approve = charter(
        "review", "approve", review, "--by", "alice", "--key", private / "alice.pem",
        "--db", ledger,
    )  # fmt: skip
    assert approve.exit_code == 0, approve.output
    monkeypatch.setenv(KEY_ENV, str(private / "ops.pem"))
    cancel = charter("run", "cancel", other, "--by", "ops", "-y", "--db", ledger)
    assert cancel.exit_code == 0, cancel.output
    result = charter("verify", "--db", ledger, "--trusted-keys", trusted, "--require-signatures")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "signatures: 2 verified, 0 problem(s)"

    (trusted / "ops.pem").unlink()
    missing = charter("verify", "--db", ledger, "--signatures", "--trusted-keys", trusted)
    assert missing.exit_code == 1
    assert "SIGNATURE unknown-identity run" in missing.output
    assert "signed as ops, who has no key in" in missing.output


def test_unsigned_verdicts_fail_only_when_signatures_are_required(
    ledger: Path, tmp_path: Path
) -> None:
    _, trusted = _keys(tmp_path, "alice")
    (review, run_id), _ = pending(ledger)
    assert charter("review", "reject", review, "--comment", "no", "--db", ledger).exit_code == 0
    assert charter("verify", "--db", ledger, "--trusted-keys", trusted).exit_code == 0
    result = charter("verify", "--db", ledger, "--trusted-keys", trusted, "--require-signatures")
    assert result.exit_code == 1
    assert f"SIGNATURE unsigned run {run_id} event" in result.output
    assert f"reject of review {review} by" in result.output


def test_a_key_that_is_not_a_key_is_refused_before_anything_is_recorded(
    ledger: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    (review, _), _ = pending(ledger)
    result = charter("review", "approve", review, "--key", bad, "--db", ledger)
    assert result.exit_code == 2
    assert "is not a PEM private key" in result.output
    assert len(pending(ledger)) == 2

"""Signed verdicts and cancels: proved by the decider's key, checked offline, on every store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from charter.errors import UsageError
from charter.ledger.events import ReviewDecided, RunCancelled
from charter.ledger.signing import (
    KEY_ENV,
    PASSPHRASE_ENV,
    SignatureChecker,
    Signer,
    TrustedKeys,
    fingerprint,
    review_message,
    signer_from,
)
from charter.ledger.verify import Verification, verify, verify_ledger
from charter.runs.runtime import Runtime
from tests.ledger.populated import BIG
from tests.ledger.tampering import edit_event, rechain, seq_of
from tests.runs.domain import Clock, Effects, contract
from tests.stores import sql


def write_key(directory: Path, name: str, key: ed25519.Ed25519PrivateKey) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def write_public(directory: Path, name: str, key: ed25519.Ed25519PrivateKey) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@dataclass
class Keys:
    private: Path  # directory of private keys (the reviewers' own machines)
    trusted: Path  # directory of public keys (the auditor's)

    def signer(self, name: str) -> Signer:
        return Signer.from_file(self.private / f"{name}.pem")

    def checker(self, *, require: bool = False) -> SignatureChecker:
        return SignatureChecker(TrustedKeys(self.trusted), require=require)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    k = Keys(tmp_path / "private", tmp_path / "trusted")
    for name in ("alice", "ops", "mallory", "carol"):
        key = ed25519.Ed25519PrivateKey.generate()
        write_key(k.private, name, key)
        if name in ("alice", "ops"):
            write_public(k.trusted, name, key)
    return k


@pytest.fixture
def rt(ledger: str, clock: Clock, effects: Effects) -> Iterator[Runtime]:
    runtime = Runtime(ledger, clock=clock, worker_id="w")
    yield runtime
    runtime.store.close()


def waiting(rt: Runtime) -> tuple[str, str]:
    run_id = rt.submit(contract(script="planned"), {"item": "crate", "plan": BIG})
    review = rt.run(run_id).review
    assert review is not None
    return run_id, review.review_id


def checked(rt: Runtime, keys: Keys, *, require: bool = False) -> Verification:
    ids = rt.store.run_ids()
    assert verify(rt.store, ids) == (len(ids), [])  # every chain intact
    return verify_ledger(rt.store, ids, whole=True, check_events=keys.checker(require=require))


def test_signed_verdicts_and_cancels_verify_offline(rt: Runtime, keys: Keys) -> None:
    approved, review = waiting(rt)
    rt.people.decide_review(
        review, "approve", by="alice", comment="ok", signer=keys.signer("alice")
    )
    assert rt.run(approved).status == "completed"
    _, review = waiting(rt)
    rt.people.decide_review(review, "reject", by="alice", comment="no", signer=keys.signer("alice"))
    cancelled, _ = waiting(rt)
    rt.people.cancel(cancelled, by="ops", reason="stop", signer=keys.signer("ops"))
    [decided] = [e.event for e in rt.store.events(approved) if isinstance(e.event, ReviewDecided)]
    assert decided.signature is not None
    assert decided.signature["alg"] == "ed25519"
    assert decided.signature["key"] == fingerprint(keys.signer("alice").key.public_key())
    found = checked(rt, keys, require=True)
    assert found.ok and found.signed == 3


def test_unsigned_verdicts_are_stored_exactly_as_before() -> None:
    """No ``signature`` key in an unsigned payload: old ledgers' hashes stay valid, and an
    unsigned verdict written now hashes as it did before signatures existed."""
    assert "signature" not in ReviewDecided("rv", "approve", "a", "t", "d").to_data()
    assert "signature" not in RunCancelled("ops", "why").to_data()
    signed = RunCancelled("ops", "why", signature={"alg": "ed25519", "key": "k", "sig": "s"})
    assert signed.to_data()["signature"]["key"] == "k"


def test_a_verdict_rewritten_and_re_hashed_fails_its_signature(
    rt: Runtime, keys: Keys, ledger: str
) -> None:
    """The administrator turns a signed reject into an approve, fixes the reviews row and
    re-hashes the chain: every check but the signature passes."""
    run_id, review = waiting(rt)
    rt.people.decide_review(review, "reject", by="alice", comment="no", signer=keys.signer("alice"))
    seq = seq_of(ledger, run_id, "review.decided")
    edit_event(ledger, run_id, seq, lambda d: d.update(verdict="approve", comment=""))
    rechain(ledger, run_id)
    sql(ledger, "UPDATE reviews SET verdict = 'approve' WHERE review_id = ?", (review,))
    found = checked(rt, keys)
    assert found.mismatches == [] and found.broken == []
    [problem] = found.signatures
    assert (problem.run_id, problem.seq, problem.kind) == (run_id, seq, "invalid")
    assert str(problem) == (
        f"run {run_id} event {seq}: approve of review {review} by alice: the signature does "
        "not match what is recorded (changed after it was signed, or forged)"
    )


def test_a_signature_forged_into_an_unsigned_verdict_is_invalid(
    rt: Runtime, keys: Keys, ledger: str
) -> None:
    run_id, review = waiting(rt)
    rt.decide_review(review, "approve", by="alice", comment="ok")
    seq = seq_of(ledger, run_id, "review.decided")
    key_id = fingerprint(keys.signer("alice").key.public_key())
    fake = base64.b64encode(b"\0" * 64).decode()
    edit_event(
        ledger,
        run_id,
        seq,
        lambda d: d.update(signature={"alg": "ed25519", "key": key_id, "sig": fake}),
    )
    rechain(ledger, run_id)
    assert [p.kind for p in checked(rt, keys).signatures] == ["invalid"]


def test_a_verdict_signed_with_someone_elses_key_is_found(rt: Runtime, keys: Keys) -> None:
    _, review = waiting(rt)
    rt.people.decide_review(
        review, "approve", by="alice", comment="ok", signer=keys.signer("mallory")
    )
    [problem] = checked(rt, keys).signatures
    assert problem.kind == "wrong-key"
    assert "not alice's trusted key" in problem.message


def test_a_signer_without_a_trusted_key_is_found(rt: Runtime, keys: Keys) -> None:
    _, review = waiting(rt)
    rt.people.decide_review(
        review, "approve", by="carol", comment="ok", signer=keys.signer("carol")
    )
    [problem] = checked(rt, keys).signatures
    assert problem.kind == "unknown-identity"
    assert f"signed as carol, who has no key in {keys.trusted}" in problem.message


def test_unsigned_verdicts_and_cancels_are_reported_only_when_required(
    rt: Runtime, keys: Keys, clock: Clock
) -> None:
    approved, review = waiting(rt)
    rt.decide_review(review, "approve", by="alice", comment="ok")
    cancelled, _ = waiting(rt)
    rt.cancel(cancelled, by="ops", reason="stop")
    assert checked(rt, keys).ok
    found = checked(rt, keys, require=True)
    assert sorted((p.run_id, p.kind) for p in found.signatures) == sorted(
        [(approved, "unsigned"), (cancelled, "unsigned")]
    )
    assert any(str(p).endswith("cancel by ops is not signed") for p in found.signatures)


def test_an_expired_review_needs_no_signature(rt: Runtime, keys: Keys, clock: Clock) -> None:
    """``expired`` is the runtime's verdict when the SLA passes, not a person's."""
    from datetime import timedelta

    run_id, _ = waiting(rt)
    clock.advance(timedelta(hours=2))
    rt.run(run_id)
    verdicts = [e.event for e in rt.store.events(run_id) if isinstance(e.event, ReviewDecided)]
    assert [v.verdict for v in verdicts] == ["expired"]
    assert checked(rt, keys, require=True).ok


def test_the_signed_message_is_canonical_json_anyone_can_check(keys: Keys) -> None:
    message = review_message("run_1", "rv_1", "d" * 64, "approve", "alice", "t", "ok", None)
    assert json.loads(message) == {
        "type": "review.decided",
        "run": "run_1",
        "review": "rv_1",
        "digest": "d" * 64,
        "verdict": "approve",
        "by": "alice",
        "at": "t",
        "comment": "ok",
        "edited_args": None,
    }
    signature = keys.signer("alice").sign(message)
    public = serialization.load_pem_public_key((keys.trusted / "alice.pem").read_bytes())
    assert isinstance(public, ed25519.Ed25519PublicKey)
    public.verify(base64.b64decode(signature["sig"]), message)  # raises if it does not hold


# -- keys -----------------------------------------------------------------------------------
def test_the_key_comes_from_the_option_or_the_environment(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert signer_from(None) is None
    monkeypatch.setenv(KEY_ENV, str(keys.private / "ops.pem"))
    from_env = signer_from(None)
    assert from_env is not None and from_env.key_id == keys.signer("ops").key_id
    from_option = signer_from(keys.private / "alice.pem")
    assert from_option is not None and from_option.key_id == keys.signer("alice").key_id


def test_an_encrypted_key_needs_its_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "enc.pem"
    path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    with pytest.raises(UsageError, match=f"is encrypted: set \\${PASSPHRASE_ENV}"):
        signer_from(path)
    monkeypatch.setenv(PASSPHRASE_ENV, "secret")
    assert signer_from(path) is not None


def test_keys_that_are_not_ed25519_pem_are_refused(tmp_path: Path, keys: Keys) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(UsageError, match="is not a PEM private key"):
        Signer.from_file(junk)
    rsa_key = tmp_path / "rsa.pem"
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(UsageError, match="is not an Ed25519 key"):
        Signer.from_file(rsa_key)
    with pytest.raises(UsageError, match="cannot read the signing key"):
        Signer.from_file(tmp_path / "missing.pem")
    (keys.trusted / "bob.pem").write_bytes((keys.private / "alice.pem").read_bytes())
    with pytest.raises(UsageError, match=r"bob\.pem is not a PEM public key"):
        TrustedKeys(keys.trusted)
    with pytest.raises(UsageError, match="not a directory"):
        TrustedKeys(tmp_path / "nowhere")


def test_trusted_keys_are_named_after_their_identity(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    path = write_public(tmp_path / "t", "ann@example.com", key)
    path.rename(path.with_suffix(".pub"))
    (tmp_path / "t" / ".hidden").write_text("ignored")
    trusted = TrustedKeys(tmp_path / "t")
    assert list(trusted.keys) == ["ann@example.com"]

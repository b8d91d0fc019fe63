"""Signed verdicts and cancels: who decided is proved by a key, not by a database column.

A reviewer's verdict names its reviewer (``review.decided``'s ``by``), and an operator's
cancel its operator; both are text in the ledger, which an administrator with write access
could rewrite (and re-hash). With a signing key, the verdict carries an **Ed25519
signature** by the deciding identity over exactly what was decided: the run, the review,
the digest of the exact action (edited arguments included), the verdict, the comment, the
identity and the time (for a cancel: the run, the identity, the reason and the time). Anyone
holding the identity's *public* key can check it offline, without trusting the database:
``charter verify --signatures --trusted-keys DIR``.

Keys: a reviewer's private key is a PEM file (``openssl genpkey -algorithm ed25519``), given
by ``--key PATH`` or ``$CHARTER_SIGNING_KEY`` (``$CHARTER_SIGNING_KEY_PASSPHRASE`` if it is
encrypted). Public keys for verification live in a directory, one PEM file per identity,
named after it (``ann@example.com.pem``; a ``.pem`` or ``.pub`` suffix is dropped).

The signed message is the canonical JSON (sorted keys, no spaces, UTF-8) of
:func:`review_message` / :func:`cancel_message`; the event's ``signature`` is
``{"alg": "ed25519", "key": <sha256 of the raw public key, hex>, "sig": <base64>}``.

``cryptography`` (a dependency of the package) is imported only when keys are used.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.errors import UsageError
from charter.ledger.events import ReviewDecided, RunCancelled, StoredEvent
from charter.primitives import canonical

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from charter.ledger.verify import Verification

KEY_ENV = "CHARTER_SIGNING_KEY"
PASSPHRASE_ENV = "CHARTER_SIGNING_KEY_PASSPHRASE"
ALGORITHM = "ed25519"
#: verdicts a person gives (``expired`` is the runtime's, when a review's SLA passes)
SIGNED_VERDICTS = ("approve", "reject")


def review_message(
    run_id: str,
    review_id: str,
    digest: str,
    verdict: str,
    by: str,
    at: str,
    comment: str,
    edited_args: dict[str, Any] | None,
) -> bytes:
    """What a reviewer signs: this verdict on this exact action, by this identity, now."""
    return canonical(
        {
            "type": "review.decided",
            "run": run_id,
            "review": review_id,
            "digest": digest,
            "verdict": verdict,
            "by": by,
            "at": at,
            "comment": comment,
            "edited_args": edited_args,
        }
    ).encode("utf-8")


def cancel_message(run_id: str, by: str, reason: str, at: str) -> bytes:
    """What an operator signs to cancel a run (``at``: the time the event is recorded)."""
    return canonical(
        {"type": "run.cancelled", "run": run_id, "by": by, "reason": reason, "at": at}
    ).encode("utf-8")


def _crypto() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization


def fingerprint(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex: which key signed."""
    serialization = _crypto()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Signer:
    """An identity's private key, signing verdicts and cancels."""

    key: Ed25519PrivateKey
    key_id: str
    source: str

    @classmethod
    def from_file(cls, path: str | Path, passphrase: str | None = None) -> Signer:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        serialization = _crypto()
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the signing key {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.encode("utf-8") if passphrase else None
            )
        except TypeError:
            raise UsageError(
                f"the signing key {path} is encrypted: set ${PASSPHRASE_ENV} to its passphrase"
            ) from None
        except ValueError as exc:
            raise UsageError(
                f"{path} is not a PEM private key ({exc}); make one with "
                "`openssl genpkey -algorithm ed25519 -out KEY.pem`"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise UsageError(f"the signing key {path} is not an Ed25519 key")
        return cls(key, fingerprint(key.public_key()), str(path))

    def sign(self, message: bytes) -> dict[str, str]:
        return {
            "alg": ALGORITHM,
            "key": self.key_id,
            "sig": base64.b64encode(self.key.sign(message)).decode("ascii"),
        }


def signer_from(path: str | Path | None) -> Signer | None:
    """The signer for ``--key PATH``, else ``$CHARTER_SIGNING_KEY``; ``None`` if neither."""
    chosen = path or os.environ.get(KEY_ENV)
    if not chosen:
        return None
    return Signer.from_file(chosen, os.environ.get(PASSPHRASE_ENV))


class TrustedKeys:
    """Public keys by identity: the PEM files of a directory, named after their identity."""

    def __init__(self, directory: str | Path) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        serialization = _crypto()
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise UsageError(f"--trusted-keys {directory}: not a directory")
        self.keys: dict[str, Ed25519PublicKey] = {}
        for file in sorted(self.directory.iterdir()):
            if file.name.startswith(".") or not file.is_file():
                continue
            identity = file.name
            for suffix in (".pem", ".pub"):
                identity = identity.removesuffix(suffix)
            try:
                key = serialization.load_pem_public_key(file.read_bytes())
            except ValueError:
                raise UsageError(
                    f"{file} is not a PEM public key (a private key? export its public half: "
                    f"`openssl pkey -in KEY.pem -pubout -out {file.name}`)"
                ) from None
            if not isinstance(key, Ed25519PublicKey):
                raise UsageError(f"{file} is not an Ed25519 public key")
            self.keys[identity] = key

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class SignatureProblem:
    """A signed event that does not verify, or (when signatures are required) an unsigned
    one. ``kind``: ``unsigned``, ``unknown-identity``, ``wrong-key``, ``invalid``."""

    run_id: str
    seq: int
    kind: str
    message: str

    def to_dict(self) -> dict[str, object]:
        return {"run_id": self.run_id, "seq": self.seq, "kind": self.kind, "message": self.message}

    def __str__(self) -> str:
        return f"run {self.run_id} event {self.seq}: {self.message}"


def signed_message(run_id: str, stored: StoredEvent) -> bytes | None:
    """The message a person signed for this event; ``None`` for events no person signs."""
    ev = stored.event
    if isinstance(ev, ReviewDecided) and ev.verdict in SIGNED_VERDICTS:
        return review_message(
            run_id,
            ev.review_id,
            ev.digest,
            ev.verdict,
            ev.by,
            ev.decided_at,
            ev.comment,
            ev.edited_args,
        )
    if isinstance(ev, RunCancelled):
        return cancel_message(run_id, ev.by, ev.reason, stored.at)
    return None


class SignatureChecker:
    """Checks every verdict and cancel of a run against the trusted keys (a
    :class:`~charter.ledger.verify.EventChecker` for ``verify_ledger``)."""

    def __init__(self, trusted: TrustedKeys, *, require: bool = False) -> None:
        self.trusted = trusted
        self.require = require

    def __call__(
        self, run_id: str, events: Sequence[StoredEvent], verification: Verification
    ) -> list[SignatureProblem]:
        from cryptography.exceptions import InvalidSignature

        out: list[SignatureProblem] = []
        for stored in events:
            message = signed_message(run_id, stored)
            if message is None:
                continue
            ev = stored.event
            assert isinstance(ev, ReviewDecided | RunCancelled)
            what = (
                f"{ev.verdict} of review {ev.review_id}"
                if isinstance(ev, ReviewDecided)
                else "cancel"
            )
            signature = ev.signature
            if stored.unreadable and signature is not None:
                # what was signed is sealed content this process cannot read (erased, or
                # no key): the signature can be neither confirmed nor refuted
                verification.notes.append(
                    f"run {run_id} event {stored.seq}: the signature of the {what} by {ev.by} "
                    f"cannot be checked: its {', '.join(stored.unreadable)} "
                    f"{'is' if len(stored.unreadable) == 1 else 'are'} {stored.unreadable_reason}"
                )
                continue
            if signature is None:
                if self.require:
                    out.append(
                        SignatureProblem(
                            run_id, stored.seq, "unsigned", f"{what} by {ev.by} is not signed"
                        )
                    )
                continue
            key = self.trusted.keys.get(ev.by)
            if key is None:
                out.append(
                    SignatureProblem(
                        run_id,
                        stored.seq,
                        "unknown-identity",
                        f"{what} is signed as {ev.by}, who has no key in {self.trusted.directory}",
                    )
                )
                continue
            if signature.get("key") != fingerprint(key):
                out.append(
                    SignatureProblem(
                        run_id,
                        stored.seq,
                        "wrong-key",
                        f"{what} by {ev.by} was signed with key {str(signature.get('key'))[:16]}…, "
                        f"not {ev.by}'s trusted key {fingerprint(key)[:16]}…",
                    )
                )
                continue
            try:
                if signature.get("alg") != ALGORITHM:
                    raise InvalidSignature
                key.verify(base64.b64decode(str(signature.get("sig")), validate=True), message)
            except (InvalidSignature, ValueError):
                out.append(
                    SignatureProblem(
                        run_id,
                        stored.seq,
                        "invalid",
                        f"{what} by {ev.by}: the signature does not match what is recorded "
                        "(changed after it was signed, or forged)",
                    )
                )
                continue
            verification.signed += 1
        return out

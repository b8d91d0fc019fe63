"""Encryption at rest with erasure: sensitive content sealed per subject, keys that can die.

The ledger is append-only and hash-chained, yet it holds what regulators care most about:
customer data. Both are kept by *sealing*: when a deployment configures a key-encryption key
(KEK), the content fields of every event of a run whose contract reads sensitive data
(channels labelled ``pii`` or ``confidential``, or the labels its ``privacy.sensitive``
names) are encrypted (AES-256-GCM) with a data key of the run's *subject* (the input field
``privacy.subject`` names, e.g. the customer id; the run itself if none). The data key is
stored wrapped by the KEK. The chain covers the ciphertext, so ``charter verify`` needs no
key; reads unseal transparently.

*Erasure* (``charter erase --subject ID``) destroys the subject's data keys: its sealed
content becomes unreadable everywhere at once (crypto-shredding) without a single event
being rewritten, so every chain still verifies. Reads show the fields as erased; a replay
reports precisely which decisions can no longer be re-made.

What stays clear, so that the ledger stays operable after an erasure: event types,
positions and times; decisions' effects, matched rules and reasons (the policy's words);
reviews' identities, verdicts and times; model calls' providers, tokens and costs. What is
sealed: inputs, channel contents, prompts and outputs, proposed and edited arguments,
results, reviewers' comments, error texts, and the ``count()`` answers recorded with
decisions (:data:`SEALED`). The projection of executed actions that ``count()`` reads holds
arguments *blinded* (a keyed hash under the deployment's index key) instead of in clear.

The KEK comes from ``CHARTER_KEK`` (32 bytes, base64) or ``CHARTER_KEK_FILE``; a KMS is another
:class:`KeyEncryptionKey`. ``charter keys rotate`` re-wraps every data key under a new KEK
without touching an event.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from charter.errors import ConfigurationError
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    ChannelRead,
    CompensationStarted,
    Event,
    ModelCalled,
    ProposalAccepted,
    ProposalRejected,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
    RunSubmitted,
)
from charter.primitives import canonical

KEK_ENV = "CHARTER_KEK"
KEK_FILE_ENV = "CHARTER_KEK_FILE"

#: The fields of each event type that are sealed (dotted paths into the event's fields).
SEALED: dict[type[Event], tuple[str, ...]] = {
    RunSubmitted: ("input", "context"),
    ChannelRead: ("content",),
    RunAdmitted: ("decision.counts", "decision.errors"),
    RunRefused: ("decision.counts", "decision.errors"),
    ModelCalled: ("prompt", "raw_output"),
    ProposalAccepted: ("actions", "rationale", "final"),
    ProposalRejected: ("reasons",),
    ActionDecided: ("args", "decision.counts", "decision.errors"),
    ReviewRequested: ("args", "decision.counts", "decision.errors"),
    ReviewDecided: ("edited_args", "comment"),
    ActionStarted: ("args",),
    ActionCompleted: ("args", "result", "match_args"),
    ActionFailed: ("error",),
    ActionShadowed: ("args",),
    CompensationStarted: ("reason", "decision.counts", "decision.errors"),
    RunCompleted: ("outcome", "decision.counts", "decision.errors"),
    RunFailed: ("error", "decision.counts", "decision.errors"),
    RunEscalated: ("reason",),
    RunCancelled: ("reason",),
}

#: The marker of sealed content in a stored payload.
SEALED_KEY = "$sealed"
#: The ``data_keys`` subject of the deployment's index key (blinding, not sealing).
INDEX_SUBJECT = "*index*"
#: What a read puts in place of a field whose key is gone, by the field's JSON type.
ERASED_TEXT = "[erased]"


class KeyEncryptionKey(Protocol):
    """What wraps data keys: a local key, or a KMS (an HSM, a cloud key service)."""

    key_id: str

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ConfigurationError(f"sealing needs the cryptography package ({exc})") from None
    return AESGCM(key)


class LocalKek:
    """A 256-bit KEK held by this process (from the environment or a file)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ConfigurationError(
                f"the key-encryption key must be 32 bytes (base64 of 32 bytes), not {len(key)}"
            )
        self._key = key
        self.key_id = "local:" + hashlib.sha256(b"charter-kek-id" + key).hexdigest()[:16]

    def wrap(self, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + bytes(_aesgcm(self._key).encrypt(nonce, data_key, b"charter-data-key"))

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return bytes(
                _aesgcm(self._key).decrypt(wrapped[:12], wrapped[12:], b"charter-data-key")
            )
        except Exception as exc:  # InvalidTag: not wrapped by this key
            raise ConfigurationError(
                f"a data key cannot be unwrapped with KEK {self.key_id} ({type(exc).__name__}); "
                "is CHARTER_KEK the key this ledger was sealed with?"
            ) from None


def read_kek(text: str, where: str) -> LocalKek:
    """A KEK from its base64 text (``openssl rand -base64 32``)."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ConfigurationError(
            f"{where} is not base64 (make one with: openssl rand -base64 32)"
        ) from None
    return LocalKek(key)


def kek_from_env() -> LocalKek | None:
    """The deployment's KEK from ``CHARTER_KEK`` or ``CHARTER_KEK_FILE``; ``None`` if neither."""
    text = os.environ.get(KEK_ENV)
    if text:
        return read_kek(text, KEK_ENV)
    path = os.environ.get(KEK_FILE_ENV)
    if path:
        try:
            return read_kek(Path(path).read_text("utf-8"), f"{KEK_FILE_ENV} ({path})")
        except OSError as exc:
            raise ConfigurationError(f"{KEK_FILE_ENV}: cannot read {path}: {exc}") from None
    return None


def new_data_key() -> bytes:
    return os.urandom(32)


def _encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode(text: str) -> bytes:
    return base64.b64decode(text)


def _get(data: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _pop(data: dict[str, Any], path: str) -> None:
    parts = path.split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _stand_in(value: Any) -> Any:
    """What an unreadable field reads as: the same JSON type, empty."""
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    if isinstance(value, str):
        return ERASED_TEXT
    return None


def _aad(run_id: str, type_: str) -> bytes:
    # sealed content cannot be moved to another run or another kind of event
    return canonical([run_id, type_]).encode("utf-8")


def seal(
    data: dict[str, Any], paths: Sequence[str], key_id: str, key: bytes, run_id: str, type_: str
) -> dict[str, Any]:
    """``data`` with the fields at ``paths`` moved into one AES-GCM ciphertext."""
    secret: dict[str, Any] = {}
    shapes: dict[str, Any] = {}
    out: dict[str, Any] = _deep_copy(data)
    for path in paths:
        present, value = _get(out, path)
        if present and value not in (None, "", [], {}):
            secret[path] = value
            shapes[path] = _stand_in(value)
            _pop(out, path)
    if not secret:
        return data
    nonce = os.urandom(12)
    ciphertext = _aesgcm(key).encrypt(nonce, canonical(secret).encode("utf-8"), _aad(run_id, type_))
    out[SEALED_KEY] = {
        "key": key_id,
        "nonce": _encode(nonce),
        "data": _encode(bytes(ciphertext)),
        "shapes": shapes,
    }
    return out


def seal_erased(data: dict[str, Any], paths: Sequence[str], key_id: str) -> dict[str, Any]:
    """``data`` for a run whose subject was erased: the sealed fields are not written at
    all (their stand-ins are), so nothing of the subject enters the ledger again."""
    out: dict[str, Any] = _deep_copy(data)
    shapes: dict[str, Any] = {}
    for path in paths:
        present, value = _get(out, path)
        if present and value not in (None, "", [], {}):
            shapes[path] = _stand_in(value)
            _pop(out, path)
    if not shapes:
        return data
    out[SEALED_KEY] = {"key": key_id, "erased": True, "shapes": shapes}
    return out


@dataclass(frozen=True)
class Unsealed:
    """A stored payload made readable: its fields, and which could not be (and why)."""

    data: dict[str, Any]
    #: dotted paths of fields whose key is erased or not available here
    unreadable: tuple[str, ...] = ()
    #: ``erased`` (the subject's key was destroyed) or ``no key`` (no KEK in this process)
    reason: str = ""


def unseal(
    data: dict[str, Any], key: bytes | None, run_id: str, type_: str, reason: str = ""
) -> Unsealed:
    """``data`` with its sealed fields back in place, or stand-ins if ``key`` is ``None``."""
    sealed = data.get(SEALED_KEY)
    if not isinstance(sealed, Mapping):
        return Unsealed(data)
    out = {k: v for k, v in data.items() if k != SEALED_KEY}
    shapes: Mapping[str, Any] = sealed.get("shapes") or {}
    if key is None:
        for path, shape in shapes.items():
            _ensure(out, path, shape)
        return Unsealed(out, tuple(shapes), reason or "no key")
    plain = _aesgcm(key).decrypt(
        _decode(str(sealed["nonce"])), _decode(str(sealed["data"])), _aad(run_id, type_)
    )
    for path, value in json.loads(plain).items():
        _ensure(out, path, value)
    return Unsealed(out)


def _ensure(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def blind(index_key: bytes, value: Any) -> str:
    """An argument as the projection of executed actions holds it for a sealed run: a keyed
    hash, equal for equal values (so ``count()`` still matches) and unreadable without the
    deployment's index key."""
    mac = hmac.new(index_key, canonical(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return "blind:" + mac[:40]


def blind_args(index_key: bytes, args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: blind(index_key, v) for k, v in args.items()}

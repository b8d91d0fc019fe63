"""The store interface every ledger backend implements.

The runtime only ever talks to a :class:`Store`: append events to a run (optimistically,
against the sequence number it last saw, and fenced by its lease epoch), read a run's
events, claim runnable work with a lease, and answer the queries policy and people need.
Projections (the runs queue, reviews, executed actions) are updated in the same
transaction as the events they derive from, so they can never disagree with the ledger.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charter.errors import StoreError
from charter.ledger.events import Event, StoredEvent

DEFAULT_PAYLOAD_CAP = 64 * 1024
DEFAULT_DB = "charter.db"


class ConflictError(StoreError):
    """Someone else appended to the run first, or this worker's lease was taken over."""

    code = "conflict"


@dataclass(frozen=True)
class RunRow:
    run_id: str
    contract: str
    contract_name: str
    policy_hash: str
    status: str
    idempotency_key: str | None
    created_at: str
    updated_at: str
    wake_at: str | None
    lease_owner: str | None
    lease_expires: str | None
    epoch: int
    last_seq: int
    last_hash: str


@dataclass(frozen=True)
class ReviewRow:
    review_id: str
    run_id: str
    contract: str
    kind: str
    step: int | None
    action: str | None
    effect: str
    status: str
    reviewers: list[str]
    reasons: list[str]
    requested_at: str
    due_at: str | None
    decided_at: str | None
    decided_by: str | None
    verdict: str | None


@dataclass(frozen=True)
class RawEvent:
    """An event row exactly as stored, for chain verification."""

    run_id: str
    seq: int
    type: str
    at: str
    data_json: str
    prev_hash: str
    hash: str


_UNSET: Any = object()


class Store(ABC):
    """A ledger backend. Implementations: :class:`charter.ledger.sqlite.SQLiteStore`."""

    url: str
    payload_cap: int = DEFAULT_PAYLOAD_CAP

    @abstractmethod
    def close(self) -> None: ...

    # -- contracts -------------------------------------------------------------------
    @abstractmethod
    def save_bundle(self, policy_hash: str, ref: str, bundle: Mapping[str, Any]) -> None:
        """Keep the exact contract (and packs) a run was submitted with, by policy hash."""

    @abstractmethod
    def load_bundle(self, policy_hash: str) -> dict[str, Any]: ...

    # -- runs and events -------------------------------------------------------------
    @abstractmethod
    def create_run(
        self,
        run_id: str,
        *,
        contract: str,
        contract_name: str,
        policy_hash: str,
        idempotency_key: str | None,
        event: Event,
        at: str,
    ) -> tuple[str, bool]:
        """Create a queued run with its first event; with a known key return (existing id, False)."""

    @abstractmethod
    def append(
        self,
        run_id: str,
        events: Sequence[Event],
        *,
        expected_seq: int,
        at: str,
        epoch: int | None = None,
        status: str | None = None,
        wake_at: str | None = _UNSET,
    ) -> list[StoredEvent]:
        """Append events atomically after ``expected_seq``; raise :class:`ConflictError` if
        another writer got there first or (with ``epoch``) the lease moved on."""

    @abstractmethod
    def events(self, run_id: str) -> list[StoredEvent]: ...

    @abstractmethod
    def raw_events(self, run_id: str) -> Iterator[RawEvent]: ...

    @abstractmethod
    def get_run(self, run_id: str) -> RunRow: ...

    @abstractmethod
    def find_run(self, prefix: str) -> RunRow:
        """A run by id or unambiguous id prefix, as people type them."""

    @abstractmethod
    def list_runs(
        self, *, status: str | None = None, contract: str | None = None, limit: int = 100
    ) -> list[RunRow]: ...

    @abstractmethod
    def run_ids(
        self, *, contract_name: str | None = None, since: str | None = None
    ) -> list[str]: ...

    # -- work queue ------------------------------------------------------------------
    @abstractmethod
    def claim(self, worker: str, now: str, lease_until: str) -> RunRow | None:
        """Lease one runnable run (queued, or waiting with ``wake_at`` due) to ``worker``."""

    @abstractmethod
    def claim_run(self, run_id: str, worker: str, now: str, lease_until: str) -> RunRow | None:
        """Lease a specific run if it is free; ``None`` if another worker holds it."""

    @abstractmethod
    def renew(self, run_id: str, worker: str, epoch: int, lease_until: str) -> bool: ...

    @abstractmethod
    def release(self, run_id: str, worker: str, epoch: int) -> None: ...

    # -- queries ---------------------------------------------------------------------
    @abstractmethod
    def count_executed(self, action: str, match: Mapping[str, Any], since: str, until: str) -> int:
        """Executed actions named ``action`` whose args contain ``match``, in [since, until]."""

    @abstractmethod
    def list_reviews(self, *, status: str | None = "pending") -> list[ReviewRow]: ...

    @abstractmethod
    def get_review(self, review_id: str) -> ReviewRow: ...


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """Open the ledger named by ``url``, ``$CHARTER_DATABASE_URL``, or ``./charter.db``.

    ``sqlite:///path``, ``sqlite:///:memory:`` and plain file paths select SQLite.
    ``create=False`` refuses to create a missing database (for read-only commands).
    """
    target = url or os.environ.get("CHARTER_DATABASE_URL") or DEFAULT_DB
    cap = int(os.environ.get("CHARTER_PAYLOAD_CAP", DEFAULT_PAYLOAD_CAP))
    if target.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "PostgreSQL ledgers are not available in this version; use a SQLite path "
            "(e.g. --db charter.db) or sqlite:///path/to/ledger.db"
        )
    if "://" in target and not target.startswith("sqlite://"):
        raise StoreError(f"unsupported database URL {target!r}; use sqlite:///path/to/ledger.db")
    from charter.ledger.sqlite import SQLiteStore

    path = target.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStore(path or DEFAULT_DB, create=create, payload_cap=cap)

"""The store interface every ledger backend implements.

The runtime only ever talks to a :class:`Store`: append events to a run (optimistically,
against the sequence number it last saw, and fenced by its lease epoch), read a run's
events, claim runnable work with a lease, and answer the queries policy and people need.
Projections (the runs queue, reviews, executed actions) are updated in the same
transaction as the events they derive from, so they can never disagree with the ledger.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from charter.errors import StoreError
from charter.ledger.events import Event, StoredEvent
from charter.ledger.sealing import Unsealed

DEFAULT_PAYLOAD_CAP = 64 * 1024
DEFAULT_DB = "charter.db"


def check_schema_version(version: int, where: str, *, older: bool = False) -> None:
    """The ledger's schema must not be newer than this code's; nor older, unless the caller
    is about to migrate it (``older``): a read-only open cannot."""
    from charter.ledger.migrations import MIGRATIONS

    newest = max(m.version for m in MIGRATIONS)
    if version > newest:
        raise StoreError(
            f"ledger {where} has schema version {version}, newer than this Charter supports "
            f"({newest}); upgrade Charter"
        )
    if version < newest and not older:
        raise StoreError(
            f"ledger {where} has schema version {version}, older than this Charter's "
            f"({newest}); run `charter migrate` (or any command that writes) to upgrade it"
        )


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
    """A ledger backend. Implementations: :class:`charter.ledger.sqlite.SQLiteStore` and
    :class:`charter.ledger.postgres.PostgresStore`; both pass one conformance suite."""

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
        seal_subject: str | None = None,
    ) -> tuple[str, bool]:
        """Create a queued run with its first event; with a known key return (existing id, False).

        ``seal_subject``: the run's content is sealed at rest under that subject's data key
        (when the store has a key-encryption key; see :mod:`charter.ledger.sealing`).
        """

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
    def open_sealed(self, run_id: str, type_: str, payload: dict[str, Any]) -> Unsealed:
        """A stored payload holding sealed content, opened with this store's key (content
        whose key is erased or absent reads as stand-ins, named in the result)."""

    @abstractmethod
    def projected_args(self, args: Any) -> Any:
        """What ``executed_actions.args`` holds for a sealed run's arguments (blinded)."""

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
    def claim(
        self,
        worker: str,
        now: str,
        lease_until: str,
        *,
        max_per_contract: Mapping[str, int] | None = None,
    ) -> RunRow | None:
        """Lease one runnable run (queued, or waiting with ``wake_at`` due) to ``worker``.

        ``max_per_contract`` caps how many runs of a contract (by name) may hold a live lease
        at once, counted across every worker sharing the ledger: a contract at its cap is
        skipped, so other contracts' runs still flow.
        """

    @abstractmethod
    def claim_run(self, run_id: str, worker: str, now: str, lease_until: str) -> RunRow | None:
        """Lease a specific run if it is free; ``None`` if another worker holds it."""

    @abstractmethod
    def renew(self, run_id: str, worker: str, epoch: int, lease_until: str) -> bool: ...

    @abstractmethod
    def release(self, run_id: str, worker: str, epoch: int) -> None: ...

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Block until new work may be ready, ``timeout`` passes, or ``stop`` is set.

        Idle workers call this between empty claims. The default polls (sleeps); a store
        that can be told about new work (PostgreSQL's ``LISTEN/NOTIFY``) returns as soon as
        a run is queued, so an idle worker picks it up at once.
        """
        if stop is not None:
            stop.wait(timeout)
        else:
            time.sleep(timeout)

    @abstractmethod
    def acquire_rate_slot(self, key: str, limit: int, now: str, since: str) -> str | None:
        """Take one of ``limit`` slots of ``key`` in the window (``since``, ``now``].

        Records a call at ``now`` and returns ``None`` if fewer than ``limit`` calls were
        recorded in the window; otherwise records nothing and returns the time of the
        oldest call in the window (the caller may retry once it has left the window). Atomic
        across every worker sharing the ledger, so a per-provider rate limit holds globally.
        """

    # -- queries ---------------------------------------------------------------------
    @abstractmethod
    def count_executed(self, action: str, match: Mapping[str, Any], since: str, until: str) -> int:
        """Executed actions named ``action`` whose args contain ``match``, in [since, until]."""

    @abstractmethod
    def list_reviews(self, *, status: str | None = "pending") -> list[ReviewRow]: ...

    @abstractmethod
    def get_review(self, review_id: str) -> ReviewRow: ...

    # -- model spend (projection ``model_calls``, migration 2) ---------------------------
    # Every store projects each ModelCalled event into ``model_calls`` (run_id, seq, step,
    # attempt, contract_name, provider, model, at, prompt_hash, tokens by kind, cost_usd)
    # in the transaction that appends it, and answers the two queries below from it with
    # an index: spend windows are checked before every model call, so no scan.
    # A roll-up ``model_spend_daily`` (contract_name, UTC day, calls, cost_usd), upserted in
    # the same transaction, answers whole-day windows in at most 31 rows (both SQL stores
    # share the statements: charter.ledger.sqlbase).
    @abstractmethod
    def spend(self, contract_name: str, since: str, until: str) -> float:
        """USD recorded for model calls of contract ``contract_name`` (by name, all versions)
        with ``since <= at < until`` (store times, ISO 8601 UTC)."""

    @abstractmethod
    def model_spend(
        self, *, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        """Calls, tokens and USD per (contract name, provider, model) in [since, until)."""

    @abstractmethod
    def find_model_call(self, prompt_hash: str) -> tuple[str, int] | None:
        """``(run_id, seq)`` of the latest model call whose prompt hash is ``prompt_hash``
        (or starts with it, when it identifies one prompt); ``None`` if there is none.

        Raises :class:`NotFoundError` for a prefix shared by several prompts.
        """


def open_store(url: str | None = None, *, create: bool = True, read_only: bool = False) -> Store:
    """Open the ledger named by ``url``, ``$CHARTER_DATABASE_URL``, or ``./charter.db``.

    ``sqlite:///path``, ``sqlite:///:memory:`` and plain file paths select SQLite;
    ``postgresql://user@host:port/db[?schema=name]`` selects PostgreSQL (needs the
    ``postgres`` extra). ``create=False`` refuses to create a missing database;
    ``read_only=True`` (read commands) opens an existing ledger without migrating it, on a
    connection that cannot write.
    """
    from charter.ledger.sealing import kek_from_env

    target = url or os.environ.get("CHARTER_DATABASE_URL") or DEFAULT_DB
    cap = int(os.environ.get("CHARTER_PAYLOAD_CAP", DEFAULT_PAYLOAD_CAP))
    kek = kek_from_env()  # sealing at rest, when the deployment configures a key
    if target.startswith(("postgresql://", "postgres://")):
        try:
            from charter.ledger.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"PostgreSQL ledgers need psycopg ({exc}); install charter[postgres]"
            ) from None
        return PostgresStore(target, create=create, read_only=read_only, payload_cap=cap, kek=kek)
    if "://" in target and not target.startswith("sqlite://"):
        raise StoreError(
            f"unsupported database URL {target!r}; use sqlite:///path/to/ledger.db or "
            "postgresql://user@host:port/database"
        )
    from charter.ledger.sqlite import SQLiteStore

    path = target.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStore(
        path or DEFAULT_DB, create=create, read_only=read_only, payload_cap=cap, kek=kek
    )

"""Schema migrations: small, explicit, numbered, never edited once released.

A ledger records the versions applied in ``charter_migrations``; opening a ledger applies
the missing ones in order inside one transaction, and refuses a ledger newer than the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ledger, runs queue, reviews, executed actions, blobs",
        (
            """CREATE TABLE contracts (
                policy_hash TEXT PRIMARY KEY,
                ref TEXT NOT NULL,
                bundle TEXT NOT NULL
            )""",
            """CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                contract TEXT NOT NULL,
                contract_name TEXT NOT NULL,
                policy_hash TEXT NOT NULL REFERENCES contracts (policy_hash),
                status TEXT NOT NULL,
                idempotency_key TEXT UNIQUE,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                wake_at TEXT,
                lease_owner TEXT,
                lease_expires TEXT,
                epoch INTEGER NOT NULL DEFAULT 0,
                last_seq INTEGER NOT NULL,
                last_hash TEXT NOT NULL
            )""",
            "CREATE INDEX runs_queue ON runs (status, wake_at)",
            "CREATE INDEX runs_contract ON runs (contract_name, created_at)",
            """CREATE TABLE events (
                run_id TEXT NOT NULL REFERENCES runs (run_id),
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                at TEXT NOT NULL,
                data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            ) WITHOUT ROWID""",
            """CREATE TABLE executed_actions (
                run_id TEXT NOT NULL,
                step INTEGER NOT NULL,
                action TEXT NOT NULL,
                args TEXT NOT NULL,
                at TEXT NOT NULL,
                PRIMARY KEY (run_id, step)
            )""",
            "CREATE INDEX executed_by_action ON executed_actions (action, at)",
            """CREATE TABLE reviews (
                review_id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL REFERENCES runs (run_id),
                contract TEXT NOT NULL,
                kind TEXT NOT NULL,
                step INTEGER,
                action TEXT,
                effect TEXT NOT NULL,
                status TEXT NOT NULL,
                reviewers TEXT NOT NULL,
                reasons TEXT NOT NULL,
                requested_at TEXT NOT NULL,
                due_at TEXT,
                decided_at TEXT,
                decided_by TEXT,
                verdict TEXT
            )""",
            "CREATE INDEX reviews_status ON reviews (status, due_at)",
            """CREATE TABLE blobs (
                sha256 TEXT PRIMARY KEY,
                size INTEGER NOT NULL,
                data TEXT NOT NULL
            )""",
        ),
    ),
)

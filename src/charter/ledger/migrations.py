"""Schema migrations: small, explicit, numbered, never edited once released.

A ledger records the versions applied in ``charter_migrations``; opening a ledger applies
the missing ones in order inside one transaction, and refuses a ledger newer than the code.
Every migration carries the DDL of both stores: ``sqlite`` and ``postgres`` describe the same
tables (PostgreSQL keys and times are ``TEXT COLLATE "C"`` so that they sort byte-wise exactly
as SQLite sorts them; payloads stay canonical JSON text so chain hashes are identical).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...] = ()


#: Derived data only: the roll-up is recomputed from the calls it sums, losing nothing.
_REBUILD_SPEND_DAILY = (
    "DELETE FROM model_spend_daily",
    """INSERT INTO model_spend_daily (contract_name, day, calls, cost_usd)
       SELECT contract_name, substr(at, 1, 10), count(*), sum(cost_usd)
       FROM model_calls GROUP BY contract_name, substr(at, 1, 10)""",
)

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
        postgres=(
            """CREATE TABLE contracts (
                policy_hash TEXT COLLATE "C" PRIMARY KEY,
                ref TEXT NOT NULL,
                bundle TEXT NOT NULL
            )""",
            """CREATE TABLE runs (
                run_id TEXT COLLATE "C" PRIMARY KEY,
                contract TEXT COLLATE "C" NOT NULL,
                contract_name TEXT COLLATE "C" NOT NULL,
                policy_hash TEXT COLLATE "C" NOT NULL REFERENCES contracts (policy_hash),
                status TEXT COLLATE "C" NOT NULL,
                idempotency_key TEXT COLLATE "C" UNIQUE,
                created_at TEXT COLLATE "C" NOT NULL,
                updated_at TEXT COLLATE "C" NOT NULL,
                wake_at TEXT COLLATE "C",
                lease_owner TEXT COLLATE "C",
                lease_expires TEXT COLLATE "C",
                epoch BIGINT NOT NULL DEFAULT 0,
                last_seq BIGINT NOT NULL,
                last_hash TEXT NOT NULL
            )""",
            "CREATE INDEX runs_queue ON runs (status, wake_at)",
            "CREATE INDEX runs_contract ON runs (contract_name, created_at)",
            # the claim query scans only runnable runs, oldest first, however many have ended
            "CREATE INDEX runs_runnable ON runs (updated_at) WHERE status IN ('queued', 'waiting')",
            """CREATE TABLE events (
                run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
                seq BIGINT NOT NULL,
                type TEXT COLLATE "C" NOT NULL,
                at TEXT COLLATE "C" NOT NULL,
                data TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
            """CREATE TABLE executed_actions (
                run_id TEXT COLLATE "C" NOT NULL,
                step BIGINT NOT NULL,
                action TEXT COLLATE "C" NOT NULL,
                args JSONB NOT NULL,
                at TEXT COLLATE "C" NOT NULL,
                PRIMARY KEY (run_id, step)
            )""",
            "CREATE INDEX executed_by_action ON executed_actions (action, at)",
            """CREATE TABLE reviews (
                review_id TEXT COLLATE "C" PRIMARY KEY,
                run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (run_id),
                contract TEXT COLLATE "C" NOT NULL,
                kind TEXT NOT NULL,
                step BIGINT,
                action TEXT,
                effect TEXT NOT NULL,
                status TEXT COLLATE "C" NOT NULL,
                reviewers TEXT NOT NULL,
                reasons TEXT NOT NULL,
                requested_at TEXT COLLATE "C" NOT NULL,
                due_at TEXT COLLATE "C",
                decided_at TEXT,
                decided_by TEXT,
                verdict TEXT
            )""",
            "CREATE INDEX reviews_status ON reviews (status, due_at)",
            """CREATE TABLE blobs (
                sha256 TEXT COLLATE "C" PRIMARY KEY,
                size BIGINT NOT NULL,
                data TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "model_calls projection: spend per contract and window, prompt-hash lookup for replay",
        (
            """CREATE TABLE model_calls (
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                step INTEGER NOT NULL,
                attempt INTEGER NOT NULL,
                contract_name TEXT NOT NULL,
                provider TEXT NOT NULL,
                model TEXT NOT NULL,
                at TEXT NOT NULL,
                prompt_hash TEXT NOT NULL,
                input_tokens INTEGER NOT NULL,
                cached_input_tokens INTEGER NOT NULL DEFAULT 0,
                cache_write_tokens INTEGER NOT NULL DEFAULT 0,
                output_tokens INTEGER NOT NULL,
                reasoning_tokens INTEGER NOT NULL DEFAULT 0,
                cost_usd REAL NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
            # covering: a window's spend is summed from the index alone
            "CREATE INDEX model_calls_spend ON model_calls (contract_name, at, cost_usd)",
            "CREATE INDEX model_calls_prompt ON model_calls (prompt_hash)",
            # spend per contract and UTC day, kept with each call: a day or month window is
            # the sum of at most 31 rows however many calls the contract makes
            """CREATE TABLE model_spend_daily (
                contract_name TEXT NOT NULL,
                day TEXT NOT NULL,
                calls INTEGER NOT NULL,
                cost_usd REAL NOT NULL,
                PRIMARY KEY (contract_name, day)
            ) WITHOUT ROWID""",
            # ledgers written before this migration: project the calls already recorded,
            # including those whose payload is stored by reference in blobs
            """INSERT OR IGNORE INTO model_calls
               SELECT e.run_id, e.seq,
                      json_extract(coalesce(b.data, e.data), '$.step'),
                      json_extract(coalesce(b.data, e.data), '$.attempt'),
                      r.contract_name,
                      json_extract(coalesce(b.data, e.data), '$.provider'),
                      json_extract(coalesce(b.data, e.data), '$.model'),
                      e.at,
                      json_extract(coalesce(b.data, e.data), '$.prompt_hash'),
                      json_extract(coalesce(b.data, e.data), '$.input_tokens'),
                      coalesce(json_extract(coalesce(b.data, e.data), '$.cached_input_tokens'), 0),
                      coalesce(json_extract(coalesce(b.data, e.data), '$.cache_write_tokens'), 0),
                      json_extract(coalesce(b.data, e.data), '$.output_tokens'),
                      coalesce(json_extract(coalesce(b.data, e.data), '$.reasoning_tokens'), 0),
                      json_extract(coalesce(b.data, e.data), '$.cost_usd')
               FROM events e
               JOIN runs r ON r.run_id = e.run_id
               LEFT JOIN blobs b ON e.data LIKE '{"$blob"%'
                    AND b.sha256 = json_extract(e.data, '$."$blob"')
               WHERE e.type = 'model.called'""",
            """INSERT INTO model_spend_daily
               SELECT contract_name, substr(at, 1, 10), count(*), sum(cost_usd)
               FROM model_calls GROUP BY contract_name, substr(at, 1, 10)""",
        ),
        postgres=(
            """CREATE TABLE model_calls (
                run_id TEXT COLLATE "C" NOT NULL,
                seq BIGINT NOT NULL,
                step BIGINT NOT NULL,
                attempt BIGINT NOT NULL,
                contract_name TEXT COLLATE "C" NOT NULL,
                provider TEXT COLLATE "C" NOT NULL,
                model TEXT COLLATE "C" NOT NULL,
                at TEXT COLLATE "C" NOT NULL,
                prompt_hash TEXT COLLATE "C" NOT NULL,
                input_tokens BIGINT NOT NULL,
                cached_input_tokens BIGINT NOT NULL DEFAULT 0,
                cache_write_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL,
                reasoning_tokens BIGINT NOT NULL DEFAULT 0,
                cost_usd DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (run_id, seq)
            )""",
            "CREATE INDEX model_calls_spend ON model_calls (contract_name, at) INCLUDE (cost_usd)",
            "CREATE INDEX model_calls_prompt ON model_calls (prompt_hash)",
            """CREATE TABLE model_spend_daily (
                contract_name TEXT COLLATE "C" NOT NULL,
                day TEXT COLLATE "C" NOT NULL,
                calls BIGINT NOT NULL,
                cost_usd DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (contract_name, day)
            )""",
            """INSERT INTO model_calls
               SELECT e.run_id, e.seq, (d.j->>'step')::bigint, (d.j->>'attempt')::bigint,
                      r.contract_name, d.j->>'provider', d.j->>'model', e.at, d.j->>'prompt_hash',
                      (d.j->>'input_tokens')::bigint,
                      coalesce((d.j->>'cached_input_tokens')::bigint, 0),
                      coalesce((d.j->>'cache_write_tokens')::bigint, 0),
                      (d.j->>'output_tokens')::bigint,
                      coalesce((d.j->>'reasoning_tokens')::bigint, 0),
                      (d.j->>'cost_usd')::double precision
               FROM events e
               JOIN runs r ON r.run_id = e.run_id
               LEFT JOIN blobs b ON e.data LIKE '{"$blob"%'
                    AND b.sha256 = (e.data::jsonb)->>'$blob'
               CROSS JOIN LATERAL (SELECT coalesce(b.data, e.data)::jsonb AS j) d
               WHERE e.type = 'model.called'
               ON CONFLICT DO NOTHING""",
            """INSERT INTO model_spend_daily
               SELECT contract_name, substr(at, 1, 10), count(*), sum(cost_usd)
               FROM model_calls GROUP BY contract_name, substr(at, 1, 10)""",
        ),
    ),
    Migration(
        3,
        "rate-limit slots shared by all workers; index of leased runs per contract",
        (
            """CREATE TABLE rate_slots (
                key TEXT NOT NULL,
                at TEXT NOT NULL
            )""",
            "CREATE INDEX rate_slots_key ON rate_slots (key, at)",
            "CREATE INDEX runs_leased ON runs (contract_name) WHERE lease_owner IS NOT NULL",
        ),
        postgres=(
            """CREATE TABLE rate_slots (
                key TEXT COLLATE "C" NOT NULL,
                at TEXT COLLATE "C" NOT NULL
            )""",
            "CREATE INDEX rate_slots_key ON rate_slots (key, at)",
            "CREATE INDEX runs_leased ON runs (contract_name) WHERE lease_owner IS NOT NULL",
        ),
    ),
    Migration(
        4,
        "daily spend roll-up rebuilt from model_calls (PostgreSQL created it but never kept it)",
        _REBUILD_SPEND_DAILY,
        postgres=_REBUILD_SPEND_DAILY,
    ),
    Migration(
        5,
        "anchors: a chained log of Merkle roots over every run's head, and their leaves",
        (
            # one row per anchor, each chained to the one before (charter.ledger.anchor);
            # IF NOT EXISTS: running this migration again changes nothing
            """CREATE TABLE IF NOT EXISTS anchors (
                idx INTEGER PRIMARY KEY,
                at TEXT NOT NULL,
                root TEXT NOT NULL,
                runs INTEGER NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            # the heads an anchor covered that differ from the previous anchor's (new runs,
            # runs that moved on; seq 0: a run gone since), not every run every time
            """CREATE TABLE IF NOT EXISTS anchor_leaves (
                idx INTEGER NOT NULL,
                run_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (idx, run_id)
            ) WITHOUT ROWID""",
        ),
        postgres=(
            """CREATE TABLE IF NOT EXISTS anchors (
                idx BIGINT PRIMARY KEY,
                at TEXT COLLATE "C" NOT NULL,
                root TEXT NOT NULL,
                runs BIGINT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS anchor_leaves (
                idx BIGINT NOT NULL,
                run_id TEXT COLLATE "C" NOT NULL,
                seq BIGINT NOT NULL,
                hash TEXT NOT NULL,
                PRIMARY KEY (idx, run_id)
            )""",
        ),
    ),
    Migration(
        6,
        "data keys for sealing content at rest, and which key sealed each run",
        (
            # wrapped: the data key wrapped by the KEK (base64); NULL once erased
            """CREATE TABLE IF NOT EXISTS data_keys (
                key_id TEXT PRIMARY KEY,
                subject TEXT NOT NULL,
                kek_id TEXT NOT NULL,
                wrapped TEXT,
                created_at TEXT NOT NULL,
                erased_at TEXT,
                erased_by TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (subject)",
            """CREATE TABLE IF NOT EXISTS run_keys (
                run_id TEXT PRIMARY KEY,
                key_id TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS run_keys_key ON run_keys (key_id)",
        ),
        postgres=(
            """CREATE TABLE IF NOT EXISTS data_keys (
                key_id TEXT COLLATE "C" PRIMARY KEY,
                subject TEXT COLLATE "C" NOT NULL,
                kek_id TEXT NOT NULL,
                wrapped TEXT,
                created_at TEXT COLLATE "C" NOT NULL,
                erased_at TEXT,
                erased_by TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS data_keys_subject ON data_keys (subject)",
            """CREATE TABLE IF NOT EXISTS run_keys (
                run_id TEXT COLLATE "C" PRIMARY KEY,
                key_id TEXT COLLATE "C" NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS run_keys_key ON run_keys (key_id)",
        ),
    ),
)

"""What the SQL stores share: the read side of the ledger, written once.

SQLite and PostgreSQL differ in how they write (locking, retries, notifications) but read
the same tables the same way. These queries use ``?`` placeholders; a store whose driver
wants another style translates them in its ``_read`` (no shared query contains a literal
``?``).
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from charter import jsontext
from charter.errors import NotFoundError, StoreError
from charter.ledger.chain import canonical
from charter.ledger.events import (
    ActionCompleted,
    Event,
    ModelCalled,
    ReviewDecided,
    StoredEvent,
    decode,
)
from charter.ledger.store import RawEvent, ReviewRow, RunRow, Store

RUN_COLUMNS = (
    "run_id, contract, contract_name, policy_hash, status, idempotency_key, created_at, "
    "updated_at, wake_at, lease_owner, lease_expires, epoch, last_seq, last_hash"
)
REVIEW_COLUMNS = (
    "review_id, run_id, contract, kind, step, action, effect, status, reviewers, reasons, "
    "requested_at, due_at, decided_at, decided_by, verdict"
)


def encode_events(run_id: str, events: Sequence[Event]) -> list[tuple[Event, str]]:
    """Each event with its canonical JSON, refusing before any write what a store cannot hold.

    Both stores call this first, so they accept and refuse exactly the same events: the
    payload must be JSON text (no NaN, no lone surrogates) and the fields projected into
    plain columns (executed actions' arguments, names) must not contain NUL, which
    PostgreSQL cannot store. The runtime validates at its boundaries; this is the last line.
    """
    out: list[tuple[Event, str]] = []
    for ev in events:
        projected: Any = None
        if isinstance(ev, ActionCompleted):
            projected = ev.match_form
        elif isinstance(ev, ReviewDecided):
            projected = [ev.by, ev.verdict]
        elif isinstance(ev, ModelCalled):
            projected = [ev.provider, ev.model, ev.prompt_hash]
        found = jsontext.problems(projected, ev.TYPE) if projected is not None else []
        try:
            text = canonical(ev.to_data())
            text.encode("utf-8")
        except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
            found.append(f"{ev.TYPE}: {exc}")
        if found:
            raise StoreError(
                f"run {run_id}: refused to record an event that is not storable JSON text: "
                + "; ".join(found)
            )
        out.append((ev, text))
    return out


def run_row(row: Sequence[Any]) -> RunRow:
    return RunRow(*row)


def review_row(row: Sequence[Any]) -> ReviewRow:
    values = list(row)
    values[8] = json.loads(values[8])
    values[9] = json.loads(values[9])
    return ReviewRow(*values)


class SqlStore(Store):
    """Reads shared by :class:`SQLiteStore` and :class:`PostgresStore`."""

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read-only statement with ``?`` placeholders and return its rows."""

    def schema_version(self) -> int:
        return int(self._read("SELECT max(version) FROM charter_migrations")[0][0] or 0)

    def load_bundle(self, policy_hash: str) -> dict[str, Any]:
        rows = self._read("SELECT bundle FROM contracts WHERE policy_hash = ?", (policy_hash,))
        if not rows:
            raise StoreError(
                f"contract with policy hash {policy_hash[:16]} missing from the ledger"
            )
        loaded: dict[str, Any] = json.loads(rows[0][0])
        return loaded

    def _resolve(self, stored: str) -> str:
        if not stored.startswith('{"$blob":'):
            return stored
        ref = json.loads(stored)
        rows = self._read("SELECT data FROM blobs WHERE sha256 = ?", (ref["$blob"],))
        if not rows:
            raise StoreError(
                f"payload {ref['$blob'][:16]} referenced by an event is missing from the ledger"
            )
        return str(rows[0][0])

    def events(self, run_id: str) -> list[StoredEvent]:
        rows = self._read(
            "SELECT seq, type, at, data, prev_hash, hash FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        if not rows:
            self.get_run(run_id)
        out = []
        for seq, type_, at, data, prev, h in rows:
            try:
                payload = json.loads(self._resolve(data))
            except json.JSONDecodeError as exc:
                raise StoreError(
                    f"event {seq} of run {run_id} is not valid JSON ({exc}); run `charter verify {run_id}`"
                ) from None
            out.append(StoredEvent(run_id, seq, at, decode(type_, payload), prev, h))
        return out

    def raw_events(self, run_id: str) -> Iterator[RawEvent]:
        for seq, type_, at, data, prev, h in self._read(
            "SELECT seq, type, at, data, prev_hash, hash FROM events WHERE run_id = ? ORDER BY seq",
            (run_id,),
        ):
            yield RawEvent(run_id, seq, type_, at, self._resolve(data), prev, h)

    def get_run(self, run_id: str) -> RunRow:
        rows = self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise NotFoundError(
                f"no run {run_id}; `charter run list` shows the runs in this ledger"
            )
        return run_row(rows[0])

    def find_run(self, prefix: str) -> RunRow:
        rows = self._read(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id >= ? AND run_id < ? "
            "ORDER BY run_id LIMIT 2",
            (prefix, prefix + "\uffff"),
        )
        if not rows:
            raise NotFoundError(
                f"no run {prefix}; `charter run list` shows the runs in this ledger"
            )
        if len(rows) > 1 and rows[0][0] != prefix:
            raise NotFoundError(f"run id prefix {prefix!r} is ambiguous; type more characters")
        return run_row(rows[0])

    def list_runs(
        self, *, status: str | None = None, contract: str | None = None, limit: int = 100
    ) -> list[RunRow]:
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("status = ?")
            params.append(status)
        if contract:
            where.append("(contract_name = ? OR contract = ?)")
            params.extend([contract, contract])
        query = f"SELECT {RUN_COLUMNS} FROM runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        return [run_row(r) for r in self._read(query, (*params, limit))]

    def run_ids(self, *, contract_name: str | None = None, since: str | None = None) -> list[str]:
        where: list[str] = []
        params: list[Any] = []
        if contract_name:
            where.append("contract_name = ?")
            params.append(contract_name)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        query = "SELECT run_id FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        return [r[0] for r in self._read(query + " ORDER BY created_at, run_id", params)]

    def model_spend(
        self, *, since: str | None = None, until: str | None = None
    ) -> list[dict[str, Any]]:
        rows = self._read(
            "SELECT contract_name, provider, model, count(*), CAST(sum(input_tokens) AS BIGINT), "
            "CAST(sum(cached_input_tokens) AS BIGINT), CAST(sum(output_tokens) AS BIGINT), "
            "CAST(sum(reasoning_tokens) AS BIGINT), sum(cost_usd) "
            "FROM model_calls WHERE at >= ? AND at < ? "
            "GROUP BY contract_name, provider, model ORDER BY contract_name, provider, model",
            (since or "", until or "\uffff"),
        )
        keys = (
            "contract",
            "provider",
            "model",
            "calls",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_usd",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def find_model_call(self, prompt_hash: str) -> tuple[str, int] | None:
        hashes = self._read(
            "SELECT DISTINCT prompt_hash FROM model_calls "
            "WHERE prompt_hash >= ? AND prompt_hash < ? LIMIT 2",
            (prompt_hash, prompt_hash + "\uffff"),
        )
        if not hashes:
            return None
        if len(hashes) > 1:
            raise NotFoundError(
                f"prompt hash prefix {prompt_hash!r} is ambiguous; type more characters"
            )
        rows = self._read(
            "SELECT run_id, seq FROM model_calls WHERE prompt_hash = ? "
            "ORDER BY at DESC, run_id DESC, seq DESC LIMIT 1",
            (hashes[0][0],),
        )
        return str(rows[0][0]), int(rows[0][1])

    def list_reviews(self, *, status: str | None = "pending") -> list[ReviewRow]:
        query = f"SELECT {REVIEW_COLUMNS} FROM reviews"
        params: tuple[Any, ...] = ()
        if status:
            query += " WHERE status = ?"
            params = (status,)
        return [
            review_row(r) for r in self._read(query + " ORDER BY requested_at, review_id", params)
        ]

    def get_review(self, review_id: str) -> ReviewRow:
        rows = self._read(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE review_id >= ? AND review_id < ? "
            "ORDER BY review_id LIMIT 2",
            (review_id, review_id + "\uffff"),
        )
        if not rows:
            raise NotFoundError(
                f"no review {review_id}; `charter review list` shows pending reviews"
            )
        if len(rows) > 1 and rows[0][0] != review_id:
            raise NotFoundError(
                f"review id prefix {review_id!r} is ambiguous; type more characters"
            )
        return review_row(rows[0])

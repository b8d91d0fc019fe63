"""What several commands share: the ledger option and how read commands open it, the
``--json``, ``--packs``, ``--since`` and ``--limit`` options, and a run's summary.

Each is declared once here so that every command spells, documents and validates it the
same way (docs/cli.md, Conventions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from charter.contract.model import Contract, PolicyPack
from charter.contract.registry import load_packs
from charter.errors import UsageError
from charter.ledger.store import Store, open_store
from charter.primitives import format_time, parse_instant
from charter.runs.runtime import Runtime
from charter.runs.state import RunState

F = TypeVar("F", bound=Callable[..., Any])

RUN_STATUSES = ("queued", "waiting", "completed", "failed", "escalated", "refused", "cancelled")
#: ``run start --wait``: the exit status of each way a run can stop (docs/cli.md)
RUN_EXIT_CODES = {
    "completed": 0,
    "waiting": 10,
    "failed": 11,
    "escalated": 12,
    "refused": 13,
    "cancelled": 14,
}


def db_option(func: F) -> F:
    return click.option(
        "--db",
        envvar="CHARTER_DATABASE_URL",
        default="charter.db",
        show_default=True,
        help="Ledger location: a SQLite path, sqlite:///path or "
        "postgresql://user@host:port/db[?schema=name] (env CHARTER_DATABASE_URL).",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def since_option(func: F) -> F:
    return click.option("--since", help="Only runs submitted at or after this ISO 8601 instant.")(
        func
    )


def limit_option(func: F) -> F:
    return click.option(
        "--limit",
        type=click.IntRange(1),
        default=None,
        help="At most this many runs, the oldest first.",
    )(func)


@dataclass(frozen=True)
class Bounds:
    """What ``--since``/``--limit`` left out, said beside every count so that a partial
    check is never read as a full one."""

    since: str | None  # the instant, in UTC, as ISO 8601
    limit: int | None
    matching: int  # runs submitted since then, before the limit

    def note(self) -> str:
        """`` (submitted since …, first N of M)``, or nothing when nothing was left out."""
        parts = []
        if self.since is not None:
            parts.append(f"submitted since {self.since}")
        if self.limit is not None and self.matching > self.limit:
            parts.append(f"first {self.limit} of {self.matching}")
        return f" ({', '.join(parts)})" if parts else ""

    def to_dict(self) -> dict[str, Any]:
        return {"since": self.since, "limit": self.limit, "matching": self.matching}


def parse_since(since: str | None) -> datetime | None:
    """``--since`` as an instant; a usage error naming the option when it is not one."""
    try:
        return parse_instant(since) if since is not None else None
    except ValueError as exc:
        raise UsageError(f"option --since: {exc}") from None


def select_runs(
    store: Store,
    instant: datetime | None,
    limit: int | None,
    *,
    contract_name: str | None = None,
) -> tuple[list[str], Bounds | None]:
    """Run ids, oldest first, submitted at or after ``instant``, at most ``limit`` of them;
    with the bounds applied (``None`` when neither was given)."""
    ids = store.run_ids(
        contract_name=contract_name, since=format_time(instant) if instant else None
    )
    if instant is None and limit is None:
        return ids, None
    shown = instant.isoformat().replace("+00:00", "Z") if instant else None
    return ids[:limit], Bounds(shown, limit, len(ids))


def runtime_for(db: str, *, write: bool = False, create: bool = False) -> Runtime:
    """A runtime over the ledger: read commands open it read-only (never migrating or
    creating anything); commands that write name it, and only ``run start`` creates one."""
    return Runtime(open_store(db, create=create, read_only=not write))


def state_summary(state: RunState) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "contract": state.contract,
        "status": state.status,
        "model_calls": state.model_calls,
        "tokens": state.tokens,
        "cost_usd": round(state.cost_usd, 6),
        "actions_executed": len(state.executed),
        "waiting_for": state.review.review_id if state.review else None,
        "events": state.seq,
    }


def packs_option(func: F) -> F:
    return click.option(
        "--packs",
        "pack_paths",
        multiple=True,
        type=click.Path(path_type=Path),
        help="Policy pack file or directory to merge (repeatable).",
    )(func)


def load_contract(path: Path, pack_paths: tuple[Path, ...]) -> Contract:
    """The contract file with the policy packs given by ``--packs`` merged in."""
    return Contract.load(path, load_packs(list(pack_paths)))


def packs_from(pack_paths: tuple[Path, ...]) -> list[PolicyPack]:
    return load_packs(list(pack_paths))

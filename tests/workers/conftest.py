"""Workers at scale: every test runs on SQLite and, when enabled, on PostgreSQL."""

from tests.runs.conftest import clock, effects
from tests.stores import ledger, store, store_kind

__all__ = ["clock", "effects", "ledger", "store", "store_kind"]

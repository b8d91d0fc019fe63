"""The ledger tests share the durable runs fixtures, and the per-store fixtures of
``tests.stores`` (``store_kind``, ``ledger``, ``store``: SQLite and PostgreSQL)."""

from tests.runs.conftest import clock, db, effects, rt
from tests.stores import ledger, store, store_kind

__all__ = ["clock", "db", "effects", "ledger", "rt", "store", "store_kind"]

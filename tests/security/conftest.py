"""The security tests share the durable runs fixtures (a ledger, the effects database)."""

from tests.runs.conftest import clock, db, effects, rt

__all__ = ["clock", "db", "effects", "rt"]

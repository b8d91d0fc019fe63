"""Fixtures of the durable runs tests: a ledger, the effects database, an injectable clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.runs.runtime import Runtime
from tests.runs.domain import EFFECTS_ENV, Clock, Effects


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Effects:
    path = tmp_path / "effects.db"
    monkeypatch.setenv(EFFECTS_ENV, str(path))
    return Effects(path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def rt(db: Path, clock: Clock, effects: Effects) -> Iterator[Runtime]:
    runtime = Runtime(str(db), clock=clock, worker_id="test-worker")
    yield runtime
    runtime.store.close()

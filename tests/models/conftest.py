"""Fixtures of the model tests: a fake provider server on 127.0.0.1 and a model request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from charter.models.base import ModelRequest
from tests.models.fake_servers import FakeModelServer, running

ACTIONS = {
    "write": {
        "type": "object",
        "required": ["item", "qty"],
        "additionalProperties": False,
        "properties": {"item": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
    },
    "send_email": {
        "type": "object",
        "required": ["to"],
        "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
    },
}


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with running() as server:
        yield server


@pytest.fixture
def request_() -> ModelRequest:
    return ModelRequest(
        contract="ops@1",
        run_id="run_test",
        step=1,
        attempt=1,
        prompt="You act under contract ops@1.\nPropose one action.",
        input={"item": "bolt"},
        context={},
        observations=[],
        actions=ACTIONS,
        descriptions={"write": "Write stock", "send_email": "Email someone"},
    )


# the durable runs fixtures: a ledger, the effects database, an injectable clock
from tests.runs.conftest import clock, db, effects, rt  # noqa: E402

__all__ = ["clock", "db", "effects", "fake", "request_", "rt"]

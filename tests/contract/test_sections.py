"""Each contract section's defaults: written once (charter.contract.sections), one test each.

docs/contracts.md states the same defaults; these tests load a contract that leaves each
section (or key) out and check what the runtime will read.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from charter import Contract
from charter.contract.sections import (
    DEFAULT_MAX_MODEL_CALLS,
    DEFAULT_PROPOSAL_RETRIES,
    Autonomy,
    Budget,
    Escalation,
    ModelSection,
)
from charter.models.prompt import DEFAULT_REDACT, redact_labels
from tests.helpers import build, document


@pytest.fixture(scope="module")
def bare() -> Contract:
    """A contract with none of the optional sections."""
    return build(document())


def test_a_contract_without_a_model_section_uses_the_scripted_provider(bare: Contract) -> None:
    assert bare.model == ModelSection()
    assert bare.model.provider == "scripted"
    assert bare.model.name is None and bare.model.script is None
    assert bare.model.params == {}
    assert bare.model.timeout is None and bare.model.max_retries is None  # provider defaults


def test_redaction_defaults_to_pii_and_can_be_switched_off() -> None:
    assert redact_labels(build(document())) == DEFAULT_REDACT == ("pii",)
    off = build(document(model={"provider": "scripted", "redact": []}))
    assert off.model.redact == () and redact_labels(off) == ()


def test_the_sampling_parameters_sent_are_those_the_contract_sets() -> None:
    c = build(document(model={"provider": "scripted", "temperature": 0, "seed": 7}))
    assert c.model.params == {"temperature": 0.0, "seed": 7}


def test_budget_defaults(bare: Contract) -> None:
    assert bare.budget == Budget()
    assert bare.budget.max_model_calls == DEFAULT_MAX_MODEL_CALLS == 20
    assert bare.budget.max_proposal_retries == DEFAULT_PROPOSAL_RETRIES == 2
    for limit in ("max_tokens", "max_cost_usd", "max_actions"):
        assert getattr(bare.budget, limit) is None  # no limit
    assert bare.budget.spend_limits == {}
    assert not bare.budget.limits_cost


def test_a_spend_window_or_cost_limit_makes_prices_required() -> None:
    day = build(document(budget={"max_spend_per_day_usd": 5}))
    assert day.budget.spend_limits == {"day": 5.0} and day.budget.limits_cost
    assert build(document(budget={"max_cost_usd": 0.5})).budget.limits_cost


def test_escalation_defaults_fail_closed(bare: Contract) -> None:
    assert bare.escalation == Escalation(reviewers=(), sla=None, on_timeout="deny")
    c = build(document(escalation={"reviewers": ["leads"], "sla": "4h"}))
    assert c.escalation.sla == timedelta(hours=4) and c.escalation.on_timeout == "deny"


def test_a_contract_without_autonomy_is_supervised(bare: Contract) -> None:
    assert bare.autonomy == Autonomy(level="supervised", sample_rate=None, promote_when=None)
    assert bare.autonomy.executes
    assert not build(document(autonomy={"level": "shadow"})).autonomy.executes
    assert not build(document(autonomy={"level": "assist"})).autonomy.executes


def test_without_value_and_success_nothing_is_measured(bare: Contract) -> None:
    assert bare.value is None and bare.success == ()


def test_action_defaults(bare: Contract) -> None:
    refund = bare.actions["refund"]
    assert (refund.timeout, refund.max_attempts) == (timedelta(seconds=60), 3)
    assert (refund.egress, refund.allows_labels, refund.compensate, refund.reads) == (
        "internal",
        (),
        None,
        (),
    )
    assert refund.normalize == {}

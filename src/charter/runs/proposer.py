"""Where proposals come from: the seam between the step machine and whoever proposes.

The step machine needs, at each *think* step, a proposal to validate and decide. It asks
the run's :class:`Proposer` and treats every answer alike: the text of the proposal is
parsed and validated against the contract (unknown actions and schema-violating arguments
are rejected with reasons), then each action is decided by policy, reviewed, executed and
recorded by the same code, whoever proposed it.

:class:`ModelProposer` is the proposer of runs that call the contract's own model: it
renders the prompt from the template stored with the contract, reserves the call's cost
against the budgets, waits for a slot of the provider's rate limit, calls the model and
records the call (``model.called``: prompt, tokens, cost, latency) before its output is
parsed. Proposals that arrive from outside — an agent framework, an MCP client calling a
tool — are another proposer behind the same seam.

A proposer answers with one of:

* :class:`Proposed` — the proposal's text and the events that producing it recorded first
  (the model call); the step machine validates the text;
* :class:`Refused` — no proposal will come this step, and these events say why (a budget
  exceeded: the run escalates);
* ``None`` — nothing to propose now (the worker is stopping while waiting for a rate slot):
  the run is handed on, to be asked again later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from charter import jsontext
from charter.errors import ModelError
from charter.ledger.events import Event, ModelCalled
from charter.models.base import ModelRequest
from charter.models.pricing import METERED
from charter.models.prompt import render
from charter.runs import budgets
from charter.runs.catalog import Catalog
from charter.runs.failpoints import failpoint
from charter.runs.limits import Limits
from charter.runs.state import history_for_model
from charter.runs.unit import Unit


@dataclass(frozen=True)
class Proposed:
    """A proposal's text, and what producing it recorded (recorded before it is parsed)."""

    raw: str
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Refused:
    """No proposal this step; the events say why (and end or park the run)."""

    events: tuple[Event, ...]


class Proposer(Protocol):
    """Asked for the next proposal of a run whenever its step machine needs one."""

    def propose(self, unit: Unit, now: datetime) -> Proposed | Refused | None: ...


class ModelProposer:
    """Proposals from the contract's model (or the run's ``--model`` override)."""

    def __init__(
        self,
        catalog: Catalog,
        limits: Limits,
        clock: Callable[[], datetime],
        stop: threading.Event,
    ) -> None:
        self.catalog = catalog
        self.limits = limits
        self.clock = clock
        self.stop = stop

    def propose(self, unit: Unit, now: datetime) -> Proposed | Refused | None:
        s = unit.state
        contract = unit.contract
        store = self.catalog.store
        provider = self.catalog.provider_for(contract, s.model_override)
        history = history_for_model(s)
        # redacted by label, rendered from the template stored with the contract
        rendered = render(
            contract,
            observations=s.observations,
            history=history,
            feedback=s.feedback,
            template=self.catalog.template_for(contract),
        )
        params = contract.model.params
        request = ModelRequest(
            contract=contract.ref,
            run_id=s.run_id,
            step=s.step + 1,
            attempt=s.attempt,
            prompt=rendered.text,
            input=s.input,
            context=s.context(),
            observations=rendered.observations,
            actions={n: a.args_schema for n, a in contract.actions.items()},
            history=history,
            feedback=s.feedback,
            params=params,
            descriptions={n: a.description for n, a in contract.actions.items()},
        )
        estimate = provider.estimate(request)
        prices = self.catalog.prices_for(contract)
        price = prices.lookup(provider.name, provider.model)
        # reserve: the estimated prompt uncached, the whole output cap at the dearest rate
        reserve = price.reserve(estimate) if price is not None else estimate.cost_usd
        if price is None and contract.budget.limits_cost and provider.name in METERED:
            raise ModelError(
                f"{provider.name}:{provider.model} has no price in price table {prices.version}, "
                f"so the cost limits of {contract.ref} cannot be enforced; add it to a "
                "price file (model.prices or $CHARTER_PRICES; see docs/models.md)"
            )
        checks = budgets.model_call_checks(contract, s, estimate, reserve)
        if contract.budget.spend_limits:
            unit.flush(now)  # the window query reads committed spend, ours included
            checks.extend(budgets.window_checks(store, contract, now, reserve))
        hit = budgets.over(checks)
        if hit is not None:
            return Refused(tuple(budgets.exceeded(contract, hit)))
        if not budgets.wait_for_rate_slot(store, self.limits, provider.name, self.clock, self.stop):
            return None  # stopping while the provider's window was full: hand the run on
        unit.ensure_current(now)  # don't pay for a call that can't be kept
        response = provider.complete(request)
        failpoint("after_model_call")
        usage = response.usage
        # the call is paid for: whatever came back is recorded, made recordable first (a
        # lone surrogate or NUL from a hostile server must not cost us the call's record)
        raw_output = jsontext.sanitised_text(response.raw)
        served_model = jsontext.sanitised_text(response.model)
        # settle: the actual usage at the served model's price (a dated snapshot of the
        # configured model), else the configured model's, else what the provider reported
        price = prices.lookup(provider.name, served_model) or price
        sent = dict(response.params) if response.params is not None else params
        called = ModelCalled(
            step=s.step + 1,
            attempt=s.attempt,
            provider=provider.name,
            model=served_model,
            params=sent,
            seed=sent.get("seed"),
            prompt_hash=rendered.hash,
            prompt=rendered.text,
            raw_output=raw_output,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=price.cost(usage) if price is not None else usage.cost_usd,
            latency_ms=round(response.latency_ms, 3),
            template_hash=rendered.template.hash,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            price_version=prices.version if price is not None else None,
            redacted=rendered.redacted or None,
        )
        return Proposed(raw_output, (called,))

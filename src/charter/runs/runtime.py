"""The runtime: where work is submitted, processed and decided by people.

:class:`Runtime` is the entry point applications use: ``submit`` a task under a contract,
process runs in this process (``run``) or as a worker (``work``), read a run's state, and
record people's decisions. Behind it, each job has a module of its own:

* :mod:`charter.runs.catalog` — contracts as their runs were submitted (bundles in the
  ledger), prompt templates, prices and model providers;
* :mod:`charter.runs.worker` — claims, leases and the heartbeat, graceful stop;
* :mod:`charter.runs.unit` — a leased run's unit of work: a step's events, committed together;
* :mod:`charter.runs.steps` — the step machine (admit, think, act, finish, expire, compensate);
* :mod:`charter.runs.proposer` — where proposals come from (the contract's model, or outside);
* :mod:`charter.runs.budgets` — what a run may still spend, checked before it spends it;
* :mod:`charter.runs.people` — reviews and cancels.

Every step's events are appended in one transaction against the sequence number the worker
last saw and its lease epoch, so two workers can never both advance a run, and a worker
that crashed anywhere leaves a ledger from which the next one continues: an action whose
start is recorded but whose completion is not is retried with the same idempotency key; a
recorded model output is never requested again.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from charter import jsontext
from charter.contract.model import Contract
from charter.errors import IdempotencyConflictError, UsageError
from charter.execution.runner import CallRunner
from charter.ledger.events import RunSubmitted
from charter.ledger.signing import Signer
from charter.ledger.store import Store, open_store
from charter.models.base import ModelProvider
from charter.models.pricing import PriceTable
from charter.models.prompt import PromptTemplate
from charter.primitives import digest, format_time
from charter.runs.catalog import Catalog
from charter.runs.limits import Limits
from charter.runs.people import People
from charter.runs.proposer import ModelProposer, Proposer
from charter.runs.state import Folder, RunState
from charter.runs.steps import StepMachine, recordable
from charter.runs.unit import Unit
from charter.runs.worker import Worker


class Runtime:
    """Submit runs, process them, and take reviewers' decisions.

    ``store`` is a :class:`Store` or a database URL/path (default: ``$CHARTER_DATABASE_URL``
    or ``./charter.db``). ``clock`` is injectable so tests can move time (review SLAs).
    ``providers`` are model providers by name, used before the registry's.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        worker_id: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        providers: Mapping[str, ModelProvider] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self.limits = limits or Limits()
        self.catalog = Catalog(self.store, providers)
        self.providers = self.catalog.providers
        self._stop = threading.Event()
        self._model_proposer = ModelProposer(self.catalog, self.limits, self.clock, self._stop)
        self.machine = StepMachine(
            self.clock, self._proposer_for, CallRunner(f"charter-executor:{self.worker_id}")
        )
        self.worker = Worker(
            self.store,
            self.catalog,
            self.machine,
            clock=self.clock,
            worker_id=self.worker_id,
            lease=lease,
            limits=self.limits,
            stop=self._stop,
        )
        self.people = People(self.store, self.catalog, self.clock, self.state)

    def _proposer_for(self, unit: Unit) -> Proposer:
        return self._model_proposer

    # -- submission ------------------------------------------------------------------
    def submit(
        self,
        contract: Contract,
        input: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> str:
        """Validate the input and queue a run; with a known ``idempotency_key`` return that run.

        ``model`` (``provider:model``, e.g. ``openai:gpt-4o-mini``) overrides the contract's
        model for this run; it is recorded in ``RunSubmitted`` so every worker uses it. A
        known key with a different submission is refused (:class:`IdempotencyConflictError`).
        """
        payload = recordable(dict(input), "input", UsageError, "input_bytes")
        extra = recordable(dict(context or {}), "context", UsageError, "input_bytes")
        if idempotency_key is not None:
            problem = jsontext.text_problem(idempotency_key, "idempotency key")
            if problem or not idempotency_key.strip():
                raise UsageError(problem or "idempotency key: must not be blank")
        errors = sorted(
            contract.input_validator.iter_errors(payload),
            key=lambda e: list(map(str, e.path)),
        )
        if errors:
            detail = "; ".join(
                f"input{''.join(f'.{p}' if isinstance(p, str) else f'[{p}]' for p in e.path)}: {e.message}"
                for e in errors
            )
            raise UsageError(f"input does not match the input schema of {contract.ref}: {detail}")
        model_spec = self.catalog.check_model(model) if model else None
        self.catalog.register(contract)
        now = format_time(self.clock())
        event = RunSubmitted(
            contract=contract.ref,
            contract_hash=contract.content_hash,
            policy_hash=contract.policy_hash,
            input=payload,
            context=extra,
            idempotency_key=idempotency_key,
            submitted_at=now,
            model=model_spec,
        )
        run_id = f"run_{uuid.uuid4().hex[:20]}"
        subject = None
        if contract.sensitive:  # sealed at rest if the store has a key-encryption key
            subject = contract.privacy.subject_of(payload) or run_id
        run_id, created = self.store.create_run(
            run_id,
            contract=contract.ref,
            contract_name=contract.name,
            policy_hash=contract.policy_hash,
            idempotency_key=idempotency_key,
            event=event,
            at=now,
            seal_subject=subject,
        )
        if not created:
            self._same_submission(run_id, event)
        return run_id

    def _same_submission(self, run_id: str, event: RunSubmitted) -> None:
        """A known idempotency key returns its run only for the same submission.

        A retry of the same request is answered with the run it created; a *different*
        request under the same key is a caller's bug (two tasks would silently collapse into
        one), refused with both hashes so the caller can tell which is which.
        """
        first = self.store.events(run_id)[0].event
        assert isinstance(first, RunSubmitted)
        names = ("contract", "input", "context", "model")
        ours = (event.contract_hash, digest(event.input), digest(event.context), event.model)
        theirs = (first.contract_hash, digest(first.input), digest(first.context), first.model)
        if ours == theirs:
            return
        differ = [n for n, a, b in zip(names, ours, theirs, strict=True) if a != b]
        raise IdempotencyConflictError(
            f"idempotency key {event.idempotency_key!r} already names run {run_id}, submitted "
            f"to {first.contract} with input sha256:{theirs[1][:16]}; this submission "
            f"to {event.contract} has input sha256:{ours[1][:16]} (different: "
            f"{', '.join(differ)}); use a new key for a new task"
        )

    # -- contracts -------------------------------------------------------------------
    def contract_for(self, policy_hash: str) -> Contract:
        """The exact contract (and packs) a run was submitted with, from the ledger."""
        return self.catalog.contract_for(policy_hash)

    def template_for(self, contract: Contract) -> PromptTemplate:
        """The prompt template stored in the contract's bundle (built-in for old ledgers)."""
        return self.catalog.template_for(contract)

    def prices_for(self, contract: Contract) -> PriceTable:
        """Prices for calls of ``contract``: shipped, its bundle's file, then $CHARTER_PRICES."""
        return self.catalog.prices_for(contract)

    def provider_for(self, contract: Contract, override: str | None = None) -> ModelProvider:
        """The provider a run of ``contract`` calls (see :meth:`Catalog.provider_for`)."""
        return self.catalog.provider_for(contract, override)

    # -- reading ---------------------------------------------------------------------
    def state(self, run_id: str) -> RunState:
        """A run's state (by id or unambiguous prefix), folded from its events."""
        row = self.store.find_run(run_id)
        return Folder(self.contract_for(row.policy_hash), row.run_id).apply_all(
            self.store.events(row.run_id)
        )

    # -- processing ------------------------------------------------------------------
    def run(self, run_id: str) -> RunState:
        """Process one run in this process until it ends or waits (``run start --wait``)."""
        return self.worker.run(run_id)

    def work_once(self) -> str | None:
        """Claim and process one runnable run; return its id, or ``None`` if none was ready."""
        return self.worker.work_once()

    def work(
        self, *, idle_exit: float | None = None, poll: float = 0.25, max_runs: int | None = None
    ) -> int:
        """Process runs until stopped (``stop()``/SIGTERM), idle for ``idle_exit`` s, or
        ``max_runs`` (see :meth:`Worker.work`)."""
        return self.worker.work(idle_exit=idle_exit, poll=poll, max_runs=max_runs)

    def stop(self) -> None:
        """Finish the current step, release the run, and stop working (graceful shutdown)."""
        self._stop.set()

    # -- people ----------------------------------------------------------------------
    def decide_review(
        self,
        review_id: str,
        verdict: str,
        *,
        by: str,
        comment: str = "",
        args: Mapping[str, Any] | None = None,
        signer: Signer | None = None,
    ) -> str:
        """Record a reviewer's verdict (see :meth:`People.decide_review`), signed by ``signer``
        when given (checked offline by ``charter verify --trusted-keys``); the run's id."""
        return self.people.decide_review(
            review_id, verdict, by=by, comment=comment, args=args, signer=signer
        )

    def cancel(self, run_id: str, *, by: str, reason: str, signer: Signer | None = None) -> None:
        """Cancel a run that has not ended; its pending actions never execute."""
        self.people.cancel(run_id, by=by, reason=reason, signer=signer)

"""The contracts a runtime knows, exactly as their runs were submitted.

A run is processed with the contract (and policy packs, prompt template and price file)
it was submitted with, whichever worker on whichever machine picks it up: submission
stores that *bundle* in the ledger by policy hash, and :meth:`Catalog.contract_for` loads
it back. A contract version is immutable, and so are the files it names: a submission whose
template or price file changed since the version was first stored is refused.

The catalog also keeps what is expensive to build per contract — model providers (their
HTTP clients, the output mode they learned) — and remembers which contracts' code this
process has imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charter.contract.model import Contract, PolicyPack
from charter.contract.source import Document
from charter.errors import CharterError, ConfigurationError, ContractError, StoreError, UsageError
from charter.ledger.store import Store
from charter.models.base import ModelProvider
from charter.models.pricing import PriceTable, contract_prices, price_table
from charter.models.prompt import PromptTemplate, builtin_template, load_template
from charter.models.registry import check_model, create_provider, parse_model, spec_for
from charter.primitives import import_callable


def check_callables(contract: Contract) -> None:
    """Import every reader, executor and model script the contract names, or raise
    :class:`ConfigurationError` naming the first that cannot be."""
    for ch in contract.channels.values():
        if ch.reader:
            import_callable(ch.reader, f"reader of channel {ch.name}")
    for spec in contract.actions.values():
        if isinstance(spec.executor, str):
            import_callable(spec.executor, f"executor of action {spec.name}")
    if contract.model.provider == "scripted" and contract.model.script:
        import_callable(contract.model.script, "model script")


class Catalog:
    """Contracts by policy hash, with their stored templates and prices, and providers."""

    def __init__(self, store: Store, providers: Mapping[str, ModelProvider] | None = None) -> None:
        self.store = store
        #: providers given to the runtime by name (``Runtime(providers=...)``)
        self.providers: dict[str, ModelProvider] = dict(providers or {})
        self._contracts: dict[str, Contract] = {}
        # by policy hash: the prompt template and price overrides stored in the bundle
        self._templates: dict[str, PromptTemplate] = {}
        self._bundles: dict[str, dict[str, Any]] = {}
        self._prices: dict[str, dict[str, Any] | None] = {}
        self._built: dict[tuple[str, str | None], ModelProvider] = {}
        self._runnable: set[str] = set()  # policy hashes whose code this process imported

    # -- submission ------------------------------------------------------------------
    def register(self, contract: Contract) -> None:
        """Check what a submission of ``contract`` needs and store its bundle once.

        Code the contract names must import here (fail at submission, not halfway through
        a run); its template and price file must be those of the version's first
        submission.
        """
        check_callables(contract)
        template, prices = self._prompt_and_prices(contract)
        bundle = {
            "contract": {"file": contract.path, "data": contract.data},
            "packs": [{"file": p.path, "data": p.data} for p in contract.packs],
            # so that a worker on another machine renders and prices exactly the same
            "prompt": template.to_bundle(),
            "prices": prices,
        }
        self._check_bundle(contract, template, prices)
        if self._bundles.get(contract.policy_hash) != bundle:
            self.store.save_bundle(contract.policy_hash, contract.ref, bundle)
            self._bundles[contract.policy_hash] = bundle
        self._contracts[contract.policy_hash] = contract
        self._templates.setdefault(contract.policy_hash, template)
        self._prices.setdefault(contract.policy_hash, prices)

    def check_model(self, model: str) -> str:
        """A ``--model`` override, checked now unless it names a provider given to this
        runtime (``providers=...``), which the registry need not know."""
        spec = parse_model(model)
        return str(spec if spec.provider in self.providers else check_model(model))

    def _prompt_and_prices(
        self, contract: Contract
    ) -> tuple[PromptTemplate, dict[str, Any] | None]:
        """The template and price file the contract names, read next to it; for a contract
        that came out of the ledger (``contract_for``) on a machine without those files,
        the copies stored in its bundle."""
        try:
            return load_template(contract), contract_prices(contract.path, contract.model.prices)
        except (ContractError, UsageError):
            try:
                stored = self.store.load_bundle(contract.policy_hash)
            except StoreError:
                stored = None
            if stored is None or (contract.model.prompt and not stored.get("prompt")):
                raise
            tpl = stored.get("prompt")
            template = PromptTemplate.from_bundle(tpl) if tpl else builtin_template()
            return template, stored.get("prices")

    def _check_bundle(
        self, contract: Contract, template: PromptTemplate, prices: dict[str, Any] | None
    ) -> None:
        """A contract version is immutable, and so are the prompt template and price file it
        names: refuse a submission whose files changed since the version was first stored."""
        if not contract.model.prompt and prices is None:
            return
        h = contract.policy_hash
        if self._templates.get(h) == template and self._prices.get(h, prices) == prices:
            return
        try:
            stored = self.store.load_bundle(h)
        except StoreError:
            return  # the first submission of this version
        old = stored.get("prompt")
        if contract.model.prompt and old is not None and old.get("text") != template.text:
            raise UsageError(
                f"prompt template {template.source} changed since {contract.ref} was first "
                "submitted; a contract version is immutable: bump `version` to use the new template"
            )
        if stored.get("prices") != prices:
            raise UsageError(
                f"price file {contract.model.prices} changed since {contract.ref} was "
                "first submitted; bump the contract's `version` (or override with $CHARTER_PRICES)"
            )

    # -- processing ------------------------------------------------------------------
    def contract_for(self, policy_hash: str) -> Contract:
        """The exact contract (and packs) a run was submitted with, from the ledger."""
        found = self._contracts.get(policy_hash)
        if found is None:
            bundle = self.store.load_bundle(policy_hash)
            packs = [
                PolicyPack.from_document(Document(p["file"], p["data"], p["data"]))
                for p in bundle["packs"]
            ]
            c = bundle["contract"]
            found = Contract.from_document(Document(c["file"], c["data"], c["data"]), packs)
            if bundle.get("prompt"):
                self._templates[policy_hash] = PromptTemplate.from_bundle(bundle["prompt"])
            self._prices[policy_hash] = bundle.get("prices")
            self._contracts[policy_hash] = found
        return found

    def ensure_runnable(self, contract: Contract, worker_id: str) -> None:
        """Raise :class:`ConfigurationError` if this process cannot import the contract's
        code: a worker problem, not the run's (see :class:`ConfigurationError`)."""
        if contract.policy_hash in self._runnable:
            return
        try:
            check_callables(contract)
        except CharterError as exc:
            raise ConfigurationError(
                f"worker {worker_id} cannot run {contract.ref}: {exc}"
            ) from None
        self._runnable.add(contract.policy_hash)

    def template_for(self, contract: Contract) -> PromptTemplate:
        """The prompt template stored in the contract's bundle (built-in for old ledgers)."""
        return self._templates.get(contract.policy_hash) or builtin_template()

    def prices_for(self, contract: Contract) -> PriceTable:
        """Prices for calls of ``contract``: shipped, its bundle's file, then $CHARTER_PRICES."""
        return price_table(self._prices.get(contract.policy_hash))

    def provider_for(self, contract: Contract, override: str | None = None) -> ModelProvider:
        """The provider a run calls: one passed to ``Runtime(providers=...)`` by name, else one
        built from the registry (``charter.models.registry``) for the contract and the
        submission's override, kept for reuse (its HTTP client, the output mode it learned)."""
        spec = spec_for(contract, override)
        if spec.provider in self.providers:
            return self.providers[spec.provider]
        key = (contract.policy_hash, override)
        found = self._built.get(key)
        if found is None:
            found = create_provider(contract, override=override, store=self.store)
            self._built[key] = found
        return found

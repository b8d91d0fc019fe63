"""Naming models as ``provider:model`` and building the provider a run uses.

``openai:gpt-4o-mini``, ``anthropic:claude-haiku-4-5``, ``replay:run_…`` (or a prompt
hash, or bare ``replay``), ``scripted`` (the contract's script) or
``scripted:pkg.module:function``. A run's model is its contract's ``model`` section unless
the submission overrode it (``charter run start --model …``, recorded in the run's
``RunSubmitted`` event so that every worker builds the same provider).

Other providers plug in with :func:`register_provider`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from charter.contract.model import Contract
from charter.errors import ModelError, UsageError
from charter.ledger.store import Store
from charter.models.base import ModelProvider
from charter.models.common import ProviderSettings, import_sdk
from charter.models.scripted import ScriptedProvider
from charter.primitives import import_callable

_SPEC = re.compile(r"^(?P<provider>[a-z][a-z0-9_-]*)(?::(?P<model>\S+))?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``provider[:model]``; ``model`` is the model name, replay source or script."""

    provider: str
    model: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" if self.model else self.provider


@dataclass(frozen=True)
class ProviderContext:
    """What a provider factory gets: the run's contract, the chosen spec and the ledger."""

    contract: Contract
    spec: ModelSpec
    store: Store | None


Factory = Callable[[ProviderContext], ModelProvider]


def _scripted(ctx: ProviderContext) -> ModelProvider:
    script = ctx.spec.model or ctx.contract.model.script
    if not script:
        raise ModelError(
            f"{ctx.contract.ref}: the scripted provider needs `model.script: pkg.module:function`"
        )
    return ScriptedProvider(
        import_callable(str(script), "model script"),
        model=ctx.contract.model.name or "scripted",
    )


def _openai(ctx: ProviderContext) -> ModelProvider:
    from charter.models.openai_provider import OpenAIProvider

    return OpenAIProvider(ProviderSettings.from_model(ctx.contract.model, "openai", ctx.spec.model))


def _anthropic(ctx: ProviderContext) -> ModelProvider:
    from charter.models.anthropic_provider import AnthropicProvider

    return AnthropicProvider(
        ProviderSettings.from_model(ctx.contract.model, "anthropic", ctx.spec.model)
    )


def _replay(ctx: ProviderContext) -> ModelProvider:
    from charter.models.replay import ReplayProvider

    if ctx.store is None:
        raise ModelError("the replay provider needs a ledger to answer from")
    return ReplayProvider(ctx.store, ctx.spec.model)


_FACTORIES: dict[str, Factory] = {
    "scripted": _scripted,
    "openai": _openai,
    "anthropic": _anthropic,
    "replay": _replay,
}
_SDKS = {"openai": ("openai", "openai"), "anthropic": ("anthropic", "anthropic")}


def register_provider(name: str, factory: Factory) -> None:
    """Make ``name`` usable in contracts and ``--model`` strings."""
    if not _SPEC.match(name) or ":" in name:
        raise UsageError(f"provider name {name!r} must be lower-case letters, digits, '-', '_'")
    _FACTORIES[name] = factory


def known_providers() -> list[str]:
    return sorted(_FACTORIES)


def parse_model(text: str) -> ModelSpec:
    """Parse ``provider[:model]``; raise :class:`UsageError` saying what is accepted."""
    match = _SPEC.match(text.strip())
    if match is None:
        raise UsageError(
            f"model {text!r} is not provider:model (e.g. openai:gpt-4o-mini, "
            "anthropic:claude-haiku-4-5, replay:RUN_ID)"
        )
    return ModelSpec(match["provider"], match["model"] or None)


def check_model(text: str) -> ModelSpec:
    """Validate an override at submission: known provider, its SDK installed."""
    spec = parse_model(text)
    if spec.provider not in _FACTORIES:
        raise UsageError(
            f"unknown model provider {spec.provider!r} in {text!r}; known: {', '.join(known_providers())}"
        )
    if spec.provider in _SDKS:
        import_sdk(*_SDKS[spec.provider])
    if spec.provider == "scripted" and spec.model:
        import_callable(spec.model, "model script")
    return spec


def spec_for(contract: Contract, override: str | None = None) -> ModelSpec:
    """The model a run uses: the override, else the contract's ``model`` section."""
    if override:
        return parse_model(override)
    section = contract.model
    name = section.name if section.provider != "scripted" else None
    return ModelSpec(section.provider, name)


def create_provider(
    contract: Contract, *, override: str | None = None, store: Store | None = None
) -> ModelProvider:
    """Build the provider for a run of ``contract`` (with the submission's override)."""
    spec = spec_for(contract, override)
    factory = _FACTORIES.get(spec.provider)
    if factory is None:
        raise ModelError(
            f"{contract.ref}: model provider {spec.provider!r} is not available; known: "
            f"{', '.join(known_providers())}, or configure it in Runtime(providers=...)"
        )
    return factory(ProviderContext(contract, spec, store))

"""What a model call costs: a versioned price table and the arithmetic on normalised usage.

Finance must be able to reprice any recorded call, so every ``ModelCalled`` event records
the tokens by kind, the version of the table that priced it and the computed cost.

The table ships in the package (``prices.json``, prices in USD per million tokens) and can
be overridden, entry by entry, by the contract's ``model.prices`` file and then by the
file named in ``$CHARTER_PRICES`` (the operator's word is final). The resulting version is
the versions joined with ``+``, so a call priced with an override says so.

Cached and reasoning tokens are where peers get costs wrong. With :class:`Usage`'s
normalised meaning — cached and cache-write tokens are *part of* ``input_tokens``,
reasoning tokens *part of* ``output_tokens`` — a call costs::

    (input - cached - cache_write) x input + cached x cached_input + cache_write x cache_write
    + (output - reasoning) x output + reasoning x reasoning

so no token is priced twice and none is missed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from charter.errors import UsageError
from charter.models.base import Usage

PRICES_ENV = "CHARTER_PRICES"
PER = 1_000_000


@dataclass(frozen=True)
class Price:
    """USD per million tokens of each kind for one model."""

    input: float
    output: float
    cached_input: float
    cache_write: float
    reasoning: float

    def cost(self, usage: Usage) -> float:
        """The cost of ``usage`` (normalised as :class:`Usage` says), in USD."""
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        plain_in = usage.input_tokens - cached - written
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        plain_out = usage.output_tokens - reasoning
        total = (
            plain_in * self.input
            + cached * self.cached_input
            + written * self.cache_write
            + plain_out * self.output
            + reasoning * self.reasoning
        )
        return round(total / PER, 10)

    def reserve(self, usage: Usage) -> float:
        """An upper bound for a call estimated at ``usage``: every input token uncached, every
        output token at the dearer of the output and reasoning prices."""
        return round(
            (
                usage.input_tokens * max(self.input, self.cached_input, self.cache_write)
                + usage.output_tokens * max(self.output, self.reasoning)
            )
            / PER,
            10,
        )


@dataclass(frozen=True)
class PriceTable:
    """Prices by provider and model, with the version recorded on every priced call."""

    version: str
    providers: Mapping[str, Mapping[str, Price]]

    def lookup(self, provider: str, model: str) -> Price | None:
        """Exact model, else the longest entry followed by ``-`` (dated snapshots such as
        ``gpt-4o-2024-08-06``) or ``:`` (Ollama tags such as ``llama3.2:3b``), else ``*``."""
        models = self.providers.get(provider)
        if not models:
            return None
        found = models.get(model)
        if found is not None:
            return found
        best = ""
        for name in models:
            if name != "*" and model.startswith((name + "-", name + ":")) and len(name) > len(best):
                best = name
        if best:
            return models[best]
        return models.get("*")

    def merged(self, other: PriceTable) -> PriceTable:
        """This table with ``other``'s entries replacing or adding models."""
        providers = {p: dict(m) for p, m in self.providers.items()}
        for p, models in other.providers.items():
            providers.setdefault(p, {}).update(models)
        return PriceTable(f"{self.version}+{other.version}", providers)


def _number(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(
            f"price file {source}: {where} must be a non-negative number, got {value!r}"
        )
    return float(value)


def parse_table(data: Any, source: str) -> PriceTable:
    """Check and build a table from parsed JSON; errors name the file and the field."""
    if not isinstance(data, dict):
        raise UsageError(
            f"price file {source}: must be a JSON object with `version` and `providers`"
        )
    version = data.get("version")
    if not isinstance(version, str | int) or isinstance(version, bool) or str(version) == "":
        raise UsageError(
            f'price file {source}: `version` is required (a string such as "acme-2026-05"), '
            "so that every priced call records which prices it used"
        )
    raw = data.get("providers")
    if not isinstance(raw, dict):
        raise UsageError(f"price file {source}: `providers` must map provider -> model -> prices")
    providers: dict[str, dict[str, Price]] = {}
    for provider, models in raw.items():
        if not isinstance(models, dict):
            raise UsageError(f"price file {source}: providers.{provider} must map model -> prices")
        for model, spec in models.items():
            where = f"providers.{provider}.{model}"
            if not isinstance(spec, dict):
                raise UsageError(f"price file {source}: {where} must be an object of prices")
            unknown = sorted(
                set(spec) - {"input", "output", "cached_input", "cache_write", "reasoning"}
            )
            if unknown:
                raise UsageError(
                    f"price file {source}: {where} has unknown field(s) {unknown}; allowed: "
                    "input, output, cached_input, cache_write, reasoning"
                )
            for required in ("input", "output"):
                if required not in spec:
                    raise UsageError(f"price file {source}: {where}.{required} is required")
            inp = _number(spec["input"], f"{where}.input", source)
            out = _number(spec["output"], f"{where}.output", source)
            providers.setdefault(provider, {})[model] = Price(
                input=inp,
                output=out,
                cached_input=_number(
                    spec.get("cached_input", inp), f"{where}.cached_input", source
                ),
                cache_write=_number(spec.get("cache_write", inp), f"{where}.cache_write", source),
                reasoning=_number(spec.get("reasoning", out), f"{where}.reasoning", source),
            )
    return PriceTable(str(version), providers)


@cache
def builtin_table() -> PriceTable:
    """The table shipped with this version of Charter."""
    text = resources.files("charter.models").joinpath("prices.json").read_text("utf-8")
    return parse_table(json.loads(text), "charter/models/prices.json")


@cache
def _file_table(path: str, mtime: float) -> PriceTable:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read price file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"price file {path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    return parse_table(data, path)


def load_table(path: str | Path) -> PriceTable:
    """A price file, cached until it changes on disk."""
    p = str(path)
    try:
        mtime = Path(p).stat().st_mtime
    except OSError:
        raise UsageError(
            f"price file {p} does not exist (named by ${PRICES_ENV} or model.prices)"
        ) from None
    return _file_table(p, mtime)


def price_table(contract_prices: Mapping[str, Any] | None = None) -> PriceTable:
    """The effective table: shipped, then the contract's file (as stored in its bundle), then
    ``$CHARTER_PRICES``."""
    table = builtin_table()
    if contract_prices is not None:
        source = str(contract_prices.get("file") or "model.prices")
        table = table.merged(parse_table(contract_prices.get("data"), source))
    env = os.environ.get(PRICES_ENV)
    if env:
        table = table.merged(load_table(env))
    return table


#: Providers that charge per token: a call to one of them with no price in the table is
#: refused when the contract limits cost (``max_cost_usd`` or a spend window), because the
#: limit could not be enforced. Other providers are trusted to report their own cost.
METERED = frozenset({"openai", "anthropic"})


def contract_prices(contract_file: str, name: str | None) -> dict[str, Any] | None:
    """The contract's ``model.prices`` file, parsed and checked, as stored in its bundle."""
    if not name:
        return None
    path = Path(name) if Path(name).is_absolute() else Path(contract_file).parent / name
    try:
        data = json.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise UsageError(
            f"{contract_file}: model.prices: cannot read price file {path}: {exc.strerror or exc}"
        ) from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"price file {path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    parse_table(data, str(path))
    return {"file": name, "data": data}

"""Cost arithmetic against hand-computed numbers, and the price table's lookup and overrides."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from charter.errors import UsageError
from charter.models.anthropic_provider import usage_from_anthropic
from charter.models.base import Usage
from charter.models.openai_provider import usage_from_openai
from charter.models.pricing import (
    Price,
    builtin_table,
    contract_prices,
    parse_table,
    price_table,
)

GPT_4O = Price(input=2.50, output=10.00, cached_input=1.25, cache_write=2.50, reasoning=10.00)
SONNET = Price(input=3.00, output=15.00, cached_input=0.30, cache_write=3.75, reasoning=15.00)


def test_plain_tokens() -> None:
    # 1,000,000 in at $2.50 + 100,000 out at $10 = 2.50 + 1.00
    assert GPT_4O.cost(Usage(input_tokens=1_000_000, output_tokens=100_000)) == pytest.approx(3.5)


def test_openai_cached_tokens_are_a_subset_of_prompt_tokens_and_priced_once() -> None:
    # prompt 10,000 of which 6,000 cached; completion 2,000 of which 500 reasoning
    usage = usage_from_openai(
        SimpleNamespace(
            prompt_tokens=10_000,
            completion_tokens=2_000,
            prompt_tokens_details=SimpleNamespace(cached_tokens=6_000),
            completion_tokens_details=SimpleNamespace(reasoning_tokens=500),
        )
    )
    assert usage == Usage(10_000, 2_000, 0.0, cached_input_tokens=6_000, reasoning_tokens=500)
    # 4,000 x 2.50 + 6,000 x 1.25 + 1,500 x 10 + 500 x 10, per million
    #   = 0.0100 + 0.0075 + 0.0150 + 0.0050 = 0.0375
    assert GPT_4O.cost(usage) == pytest.approx(0.0375, abs=1e-12)
    # the common bug (cached counted on top of the full prompt) would say 0.0325 + 0.02
    assert GPT_4O.cost(usage) != pytest.approx(0.0525)


def test_reasoning_tokens_at_their_own_price() -> None:
    o_series = Price(input=1.0, output=4.0, cached_input=0.25, cache_write=1.0, reasoning=8.0)
    # 1,000 in; 3,000 out of which 2,000 reasoning: 1,000x1 + 1,000x4 + 2,000x8 = 21,000 / 1e6
    assert o_series.cost(
        Usage(input_tokens=1_000, output_tokens=3_000, reasoning_tokens=2_000)
    ) == pytest.approx(0.021)


def test_anthropic_cache_reads_and_writes_come_beside_input_tokens() -> None:
    usage = usage_from_anthropic(
        SimpleNamespace(
            input_tokens=1_000,
            output_tokens=500,
            cache_read_input_tokens=8_000,
            cache_creation_input_tokens=2_000,
            output_tokens_details=None,
        )
    )
    assert usage == Usage(11_000, 500, 0.0, cached_input_tokens=8_000, cache_write_tokens=2_000)
    # 1,000 x 3 + 8,000 x 0.30 + 2,000 x 3.75 + 500 x 15 = 3,000 + 2,400 + 7,500 + 7,500
    assert SONNET.cost(usage) == pytest.approx(0.0204, abs=1e-12)


def test_anthropic_thinking_tokens_are_part_of_output() -> None:
    usage = usage_from_anthropic(
        SimpleNamespace(
            input_tokens=10,
            output_tokens=100,
            cache_read_input_tokens=None,
            cache_creation_input_tokens=None,
            output_tokens_details=SimpleNamespace(thinking_tokens=70),
        )
    )
    assert (usage.output_tokens, usage.reasoning_tokens, usage.tokens) == (100, 70, 110)


def test_inconsistent_counts_never_go_negative() -> None:
    assert GPT_4O.cost(Usage(input_tokens=10, cached_input_tokens=50)) == pytest.approx(
        10 * 1.25 / 1e6
    )


def test_the_reservation_is_an_upper_bound() -> None:
    p = Price(input=1.0, output=4.0, cached_input=0.5, cache_write=1.25, reasoning=8.0)
    # every input token at the dearest input rate, every output token at the dearest output rate
    assert p.reserve(Usage(input_tokens=1_000, output_tokens=1_000)) == pytest.approx(
        (1_000 * 1.25 + 1_000 * 8.0) / 1e6
    )
    worst = Usage(1_000, 1_000, cache_write_tokens=1_000, reasoning_tokens=1_000)
    assert p.cost(worst) <= p.reserve(Usage(1_000, 1_000))


def test_lookup_exact_then_dated_snapshot_then_wildcard() -> None:
    table = builtin_table()
    assert table.version == "charter-2026.05"
    assert table.lookup("openai", "gpt-4o-mini") == Price(0.15, 0.6, 0.075, 0.15, 0.6)
    # a dated snapshot takes the longest matching name, not the shorter gpt-4o
    assert table.lookup("openai", "gpt-4o-mini-2024-07-18") == table.lookup("openai", "gpt-4o-mini")
    assert table.lookup("openai", "gpt-4o-2024-08-06") == table.lookup("openai", "gpt-4o")
    assert table.lookup("anthropic", "claude-sonnet-4-5-20250929") == SONNET
    assert table.lookup("openai", "llama3.2") is None
    assert table.lookup("openai", "gpt-4omni") is None  # a prefix must end at a '-'
    assert table.lookup("scripted", "anything") == Price(0, 0, 0, 0, 0)
    assert table.lookup("nobody", "x") is None


def test_overrides_replace_entries_and_the_version_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract_file = tmp_path / "c.yaml"
    (tmp_path / "prices.json").write_text(
        json.dumps(
            {
                "version": "acme-7",
                "providers": {
                    "openai": {"*": {"input": 0, "output": 0}, "gpt-4o": {"input": 2, "output": 8}}
                },
            }
        )
    )
    stored = contract_prices(str(contract_file), "prices.json")
    assert stored is not None and stored["file"] == "prices.json"
    table = price_table(stored)
    assert table.version == "charter-2026.05+acme-7"
    assert table.lookup("openai", "gpt-4o") == Price(2, 8, 2, 2, 8)
    assert table.lookup("openai", "llama3.2") == Price(0, 0, 0, 0, 0)  # the local wildcard
    assert table.lookup("openai", "gpt-4o-mini") == builtin_table().lookup("openai", "gpt-4o-mini")
    env = tmp_path / "ops.json"
    env.write_text(
        json.dumps({"version": 3, "providers": {"openai": {"gpt-4o": {"input": 1, "output": 1}}}})
    )
    monkeypatch.setenv("CHARTER_PRICES", str(env))
    final = price_table(stored)
    assert final.version == "charter-2026.05+acme-7+3"
    assert final.lookup("openai", "gpt-4o") == Price(1, 1, 1, 1, 1)  # the operator's word wins


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"providers": {}}, "`version` is required"),
        (
            {"version": "v", "providers": {"openai": {"m": {"input": 1}}}},
            r"providers\.openai\.m\.output is required",
        ),
        (
            {"version": "v", "providers": {"openai": {"m": {"input": -1, "output": 1}}}},
            "non-negative number",
        ),
        (
            {"version": "v", "providers": {"openai": {"m": {"input": 1, "output": 1, "cache": 1}}}},
            r"unknown field\(s\) \['cache'\]",
        ),
    ],
)
def test_bad_price_files_are_refused_with_the_field(data: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_table(data, "p.json")


def test_a_missing_or_broken_price_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHARTER_PRICES", str(tmp_path / "nope.json"))
    with pytest.raises(UsageError, match=r"nope\.json does not exist"):
        price_table()
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  'version': 1\n}")
    monkeypatch.setenv("CHARTER_PRICES", str(bad))
    with pytest.raises(UsageError, match=r"bad.json:2:3: not valid JSON"):
        price_table()

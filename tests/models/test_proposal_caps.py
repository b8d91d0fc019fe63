"""A model's output over a cap is a reason for the model, not a crash: size, arguments, depth."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from charter.caps import CAPS
from charter.contract.model import Contract
from charter.jsontext import json_nesting_depth, json_size
from charter.models.proposal import parse_proposal
from tests.runs.domain import contract


@pytest.fixture(scope="module")
def ops() -> Contract:
    return contract()


def _email(args: Any) -> str:
    return json.dumps({"actions": [{"name": "send_email", "args": args}]})


def test_a_valid_proposal_parses(ops: Contract) -> None:
    proposal, reasons = parse_proposal(ops, _email({"to": "a@example.com", "body": "hi"}))
    assert reasons == []
    assert proposal is not None
    assert proposal.actions == [
        {"name": "send_email", "args": {"to": "a@example.com", "body": "hi"}}
    ]


@pytest.mark.parametrize("depth", [2000, 100_000])
def test_args_nested_thousands_deep_are_over_the_depth_cap(ops: Contract, depth: int) -> None:
    # before: RecursionError from json.loads (the stack, not the cap, gave up)
    raw = _email({"to": "x", "body": "@"}).replace('"@"', "[" * depth + "]" * depth)
    proposal, reasons = parse_proposal(ops, raw)
    assert proposal is None
    (reason,) = reasons
    assert reason.startswith(f"output: the nesting depth is {depth + 4:,}, over the limit of 64")
    assert "(json_depth)" in reason
    assert reason.endswith("reply with a flatter JSON object")


def test_nesting_the_parser_can_read_is_reported_by_path(ops: Contract) -> None:
    # passed before the change too: jsontext walks what json.loads could read
    raw = _email({"to": "x", "body": "@"}).replace('"@"', "[" * 100 + "]" * 100)
    _, reasons = parse_proposal(ops, raw)
    (reason,) = reasons
    assert reason.startswith("output.actions[0].args.body" + "[0]" * 60 + ": the nesting depth")
    assert "(json_depth)" in reason


@pytest.mark.timeout(20)
def test_a_1_mb_argument_is_over_the_output_cap(ops: Contract) -> None:
    # before: parsed, validated and handed on (the ledger would then record a megabyte)
    raw = _email({"to": "x", "body": "a" * 1_000_000})
    started = time.perf_counter()
    proposal, reasons = parse_proposal(ops, raw)
    assert time.perf_counter() - started < 0.5
    assert proposal is None
    assert reasons == [
        f"output is {len(raw):,} bytes, over the limit of 1,000,000 (model_output_bytes); "
        "reply with one shorter JSON object"
    ]


def test_arguments_over_their_cap_are_refused_with_the_action(ops: Contract) -> None:
    args = {"to": "x", "body": "é" * 150_000}  # 300,000 bytes of UTF-8 in 150,000 characters
    size = json_size(args)
    assert size == len(json.dumps(args, ensure_ascii=False, separators=(",", ":")).encode())
    proposal, reasons = parse_proposal(ops, _email(args))
    assert proposal is None
    assert reasons == [
        f"actions[0] (send_email): args is {size:,} bytes, over the limit of 256,000 "
        "(argument_bytes); propose smaller arguments (refer to data, do not copy it)"
    ]


def test_the_caps_are_exact_and_can_be_moved(
    ops: Contract, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {"to": "x", "body": "b" * 100}
    raw = _email(args)
    monkeypatch.setenv(CAPS["argument_bytes"].env, str(json_size(args)))
    monkeypatch.setenv(CAPS["model_output_bytes"].env, str(len(raw)))
    assert parse_proposal(ops, raw)[1] == []
    monkeypatch.setenv(CAPS["argument_bytes"].env, str(json_size(args) - 1))
    assert "(argument_bytes)" in parse_proposal(ops, raw)[1][0]
    monkeypatch.setenv(CAPS["model_output_bytes"].env, str(len(raw) - 1))
    assert "(model_output_bytes)" in parse_proposal(ops, raw)[1][0]
    monkeypatch.setenv(CAPS["model_output_bytes"].env, "10")  # counted in UTF-8 bytes
    text = '"\\u00e9" "é"é'
    (reason,) = parse_proposal(ops, text)[1]
    assert reason.startswith(f"output is {len(text.encode())} bytes, over the limit of 10 ")


def test_a_schema_message_quoting_a_long_value_is_shortened(ops: Contract) -> None:
    raw = json.dumps({"actions": [{"name": "write", "args": {"item": "i", "qty": "9" * 5000}}]})
    (reason,) = parse_proposal(ops, raw)[1]
    assert reason.startswith("actions[0] (write): args.qty: '999")
    assert reason.endswith(" ... (shortened)")
    assert len(reason) < 600


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ("[1, {}]", 2),
        ('{"a": "[[[[", "b": [[]]}', 3),
        ('["\\"[[", [[]]]', 3),
        ("]]][[", 2),  # malformed: a best effort
        ('"unterminated [[[', 0),
    ],
)
def test_nesting_depth_skips_strings(text: str, depth: int) -> None:
    assert json_nesting_depth(text) == depth

"""``parse_proposal`` never raises: any text gives a proposal or printable reasons.

A model's output is the least trusted input Charter reads: it may repeat whatever the model
was shown. Four generators, against the ops contract of ``tests/runs/domain.py``: any text
(lone surrogates included), JSON-ish token soup (NaN, Infinity, surrogate escapes, numbers
too long to convert), proposals with junk of the wrong type in every field, and valid
proposals nested thousands deep or padded around the size caps.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.contract.model import Contract
from charter.models.proposal import Proposal, parse_proposal
from tests.runs.domain import contract

OPS: Contract = contract()
NAMES = sorted(OPS.actions)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: any character, lone surrogates included (hypothesis leaves them out by default)
chars = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18),
    st.floats(),  # NaN and the infinities included
    st.text(chars, max_size=20),
    st.sampled_from(["", "\x00", "\ud800", "write", "send_email", "final", "a" * 300]),
)
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(["name", "args", "to", "item", "qty"]), st.text(chars)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)

actions = st.one_of(
    junk,
    st.lists(
        st.one_of(
            junk,
            st.fixed_dictionaries(
                {"name": st.one_of(st.sampled_from(NAMES), junk)},
                optional={"args": st.one_of(junk, st.dictionaries(st.text(chars), junk))},
            ),
        ),
        max_size=4,
    ),
)
proposals = st.fixed_dictionaries(
    {},
    optional={
        "actions": actions,
        "final": junk,
        "confidence": st.one_of(junk, st.floats(-1, 2)),
        "rationale": junk,
        "extra": junk,
    },
)

TOKENS = [
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    '"actions"',
    '"name"',
    '"args"',
    '"final"',
    '"confidence"',
    '"write"',
    '"send_email"',
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-0",
    "9" * 5000,
    "null",
    "true",
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\u0000"',
    '"\\ud83d\\ude00"',
    '"\\x"',
    "\ud800",
    " ",
    "\n",
]


def check(raw: str) -> None:
    result = parse_proposal(OPS, raw)
    assert isinstance(result, tuple) and len(result) == 2
    proposal, reasons = result
    if proposal is not None:
        assert reasons == []
        assert isinstance(proposal, Proposal)
        assert 0 <= proposal.confidence <= 1 and math.isfinite(proposal.confidence)
        for action in proposal.actions:
            assert action["name"] in OPS.actions and isinstance(action["args"], dict)
        json.dumps(proposal.actions, allow_nan=False).encode("utf-8")
    else:
        assert reasons
        for reason in reasons:
            assert isinstance(reason, str) and reason
            reason.encode("utf-8")  # no lone surrogate: it can be stored and sent back
            assert reason.isprintable(), reason


@FUZZ
@given(st.text(chars, max_size=200))
def test_any_text(raw: str) -> None:
    check(raw)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_json_token_soup(tokens: list[str]) -> None:
    check("".join(tokens))


@FUZZ
@given(proposals, st.booleans())
def test_junk_in_every_field(data: dict[str, Any], ascii_only: bool) -> None:
    check(json.dumps(data, ensure_ascii=ascii_only))  # NaN written as NaN, surrogates escaped


@settings(FUZZ, max_examples=40)
@given(
    depth=st.integers(0, 5000),
    opener=st.sampled_from(["[", '{"a": ', '[{"b": ']),
    closed=st.booleans(),
    size=st.sampled_from([0, 10, 255_950, 256_100, 999_900, 1_000_100]),
    name=st.sampled_from(NAMES),
)
def test_deep_and_large(depth: int, opener: str, closed: bool, size: int, name: str) -> None:
    closer = {"[": "]", '{"a": ': "}", '[{"b": ': "}]"}[opener]
    nested = opener * depth + '"' + "x" * size + '"' + (closer * depth if closed else "")
    check('{"actions": [{"name": "%s", "args": {"to": %s}}]}' % (name, nested))  # noqa: UP031

"""Fuzz ``parse_proposal``: any model output gives a proposal or printable reasons, never raises.

Inputs, chosen by the first byte: the bytes as text (invalid UTF-8 becomes lone
surrogates, as a careless provider could hand over); the text as the ``args`` of a declared
action; a valid proposal nested as deep as the next two bytes say, around the bytes. Checked
against the ops contract of ``tests/runs/domain.py``.

A short run (what ``tests/fuzz/test_harnesses.py`` does)::

    .venv/bin/python tests/fuzz/fuzz_proposal.py --seconds 3

A long run with atheris (``.venv/bin/pip install atheris``)::

    mkdir -p fuzz-corpus/proposal fuzz-crashes
    .venv/bin/python tests/fuzz/fuzz_proposal.py -max_total_time=3600 -jobs=2 -workers=2 \\
        -timeout=10 -dict=tests/fuzz/json.dict -artifact_prefix=fuzz-crashes/ \\
        fuzz-corpus/proposal

Without atheris the same command lines work with ``--seconds N`` (hypothesis drives it).
"""

from __future__ import annotations

import json
import math
import sys

import _engine

with _engine.instrumented(sys.argv):
    from charter.models.proposal import Proposal, parse_proposal
    from tests.runs.domain import contract

OPS = contract()
NAMES = sorted(OPS.actions)
SEEDS = [
    b"\x00"
    + json.dumps({"actions": [{"name": "write", "args": {"item": "a", "qty": 1}}]}).encode(),
    b"\x00" + json.dumps({"final": {"ok": True}, "confidence": 0.5, "rationale": "done"}).encode(),
    b'\x01\x03{"to": "a@example.com", "body": "\\ud800"}',
    b'\x01\x00{"item": NaN, "qty": Infinity}',
    b"\x02\x07\xd0[",
    b"\x00" + b"[" * 3000,
    b'\x00{"actions": [{"name": "write", "args": {"item": "a", "qty": ' + b"9" * 5000 + b"}}]}",
]


def check(raw: str) -> None:
    proposal, reasons = parse_proposal(OPS, raw)
    if proposal is not None:
        assert reasons == [], reasons
        assert isinstance(proposal, Proposal)
        assert 0 <= proposal.confidence <= 1 and math.isfinite(proposal.confidence)
        json.dumps(proposal.actions, allow_nan=False).encode("utf-8")
    else:
        assert reasons, "no proposal and no reason"
        for reason in reasons:
            reason.encode("utf-8")
            assert reason.isprintable(), repr(reason)


def one_input(data: bytes) -> None:
    mode, rest = (data[0] % 3, data[1:]) if data else (0, b"")
    text = rest.decode("utf-8", "surrogateescape")
    if mode == 0:
        check(text)
    elif mode == 1:
        name = NAMES[rest[0] % len(NAMES)] if rest else NAMES[0]
        check('{"actions": [{"name": "%s", "args": %s}]}' % (name, text[1:]))  # noqa: UP031
    else:
        depth = int.from_bytes(rest[:2], "big") % 5000
        opener = "[" if len(rest) < 3 or rest[2] % 2 else '{"a": '
        closer = "]" if opener == "[" else "}"
        body = opener * depth + json.dumps(text[3:]) + closer * depth
        check('{"actions": [{"name": "send_email", "args": {"to": %s}}]}' % body)  # noqa: UP031


if __name__ == "__main__":
    _engine.main(one_input, SEEDS, description=__doc__ or "", libfuzzer_defaults=["-timeout=10"])

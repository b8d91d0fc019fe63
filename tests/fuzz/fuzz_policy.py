"""Fuzz the policy evaluator: any CEL text compiles or is refused; any rule decides in time.

Inputs, chosen by the first byte:

* **text**: the rest, decoded as UTF-8, is a CEL expression. ``compile_expression`` must
  return an :class:`Expression` or raise :class:`CelCompileError` — never a Rust panic, never
  a crash — and the cost estimate and the deadline-checked program come with it. If it
  compiles and is cheap, its deadline-checked program must give what the plain one gives.
* **grammar**: the rest drives a small CEL grammar (nested comprehensions over literal lists,
  concatenations and request data, arithmetic, string helpers, ``has``, ``in``, literals,
  ``provenance()`` and ``count()``) and a request; the rule is decided with no static cost
  limit, and ``decide`` must return a :class:`Decision` within the decision budget (50 ms
  here) plus a margin, or raise :class:`PolicyError` for a malformed request.

A short run::

    .venv/bin/python tests/fuzz/fuzz_policy.py --seconds 10

A long run with atheris (``.venv/bin/pip install atheris``), a corpus kept between runs,
crashes written to ``fuzz-crashes/``::

    mkdir -p fuzz-corpus/policy fuzz-crashes
    .venv/bin/python tests/fuzz/fuzz_policy.py -max_total_time=3600 -jobs=2 -workers=2 \\
        -timeout=10 -rss_limit_mb=3072 -artifact_prefix=fuzz-crashes/ fuzz-corpus/policy

Replay a crash: ``.venv/bin/python tests/fuzz/fuzz_policy.py fuzz-crashes/crash-...``.
Without atheris the same command lines work with ``--seconds N`` (hypothesis drives it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import _engine

BUDGET_MS = 50
os.environ["CHARTER_CAP_DECISION_MS"] = str(BUDGET_MS)

with _engine.instrumented(sys.argv):
    from charter import Decision, InMemoryHistory, PolicyError
    from charter.errors import CelCompileError
    from charter.policy.cel import TICK, Environment, compile_expression
    from charter.policy.engine import ActionTraits, PolicyEngine, Rule
    from charter.policy.provenance import Observation

NOW = datetime(2026, 3, 2, 10, 15, tzinfo=UTC)
HISTORY = InMemoryHistory()
HISTORY.record("refund", {"order_id": "a"}, NOW - timedelta(minutes=5))
ACTIONS = {
    "refund": ActionTraits("write", "internal", ()),
    "email": ActionTraits("irreversible", "external", ("pii",)),
}
T = TypeVar("T")


class Draw:
    """Choices read from bytes; once they run out, every choice is the first."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def pick(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    def number(self, top: int) -> int:
        return (self.byte() << 8 | self.byte()) % (top + 1)


RANGES = ["context.items", "context.words", "input.list"]
MACROS = ["all", "exists", "exists_one", "map", "filter"]


def expression(d: Draw, depth: int, names: tuple[str, ...]) -> str:
    """A CEL expression of at most ``depth`` levels, using comprehension ``names``."""
    if depth == 0 or d.byte() % 4 == 0:
        return d.pick(
            [
                str(d.number(40)),
                f'"{d.pick(["", "a", "b,c", "pii", "a@b.co"])}"',
                d.pick(["action.args.amount", "action.args.order_id", "context.tier", "input.n"]),
                f"[{', '.join(str(i) for i in range(d.number(60)))}]",
                d.pick(RANGES),
                d.pick(["true", "false", "null", "has(context.tier)", "size(context.items)"]),
                d.pick(names) if names else "1",
            ]
        )
    sub = depth - 1
    kind = d.byte() % 12
    if kind == 0:
        op = d.pick(["+", "-", "*", "/", "%", "==", "!=", "<", ">=", "in", "&&", "||"])
        return f"({expression(d, sub, names)} {op} {expression(d, sub, names)})"
    if kind in (1, 2, 3):  # comprehensions, the shape that multiplies
        name = f"v{len(names)}"
        over = d.pick(
            [
                d.pick(RANGES),
                f"[{', '.join(str(i) for i in range(d.number(60)))}]",
                " + ".join(f"[{', '.join(str(i) for i in range(d.number(20)))}]" for _ in "abc"),
                expression(d, sub, names),
            ]
        )
        body = expression(d, sub, (*names, name))
        if d.byte() % 3 == 0:  # a body that holds for every element: no early end
            body = " + ".join(f"string({n})" for n in (*names, name)) + ' != "-"'
        return f"({over}).{d.pick(MACROS)}({name}, {body})"
    if kind == 4:
        method = d.pick(
            ["lowerAscii()", "trim()", 'split(",")', 'replace("a", "bb")', "size()", 'join("-")']
        )
        return f"{expression(d, sub, names)}.{method}"
    if kind == 5:
        return f"[{expression(d, sub, names)}].{d.pick(['flatten()', 'distinct()'])}"
    if kind == 6:
        return f'"pii" in provenance({expression(d, sub, names)}).labels'
    if kind == 7:
        return f'count("refund", {{"order_id": {expression(d, sub, names)}}}, duration("1h")) > 0'
    if kind == 8:
        return f"[{expression(d, sub, names)}, {expression(d, sub, names)}]"
    if kind == 9:
        return f'{{"k": {expression(d, sub, names)}}}'
    if kind == 10:
        return (
            f"({expression(d, sub, names)} ? {expression(d, sub, names)} : "
            f"{expression(d, sub, names)})"
        )
    return f"!({expression(d, sub, names)})"


def request(d: Draw) -> dict[str, Any]:
    n = d.pick([0, 3, 300, 3000])
    malformed = d.byte() % 16
    action: Any = {"name": d.pick(["refund", "email"]), "args": {"order_id": "a", "amount": 5}}
    if malformed == 1:
        action = {"name": "unknown"}
    return {
        "at": "bogus" if malformed == 2 else "action",
        "action": action,
        "input": {"n": 2, "list": [1, "a", None]},
        "context": {
            "items": list(range(n)),
            "words": [f"w{i}" for i in range(min(n, 300))],
            "tier": "gold",
        },
        "observations": [Observation("crm", ("pii",), "a@b.co")],
        "now": NOW.replace(tzinfo=None) if malformed == 3 else NOW,
        "history": HISTORY,
    }


def fuzz_text(data: bytes) -> None:
    source = data.decode("utf-8", "replace")
    try:
        expr = compile_expression(source)
    except CelCompileError:
        return
    if expr.guarded is None or expr.cost > 100_000:
        return
    env = Environment({"context": {"items": [1, 2]}}, {TICK: lambda: True})
    outcomes = []
    for program in (expr.program, expr.guarded):
        try:
            outcomes.append(("value", repr(program.execute(env.context))))
        except Exception as exc:
            outcomes.append(("error", type(exc).__name__))
    if "{" not in source:  # iterating a map has no fixed order
        assert outcomes[0] == outcomes[1], (source, outcomes)


def fuzz_grammar(data: bytes) -> None:
    d = Draw(data)
    source = expression(d, 1 + d.byte() % 5, ())
    os.environ["CHARTER_CAP_EXPRESSION_COST"] = str(10**15)
    try:
        when = compile_expression(source)
    except CelCompileError:
        return  # the grammar can write what CEL refuses (e.g. integer literals out of range)
    finally:
        del os.environ["CHARTER_CAP_EXPRESSION_COST"]
    engine = PolicyEngine(
        contract="fuzz@1",
        policy_hash="0" * 64,
        rules=[
            Rule("r", "action", when, "deny", ""),
            Rule("ok", "action", compile_expression("true"), "allow", ""),
        ],
        actions=ACTIONS,
        on_error="review",
    )
    started = time.perf_counter()
    try:
        decision = engine.decide(**request(d))
    except PolicyError:
        return
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert isinstance(decision, Decision)
    assert elapsed_ms < BUDGET_MS + 1000, (elapsed_ms, source)
    assert decision.effect in ("deny", "review", "allow")
    if decision.errors:
        assert decision.effect in ("deny", "review"), decision


def one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        fuzz_text(data[1:])
    else:
        fuzz_grammar(data[1:])


THIRTY = "[" + ",".join(str(i) for i in range(30)) + "]"
SEEDS = [
    b"\x00" + f"{THIRTY}.all(a, {THIRTY}.all(b, {THIRTY}.all(c, a + b + c >= 0)))".encode(),
    b"\x00context.items.exists(x, context.items.exists(y, x == y))",
    b'\x00[1, 2].map(x, x > 1, x * 2) == [4] && r"\\d" != ""',
    b"\x00" + b"1" + b" " * 9_000 + b"+",
    b"\x00action" + b".a" * 4_000,
    b"\x01\x05\x01\x00\x03\x02\x01\x01\x00\x03\x02\x01",
    b"\x01\x04\x02\x02\x00\x01\x02\x01\x02\x00\x01\x03\x03\x00\x02",
    b"\x01" + bytes(range(64)),
]


if __name__ == "__main__":
    _engine.main(one_input, SEEDS, description=__doc__ or "", libfuzzer_defaults=["-timeout=10"])

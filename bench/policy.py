"""How fast is a policy decision, and how does it compare with what it is built on?

Run ``python bench/policy.py`` (``--quick`` for a short run, ``--json`` for machine-readable
figures). It prints, from one process and one run, so the figures are comparable:

* ``charter refunds``: ``Contract.decide`` on the example refunds contract
  (``examples/refunds/refunds.yaml``; the label says how many of its rules are action
  rules) for a realistic ``issue_refund`` request: customer, orders and account in the
  context, a proposal, three observations;
* ``charter generated-100``: the same request against a generated contract of 100 action
  rules of the same shapes (comparisons on ``action.args``, context fields, ``in`` lists,
  string functions, a few comprehensions), written to a temporary directory;
* ``raw CEL``: the baseline the engine is built on: one comparable expression compiled once
  with ``cel.compile``, then per call ``program.execute({...})`` with the same top-level
  variables the action rules reference, i.e. *including* converting them to CEL values,
  which is what a naive integration pays per decision;
* ``cedarpy``: the refunds action rules translated to Cedar (see ``CEDAR_POLICIES`` for what
  is and is not equivalent), one ``cedarpy.is_authorized`` call per decision with the
  policies and (empty) entities parsed once, as Charter compiles its CEL once.

Timing: ``time.perf_counter_ns`` around each single call, after a warm-up, with the garbage
collector disabled during the timed loop; figures are the median (p50) and 99th percentile
of the per-call times, and calls per second is ``1 / mean``. Each timed loop cycles through
a pool of requests of the same shape (different orders, amounts, confidences), so nothing
can be cached from one call to the next without it showing.

This is a script, not a test: timings depend on the machine, so nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cel
from ruamel.yaml import YAML

from charter import Contract

ROOT = Path(__file__).resolve().parents[1]
REFUNDS = ROOT / "examples" / "refunds" / "refunds.yaml"
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
POOL = 16  # distinct requests of one shape, cycled through by every timed loop

#: Targets for this benchmark (2-core CI machine), from the performance brief.
TARGETS = {
    "refunds_p50_us": 60.0,
    "refunds_p99_us": 120.0,
    "refunds_p50_vs_raw_cel": 2.0,
    "generated_p50_us": 200.0,
}


# -- requests --------------------------------------------------------------------------


def make_request(i: int) -> dict[str, Any]:
    """One realistic ``issue_refund`` decision request; ``i`` varies ids, amounts, text.

    Every request of the pool takes the same path through the policy (it is allowed by
    ``routine``), so the figures are those of one kind of decision, not of a mix.
    """
    order_id = f"ord-{12000 + i:05d}"
    other_id = f"ord-{23000 + i:05d}"
    customer = {
        "customer_id": f"cus-{i:04d}",
        "name": "Ada Lovelace",
        "email": f"ada.{i}@example.com",
        "tier": "gold",
        "since": "2019-04-02",
    }
    orders = {
        "items": [
            {
                "order_id": order_id,
                "amount_cents": 12000 + 10 * i,
                "refunded_cents": 0,
                "placed_at": "2026-01-20T10:00:00Z",
                "status": "delivered",
            },
            {
                "order_id": other_id,
                "amount_cents": 5000,
                "refunded_cents": 1000,
                "placed_at": "2025-12-02T16:30:00Z",
                "status": "delivered",
            },
        ]
    }
    message = (
        f"Hello, my order {order_id} arrived broken, the glass was shattered. "
        "Please refund me, thanks."
    )
    return {
        "action": {
            "name": "issue_refund",
            "args": {"order_id": order_id, "amount_cents": 4500 + i},
        },
        "input": {
            "ticket_id": f"t-{i:04d}",
            "customer_id": customer["customer_id"],
            "order_id": order_id,
            "message": message,
            "claimed_cents": 4500 + i,
        },
        "context": {
            "crm": {"customer": customer},
            "orders": orders,
            "account": {"risk_score": 12, "region": "eu-west", "flags": ["vip"]},
        },
        "proposal": {
            "confidence": 0.9 - i / 1000,
            "rationale": "The order exists, was delivered and the claim matches its price.",
            "final": False,
        },
        "observations": [
            {"channel": "ticket.message", "labels": ["untrusted"], "content": message},
            {"channel": "crm.customer", "labels": ["pii"], "content": customer},
            {"channel": "orders", "labels": [], "content": orders},
        ],
        "at": "action",
        "now": NOW + timedelta(seconds=i),
    }


# -- the generated 100-rule contract ---------------------------------------------------


def generated_rules(n: int = 100) -> list[dict[str, str]]:
    """``n`` action rules in the shapes real policies use, none of which matches the pool.

    Like a real policy, most rules are about one action (a leading ``action.name == ...``
    test), some apply to every action. The mix for n=100: 60 about ``issue_refund``, 20
    about ``send_email``, 10 about ``reverse_refund``, 10 about any action; the last rule
    is the ``routine`` allow.
    """
    refund = 'action.name == "issue_refund"'
    email = 'action.name == "send_email"'
    reverse = 'action.name == "reverse_refund"'
    shapes: list[Callable[[int], str]] = [
        lambda i: f"{refund} && action.args.amount_cents > {60000 + 100 * i}",
        lambda i: f'{refund} && context.crm.customer.tier in ["blocked", "suspended-{i}"]',
        lambda i: (
            f'{refund} && context.crm.customer.email.lowerAscii().endsWith("@fraud-{i}.example")'
        ),
        lambda i: f'{refund} && action.args.order_id.startsWith("ord-9{i:03d}")',
        lambda i: (
            f"{refund} && context.account.risk_score > {70 + i % 20} && "
            f"action.args.amount_cents > {1000 * (i % 7 + 1)}"
        ),
        lambda i: f'{refund} && "hold-{i}" in context.account.flags',
        lambda i: f'{refund} && has(action.args.destination) && action.args.destination != ""',
        lambda i: (
            f"{refund} && context.orders.items.exists(o, o.order_id == action.args.order_id "
            f'&& o.status == "returned-{i}")'
        ),
        lambda i: f'{refund} && context.account.region in ["ru-{i}", "kp-{i}", "ir-{i}"]',
        lambda i: f"{refund} && proposal.confidence < 0.{10 + i % 40}",
    ]
    email_shapes: list[Callable[[int], str]] = [
        lambda i: f'{email} && action.args.subject.lowerAscii().contains("urgent-{i}")',
        lambda i: f"{email} && action.args.to != context.crm.customer.email",
        lambda i: f"{email} && size(action.args.body) > {4000 + i}",
        lambda i: f'{email} && action.args.to.endsWith("@competitor-{i}.example")',
    ]
    rules: list[dict[str, str]] = []

    def add(when: str, effect: str) -> None:
        rules.append({"id": f"r{len(rules):03d}", "when": when, "effect": effect})

    effects = ("deny", "review", "escalate", "review", "deny")
    for i in range(60):
        add(shapes[i % len(shapes)](i), effects[i % len(effects)])
    for i in range(20):
        add(email_shapes[i % len(email_shapes)](i), effects[i % len(effects)])
    for i in range(10):
        add(f'{reverse} && action.args.refund_id.startsWith("rf-{i}")', "review")
    for i in range(9):
        add(
            f'context.account.region == "blocked-{i}" || proposal.confidence < 0.0{i + 1}',
            "review",
        )
    add('action.name in ["issue_refund", "send_email", "reverse_refund"]', "allow")
    return rules[:n]


def write_generated_contract(directory: Path, n: int = 100) -> Path:
    """The refunds contract with its policy replaced by ``n`` generated rules."""
    yaml = YAML(typ="safe")
    data = yaml.load(REFUNDS.read_text(encoding="utf-8"))
    data["contract"] = f"refunds-generated-{n}"
    data["policy"]["rules"] = generated_rules(n)
    path = directory / f"generated-{n}.yaml"
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return path


# -- the raw CEL baseline --------------------------------------------------------------

#: One of the refunds rules (over-refund), as comparable to a decision as one expression is.
RAW_CEL = (
    'action.name == "issue_refund" && context.orders.items.exists(o, '
    "o.order_id == action.args.order_id && "
    "action.args.amount_cents + o.refunded_cents > o.amount_cents)"
)


def raw_cel_variables(request: dict[str, Any]) -> dict[str, Any]:
    """The top-level variables the refunds action rules reference, as the engine sees them."""
    return {
        "action": {**request["action"], "effect": "write", "egress": "internal"},
        "context": request["context"],
        "proposal": request["proposal"],
    }


# -- the Cedar translation -------------------------------------------------------------

#: The refunds *action* rules in Cedar. Cedar decides allow/deny only, with forbid
#: overriding permit; Charter's five effects are recovered from which policies determined
#: the decision (every non-allow rule is a ``forbid`` annotated with its effect), which is
#: what a Cedar-based engine would do. Equivalences and gaps, rule by rule:
#:
#: * the ``action.name == "..."`` tests become Cedar action scopes (``action == ...``);
#: * unknown-order, over-refund: Cedar has no comprehensions (``exists``). The request
#:   carries ``order_ids`` (a set) and ``order`` (the record of the order being refunded),
#:   computed by the caller *outside* the timed call, so Cedar does less work than CEL;
#: * big-refund, other-destination, routine: direct equivalents (``has`` for ``has()``);
#: * injected-destination: ``provenance()`` has no Cedar counterpart; the caller passes the
#:   destination's labels as ``destination_labels`` (empty here), computed outside the call;
#: * injected-recipient: Cedar has no ``lowerAscii``; compares case-sensitively;
#: * low-confidence: Cedar has no floats; confidence is a ``decimal`` (four places);
#: * email-rate: ``count()`` over history has no counterpart; the caller passes
#:   ``emails_to_recipient_last_hour`` (0 here).
CEDAR_POLICIES = """
@id("unknown-order")
forbid(principal, action == Action::"issue_refund", resource)
when { !context.order_ids.contains(context.args.order_id) };

@id("over-refund")
forbid(principal, action == Action::"issue_refund", resource)
when { context has order &&
       context.args.amount_cents + context.order.refunded_cents > context.order.amount_cents };

@id("big-refund")
forbid(principal, action == Action::"issue_refund", resource)
when { context.args.amount_cents > 50000 };

@id("other-destination")
forbid(principal, action == Action::"issue_refund", resource)
when { context.args has destination };

@id("injected-destination")
forbid(principal, action == Action::"issue_refund", resource)
when { context.args has destination && context.destination_labels.contains("untrusted") };

@id("injected-recipient")
forbid(principal, action == Action::"send_email", resource)
when { context.args.to != context.customer.email };

@id("low-confidence")
forbid(principal, action, resource)
when { context.confidence.lessThan(decimal("0.7")) };

@id("email-rate")
forbid(principal, action == Action::"send_email", resource)
when { context.emails_to_recipient_last_hour >= 3 };

@id("routine")
permit(principal, action in [Action::"issue_refund", Action::"send_email",
                             Action::"reverse_refund"], resource);
"""


def cedar_request(request: dict[str, Any]) -> dict[str, Any]:
    """The Cedar request for one refunds request; derived values are computed here, untimed."""
    args = request["action"]["args"]
    items = request["context"]["orders"]["items"]
    order = next((o for o in items if o["order_id"] == args["order_id"]), None)
    context: dict[str, Any] = {
        "args": args,
        "order_ids": [o["order_id"] for o in items],
        "customer": {"email": request["context"]["crm"]["customer"]["email"]},
        "confidence": {
            "__extn": {"fn": "decimal", "arg": f"{request['proposal']['confidence']:.4f}"}
        },
        "destination_labels": [],
        "emails_to_recipient_last_hour": 0,
    }
    if order is not None:
        context["order"] = {
            "amount_cents": order["amount_cents"],
            "refunded_cents": order["refunded_cents"],
        }
    return {
        "principal": 'Agent::"refunds"',
        "action": f'Action::"{request["action"]["name"]}"',
        "resource": f'Order::"{args["order_id"]}"',
        "context": context,
    }


# -- measurement -----------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Per-call timings of one benchmark, in microseconds."""

    name: str
    p50_us: float
    p99_us: float
    mean_us: float
    calls_per_s: float
    iterations: int


def measure(
    name: str,
    call: Callable[[Any], object],
    pool: Sequence[Any],
    *,
    warmup: int,
    iterations: int,
) -> Figures:
    """Time ``call(pool[i % len(pool)])`` one call at a time; GC off while timing."""
    n = len(pool)
    for i in range(warmup):
        call(pool[i % n])
    samples = [0] * iterations
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in range(iterations):
            arg = pool[i % n]
            started = clock()
            call(arg)
            samples[i] = clock() - started
    finally:
        gc.enable()
    samples.sort()
    mean = statistics.fmean(samples)
    return Figures(
        name=name,
        p50_us=statistics.median(samples) / 1000,
        p99_us=samples[min(iterations - 1, int(iterations * 0.99))] / 1000,
        mean_us=mean / 1000,
        calls_per_s=1e9 / mean,
        iterations=iterations,
    )


def charter_call(contract: Contract) -> Callable[[dict[str, Any]], object]:
    def call(request: dict[str, Any]) -> object:
        return contract.decide(**request)

    return call


def run(*, quick: bool) -> dict[str, Any]:
    """Run every benchmark and return the figures, ratios and target checks."""
    warmup, iterations = (300, 2000) if quick else (3000, 30000)
    pool = [make_request(i) for i in range(POOL)]
    refunds = Contract.load(REFUNDS)
    results: dict[str, Figures] = {}

    with tempfile.TemporaryDirectory(prefix="charter-bench-") as tmp:
        generated = Contract.load(write_generated_contract(Path(tmp)))

    # Every request of the pool must decide the same, or the figures would mix paths.
    for contract in (refunds, generated):
        effects = {contract.decide(**r).effect for r in pool}
        if effects != {"allow"}:
            raise SystemExit(f"{contract.name}: pool decided {effects}, expected allow")

    results["refunds"] = measure(
        f"charter refunds ({len(refunds.engine.rules_at('action'))} action rules)",
        charter_call(refunds),
        pool,
        warmup=warmup,
        iterations=iterations,
    )
    results["generated"] = measure(
        f"charter generated ({len(generated.engine.rules_at('action'))} rules)",
        charter_call(generated),
        pool,
        warmup=warmup,
        iterations=iterations,
    )

    program = cel.compile(RAW_CEL)
    raw_pool = [raw_cel_variables(r) for r in pool]
    if any(program.execute(v) is not False for v in raw_pool):
        raise SystemExit("raw CEL baseline: expected false for every request")
    results["raw_cel"] = measure(
        "raw CEL: 1 expression + conversion",
        program.execute,
        raw_pool,
        warmup=warmup,
        iterations=iterations,
    )

    cedar = run_cedar(pool, warmup=warmup, iterations=iterations)
    if cedar is not None:
        results["cedar"] = cedar

    refunds_p50 = results["refunds"].p50_us
    ratios = {"refunds_p50_vs_raw_cel": refunds_p50 / results["raw_cel"].p50_us}
    if "cedar" in results:
        ratios["refunds_p50_vs_cedar"] = refunds_p50 / results["cedar"].p50_us
        ratios["generated_p50_vs_cedar"] = results["generated"].p50_us / results["cedar"].p50_us
    targets = {
        "refunds p50 <= 60us": refunds_p50 <= TARGETS["refunds_p50_us"],
        "refunds p99 <= 120us": results["refunds"].p99_us <= TARGETS["refunds_p99_us"],
        "refunds p50 <= 2x raw CEL": ratios["refunds_p50_vs_raw_cel"]
        <= TARGETS["refunds_p50_vs_raw_cel"],
        "generated-100 p50 <= 200us": results["generated"].p50_us <= TARGETS["generated_p50_us"],
    }
    if "cedar" in results:
        targets["refunds faster than cedar"] = ratios["refunds_p50_vs_cedar"] < 1.0
    return {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "iterations": iterations,
        "pool": POOL,
        "figures": {k: asdict(v) for k, v in results.items()},
        "ratios": ratios,
        "targets_met": targets,
    }


def run_cedar(pool: Sequence[dict[str, Any]], *, warmup: int, iterations: int) -> Figures | None:
    """Time ``cedarpy.is_authorized``; ``None`` (and a note) when cedarpy is not installed."""
    try:
        import cedarpy
    except ImportError:
        print("cedarpy not installed (pip install -e '.[bench]'); skipping Cedar", file=sys.stderr)
        return None
    policies = cedarpy.PolicySet.from_str(CEDAR_POLICIES)
    entities = cedarpy.Entities.from_json_str("[]")
    cedar_pool = [cedar_request(r) for r in pool]
    for request in cedar_pool:
        result = cedarpy.is_authorized(request, policies, entities)
        if not result.allowed or result.diagnostics.errors:
            raise SystemExit(f"cedar: expected allow, got {result.decision}")

    def call(request: dict[str, Any]) -> object:
        return cedarpy.is_authorized(request, policies, entities)

    return measure(
        "cedarpy is_authorized (refunds)", call, cedar_pool, warmup=warmup, iterations=iterations
    )


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"policy decisions: python {m['python']}, {m['cpus']} CPUs, "
        f"{report['iterations']} calls each over {report['pool']} requests, GC off while timing",
        "",
        f"{'':40} {'p50 µs':>9} {'p99 µs':>9} {'mean µs':>9} {'calls/s':>10}",
    ]
    for f in report["figures"].values():
        lines.append(
            f"{f['name']:40} {f['p50_us']:9.1f} {f['p99_us']:9.1f} {f['mean_us']:9.1f} "
            f"{f['calls_per_s']:10,.0f}"
        )
    lines.append("")
    for name, value in report["ratios"].items():
        lines.append(f"{name:40} {value:9.2f}x")
    lines.append("")
    for name, ok in report["targets_met"].items():
        lines.append(f"{name:40} {'met' if ok else 'NOT met':>9}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (2,000 calls each)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    report = run(quick=args.quick)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Policy engine semantics: precedence, defaults, decision points, fail-closed, flow rules."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from charter import Decision, PolicyError
from charter.policy.decision import EFFECTS, PRECEDENCE
from tests.helpers import NOW, contract_with, refund, rule

NOTE = {"name": "note", "args": {}}


def test_precedence_order() -> None:
    assert sorted(EFFECTS, key=PRECEDENCE.__getitem__) == [
        "allow",
        "batch",
        "review",
        "escalate",
        "deny",
    ]


@pytest.mark.parametrize(
    "effects",
    [c for n in range(1, 6) for c in itertools.combinations(EFFECTS, n)],
    ids=lambda c: "+".join(c),
)
def test_the_strongest_matching_effect_wins(effects: tuple[str, ...]) -> None:
    rules = [rule(f"r-{e}", "true", e, reason=f"because {e}") for e in effects]
    rules.append(rule("never", "false", "deny"))
    d = contract_with(rules).decide(action=NOTE, now=NOW)
    winner = max(effects, key=PRECEDENCE.__getitem__)
    assert d.effect == winner
    assert d.rules == (f"r-{winner}",)
    assert d.reasons == (f"because {winner}",)
    assert d.matched == tuple(sorted(f"r-{e}" for e in effects))
    assert d.errors == ()


def test_rules_and_reasons_list_every_rule_that_produced_the_effect() -> None:
    c = contract_with(
        [
            rule("b", "true", "review", reason="B", reviewers=["x", "y"]),
            rule("a", "true", "review", reason="A", reviewers=["y", "z"]),
            rule("c", "true", "allow", reason="C", reviewers=["ignored"]),
        ]
    )
    d = c.decide(action=NOTE, now=NOW)
    assert d.rules == ("a", "b")
    assert d.reasons == ("A", "B")
    assert d.reviewers == ("x", "y", "z")
    assert d.matched == ("a", "b", "c")


def test_a_rule_without_reason_gives_its_id() -> None:
    d = contract_with([rule("plain", "true", "batch")]).decide(action=NOTE, now=NOW)
    assert (d.effect, d.reasons) == ("batch", ("plain",))


@pytest.mark.parametrize("default", EFFECTS)
def test_no_match_takes_the_policy_default(default: str) -> None:
    c = contract_with([rule("never", "false", "allow")], default=default)
    d = c.decide(action=NOTE, now=NOW)
    assert d.effect == default
    assert d.rules == ()
    assert d.matched == ()
    assert d.reasons == (f"no rule matched; policy default is {default}",)


def test_the_default_of_the_default_is_deny() -> None:
    c = contract_with([rule("never", "false", "allow")])
    assert c.engine.default == "deny"
    assert c.decide(action=NOTE, now=NOW).effect == "deny"


def test_an_action_with_no_rules_at_all_takes_the_default() -> None:
    assert contract_with([]).decide(action=NOTE, now=NOW).effect == "deny"
    assert contract_with([], default="review").decide(action=NOTE, now=NOW).effect == "review"


@pytest.mark.parametrize("at", ["admit", "outcome"])
def test_admit_and_outcome_with_no_rules_allow(at: str) -> None:
    c = contract_with([rule("act", "true", "deny")], default="deny")
    d = c.decide(at=at, now=NOW)  # type: ignore[arg-type]
    assert d.effect == "allow"
    assert d.at == at
    assert d.reasons == (f"no {at} rules; {at} allowed",)
    assert d.rules == d.matched == ()


@pytest.mark.parametrize("at", ["admit", "outcome"])
def test_admit_and_outcome_with_rules_but_no_match_take_the_default(at: str) -> None:
    c = contract_with([rule("x", "false", "allow", at=at)], default="escalate")
    assert c.decide(at=at, now=NOW).effect == "escalate"  # type: ignore[arg-type]


def test_rules_apply_only_at_their_decision_point() -> None:
    c = contract_with(
        [
            rule("adm", "true", "review", at="admit"),
            rule("act", "true", "batch"),
            rule("out", "true", "escalate", at="outcome"),
        ]
    )
    assert c.decide(at="admit", now=NOW).rules == ("adm",)
    assert c.decide(action=NOTE, now=NOW).rules == ("act",)
    assert c.decide(at="outcome", now=NOW).rules == ("out",)
    assert [r.id for r in c.engine.rules_at("action")] == ["act"]


def test_admit_and_outcome_see_input_context_and_outcome() -> None:
    c = contract_with(
        [
            rule("vip", 'context.tier == "vip" && input.amount < 10', "allow", at="admit"),
            rule("over", "outcome.refunded > input.amount", "review", at="outcome"),
            rule("fine", "outcome.refunded <= input.amount", "allow", at="outcome"),
        ]
    )
    assert (
        c.decide(at="admit", input={"amount": 5}, context={"tier": "vip"}, now=NOW).effect
        == "allow"
    )
    assert (
        c.decide(at="admit", input={"amount": 50}, context={"tier": "vip"}, now=NOW).effect
        == "deny"
    )
    assert (
        c.decide(at="outcome", input={"amount": 5}, outcome={"refunded": 6}, now=NOW).effect
        == "review"
    )
    assert (
        c.decide(at="outcome", input={"amount": 5}, outcome={"refunded": 5}, now=NOW).effect
        == "allow"
    )


def test_action_variables_name_args_effect_egress() -> None:
    c = contract_with(
        [
            rule(
                "shape",
                'action.name == "email" && action.effect == "irreversible" '
                '&& action.egress == "external" && action.args.to == "a@b.io"',
                "review",
            ),
            rule("internal", 'action.egress == "internal" && action.effect == "write"', "batch"),
        ]
    )
    assert c.decide(action={"name": "email", "args": {"to": "a@b.io"}}, now=NOW).rules == ("shape",)
    assert c.decide(action=refund(), now=NOW).rules == ("internal",)


def test_proposal_and_run_variables() -> None:
    c = contract_with(
        [
            rule("unsure", "proposal.confidence < 0.7", "review"),
            rule("long", "run.step > 3 || run.cost_usd > 1.0", "escalate"),
            rule("ok", "true", "allow"),
        ]
    )
    sure = {"confidence": 0.9}
    assert c.decide(action=NOTE, proposal=sure, now=NOW).effect == "allow"
    assert c.decide(action=NOTE, proposal={"confidence": 0.5}, now=NOW).effect == "review"
    assert c.decide(action=NOTE, proposal=sure, run={"step": 4}, now=NOW).effect == "escalate"
    assert c.decide(action=NOTE, proposal=sure, run={"cost_usd": 1.5}, now=NOW).effect == "escalate"


def test_run_fields_default_to_zero() -> None:
    c = contract_with(
        [
            rule(
                "zero",
                "run.step == 0 && run.model_calls == 0 && run.tokens == 0 && run.actions == 0 "
                "&& run.cost_usd == 0.0 && run.elapsed_s == 0.0",
                "allow",
            )
        ]
    )
    d = c.decide(action=NOTE, now=NOW)
    assert (d.effect, d.errors) == ("allow", ())


# -- runtime errors fail closed ---------------------------------------------------------

ERRORS = {
    "missing field": ("action.args.missing > 3", "no such key: missing"),
    "missing variable root": ("context.customer.tier == 'vip'", "no such key: customer"),
    "type error": ("action.args.amount > 'ten'", "No such overload"),
    "non-bool result": ("action.args.amount", "condition must be true or false, got int"),
    "string result": ("'yes'", "condition must be true or false, got str"),
    "division by zero": ("action.args.amount / 0 > 1", "division by zero"),
    "bad conversion": ("int(action.args.order_id) > 1", "Function 'int' error"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_a_failing_rule_fails_closed_with_the_error_in_the_decision(case: str) -> None:
    when, message = ERRORS[case]
    c = contract_with([rule("broken", when, "allow"), rule("ok", "true", "allow")])
    d = c.decide(action=refund(), now=NOW)
    assert d.effect == "deny"
    assert d.rules == ("broken",)
    assert d.matched == ("broken", "ok")
    (error,) = d.errors
    assert error.rule == "broken"
    assert message in error.message
    assert d.reasons[0].startswith("rule broken failed closed: ")
    assert message in d.reasons[0]


@pytest.mark.parametrize("on_error", EFFECTS)
def test_failing_rules_take_on_error(on_error: str) -> None:
    c = contract_with(
        [rule("broken", "action.args.nope", "allow"), rule("ok", "true", "allow")],
        on_error=on_error,
    )
    d = c.decide(action=refund(), now=NOW)
    assert d.effect == on_error
    assert [e.rule for e in d.errors] == ["broken"]


def test_an_error_never_weakens_a_stronger_match() -> None:
    c = contract_with(
        [rule("broken", "action.args.nope", "allow"), rule("stop", "true", "deny")],
        on_error="review",
    )
    d = c.decide(action=refund(), now=NOW)
    assert (d.effect, d.rules) == ("deny", ("stop",))
    assert [e.rule for e in d.errors] == ["broken"]  # still reported


def test_a_failing_rule_whose_own_effect_is_deny_still_reports_the_error() -> None:
    d = contract_with([rule("x", "context.a.b", "deny")]).decide(action=NOTE, now=NOW)
    assert d.effect == "deny"
    assert d.errors[0].rule == "x"


def test_has_guards_make_rules_total() -> None:
    c = contract_with([rule("g", "has(action.args.dest) && action.args.dest != ''", "review")])
    assert c.decide(action=NOTE, now=NOW).errors == ()


def test_errors_are_sorted_by_rule_id() -> None:
    c = contract_with([rule("z", "context.a", "deny"), rule("a", "context.b", "deny")])
    assert [e.rule for e in c.decide(action=NOTE, now=NOW).errors] == ["a", "z"]


def test_failing_admit_rules_fail_closed_too() -> None:
    c = contract_with([rule("adm", "input.missing == 1", "allow", at="admit")])
    d = c.decide(at="admit", now=NOW)
    assert d.effect == "deny"
    assert d.errors[0].rule == "adm"


# -- bad requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": None}, "an action decision needs an action"),
        ({"action": {"args": {}}}, "an action decision needs an action"),
        (
            {"action": {"name": "launch"}},
            "action 'launch' is not declared by contract shop@1; declared: email, note, refund",
        ),
        ({"action": {"name": "note", "args": "x"}}, "action.args must be an object, got str"),
        (
            {"action": NOTE, "at": "later"},
            "unknown decision point 'later'; use one of admit, action, outcome",
        ),
        ({"action": NOTE, "now": datetime(2026, 1, 1)}, "'now' must be timezone-aware"),
    ],
)
def test_requests_the_engine_cannot_answer_raise_policy_error(
    kwargs: dict[str, Any], message: str
) -> None:
    c = contract_with([rule("ok", "true", "allow")])
    kwargs.setdefault("now", NOW)
    with pytest.raises(PolicyError) as info:
        c.decide(**kwargs)
    assert message in str(info.value)
    assert info.value.exit_code == 2


# -- time -------------------------------------------------------------------------------


def test_now_comes_from_the_argument() -> None:
    c = contract_with(
        [
            rule("night", "now.getHours() < 8 || now.getHours() >= 18", "review"),
            rule("expired", 'now > timestamp("2027-01-01T00:00:00Z")', "deny"),
            rule("ok", "true", "allow"),
        ]
    )
    day = datetime(2026, 6, 1, 12, tzinfo=UTC)
    assert c.decide(action=NOTE, now=day).effect == "allow"
    assert c.decide(action=NOTE, now=day.replace(hour=3)).effect == "review"
    assert c.decide(action=NOTE, now=datetime(2027, 6, 1, 12, tzinfo=UTC)).effect == "deny"
    # 09:00 at UTC+2 is 07:00 UTC: the instant matters, not the wall clock
    plus2 = datetime(2026, 6, 1, 9, tzinfo=timezone(timedelta(hours=2)))
    d = c.decide(action=NOTE, now=plus2)
    assert d.effect == "review"
    assert d.now == "2026-06-01T07:00:00Z"


def test_a_decision_replays_identically_for_the_same_now() -> None:
    c = contract_with(
        [rule("minute", "now.getMinutes() % 2 == 0", "review"), rule("ok", "true", "allow")]
    )
    first = c.decide(action=NOTE, now=NOW)
    later = [c.decide(action=NOTE, now=NOW) for _ in range(5)]
    assert all(d == first for d in later)
    assert first.now == "2026-03-02T10:15:00Z"


# -- the built-in flow rule ---------------------------------------------------------------

CRM = {
    "channel": "crm.customer",
    "labels": ["pii"],
    "content": {"name": "Dana Whitfield", "passport": "X1234567"},
}
NOTES = {
    "channel": "crm.notes",
    "labels": ["confidential"],
    "content": "fraud check 4471-22 pending; case ZX99881",
}
TICKET = {
    "channel": "ticket.message",
    "labels": ["untrusted"],
    "content": "write to me at dana@example.com",
}


def email(**args: Any) -> dict[str, Any]:
    return {"name": "email", "args": args}


def test_flow_rule_denies_labels_outside_allows_labels() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    d = c.decide(
        action=email(to="dana@example.com", body="Case ZX99881 is under review"),
        observations=[CRM, NOTES, TICKET],
        now=NOW,
    )
    assert d.effect == "deny"
    assert d.rules == ("flow:email",)
    assert d.matched == ("flow:email", "ok")
    (reason,) = d.reasons
    assert "'confidential' data flows into args.body" in reason
    assert "'untrusted' data flows into args.to" in reason
    assert "(allows_labels: pii)" in reason
    assert reason.startswith("email sends data outside the organisation")


def test_flow_rule_allows_labels_in_allows_labels() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    d = c.decide(action=email(body="Dear Dana Whitfield"), observations=[CRM, NOTES], now=NOW)
    assert (d.effect, d.rules) == ("allow", ("ok",))


def test_flow_rule_names_nested_argument_paths() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    d = c.decide(
        action=email(parts=[{"text": "hi"}, {"text": "ref ZX99881"}]), observations=[NOTES], now=NOW
    )
    assert d.effect == "deny"
    assert "'confidential' data flows into args.parts[1].text" in d.reasons[0]


def test_flow_rule_applies_only_to_external_egress() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    d = c.decide(
        action={"name": "note", "args": {"text": "ZX99881"}}, observations=[NOTES], now=NOW
    )
    assert d.effect == "allow"


def test_flow_rule_without_observations_does_nothing() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    assert c.decide(action=email(body="ZX99881"), now=NOW).effect == "allow"


def test_flow_rule_applies_even_when_no_rule_matches() -> None:
    c = contract_with([], default="allow")
    d = c.decide(action=email(body="ZX99881"), observations=[NOTES], now=NOW)
    assert (d.effect, d.rules) == ("deny", ("flow:email",))


def test_flow_rule_is_not_evaluated_at_admit() -> None:
    c = contract_with([rule("adm", "true", "allow", at="admit")])
    d = c.decide(at="admit", action=email(body="ZX99881"), observations=[NOTES], now=NOW)
    assert d.effect == "allow"


def test_decisions_carry_identity() -> None:
    c = contract_with([rule("ok", "true", "allow")])
    d = c.decide(action=NOTE, now=NOW)
    assert isinstance(d, Decision)
    assert d.contract == "shop@1"
    assert d.policy_hash == c.policy_hash
    assert d.at == "action"
    assert d.elapsed_us > 0

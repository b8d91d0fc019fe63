"""The policy engine: a pure function from a request to a :class:`Decision`.

Semantics (documented in ``docs/policy.md``):

* every rule of the decision point is evaluated — order never matters;
* matched effects combine by precedence deny > escalate > review > batch > allow;
* a rule whose expression fails fails *closed*: it contributes ``on_error`` (default deny)
  and the error is part of the decision;
* no contribution → ``default`` (itself deny unless set); at ``admit`` and ``outcome`` a
  policy with no rules for that point at all admits / accepts;
* an action with ``egress: external`` whose arguments carry provenance labels outside its
  ``allows_labels`` is denied by the built-in rule ``flow:<action>``.

Nothing here performs I/O except through the history provider, and the only clock read
is the time budget (the ``decision_ms`` cap): a decision whose rules run out of time fails
closed (see "Limits" in docs/policy.md), and is the one kind that may not replay exactly.

Performance (``bench/policy.py``): converting the request to CEL values costs far more than
evaluating the rules, so each decision point gets a :class:`_Plan` once, at load: the rules
that can match (at ``action``, per action name: a rule that starts ``action.name == "x" &&``
is false for every other action), the parts of the variables those rules can read (see
:attr:`Expression.paths`), and the functions they call. A decision converts only that, and
indexes observations for provenance only if a rule or the flow check asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from charter.caps import CAPS
from charter.errors import ContractError, Issue, PolicyError
from charter.policy.cel import (
    BUILTIN_FUNCTIONS,
    TICK,
    VARIABLES,
    Budget,
    Environment,
    Expression,
    Path,
    Shape,
    error_message,
    is_panic,
    out_of_time,
    prune,
    shape_of,
)
from charter.policy.decision import (
    DECISION_POINTS,
    Decision,
    DecisionPoint,
    Effect,
    RuleError,
    strongest,
)
from charter.policy.history import HistoryProvider, NoHistory
from charter.policy.normalize import match_form
from charter.policy.provenance import Observation, ProvenanceIndex
from charter.primitives import parse_duration


@dataclass(frozen=True)
class Rule:
    """One policy rule, compiled. ``source`` is ``contract`` or the name of a policy pack."""

    id: str
    at: DecisionPoint
    when: Expression
    effect: Effect
    reason: str
    reviewers: tuple[str, ...] = ()
    source: str = "contract"


@dataclass(frozen=True)
class ActionTraits:
    """What policy needs to know of a declared action beyond its proposed arguments."""

    effect: str
    egress: str
    allows_labels: tuple[str, ...]
    #: argument name → normaliser; ``count()`` asks about these in their normal form
    normalize: Mapping[str, str] = field(default_factory=dict)


#: What a matched (or failed) rule contributes: id, effect, reason, reviewers.
_Contribution = tuple[str, Effect, str, tuple[str, ...]]


@dataclass(frozen=True)
class _Plan:
    """What deciding at one point (and, at ``action``, for one action name) needs.

    ``rules`` are the rules that can match, in contract order; ``checks`` the same as
    (id, program to run, the rule's own program, contribution when true, whether to read
    the clock after it), where the program to run is the rule's without its leading
    ``action.name == "..."`` test when the plan is for that action (see
    :attr:`Expression.unguarded`) and the clock is read as :func:`_timed` says; ``shape``
    the variables to convert and which parts of each; ``functions`` the built-in helpers
    the rules call; ``provenance``/``count`` whether they call those per-decision
    functions; ``guarded`` whether a program calls :data:`~charter.policy.cel.TICK` (see
    :class:`~charter.policy.cel.Budget`).
    """

    rules: tuple[Rule, ...]
    checks: tuple[tuple[str, Any, Any, _Contribution, bool], ...]
    shape: tuple[tuple[str, Shape | None], ...]
    functions: dict[str, Callable[..., Any]]
    provenance: bool
    count: bool
    guarded: bool = False


def _plan(rules: Sequence[Rule], action_name: str | None = None) -> _Plan:
    """The plan for evaluating ``rules`` together, for one action if named (see _Plan)."""
    paths: set[Path] = set()
    called: set[str] = set()
    for rule in rules:
        expr = rule.when
        if expr.paths is None:  # not analysable: every variable it names, whole
            paths.update((v,) for v in expr.variables if v in VARIABLES)
        else:
            paths.update(expr.paths)
        called.update(expr.functions)
    # CEL reports a namespaced call (``ns.f(...)``) as a call of ``f``: match the last part.
    functions = {
        name: fn
        for name, fn in BUILTIN_FUNCTIONS.items()
        if name in called or name.rsplit(".", 1)[-1] in called
    }
    return _Plan(
        rules=tuple(rules),
        checks=tuple(
            (
                r.id,
                _program_for(r, action_name),
                r.when.guarded if r.when.guarded is not None else r.when.program,
                (r.id, r.effect, r.reason or r.id, r.reviewers),
                _timed(r, i, len(rules)),
            )
            for i, r in enumerate(rules)
        ),
        shape=tuple(shape_of(paths).items()),
        functions=functions,
        provenance="provenance" in called,
        count="count" in called,
        guarded=any(r.when.guarded is not None for r in rules),
    )


#: Rules evaluated between two readings of the clock, at most (see :func:`_timed`).
_CLOCK_EVERY = 4

#: Calls that run Python (or ask the history provider) rather than native CEL.
_PYTHON_CALLS = frozenset(BUILTIN_FUNCTIONS) | {"count", "provenance"}


def _timed(rule: Rule, index: int, count: int) -> bool:
    """Whether the engine reads the clock after this rule (the ``index``-th of ``count``).

    Always after a rule with deadline checks or calls into Python, and after every
    :data:`_CLOCK_EVERY`-th rule and the last; the rules in between are native CEL without
    comprehensions, whose time is bounded by their size and the request's, so reading the
    clock after each of them (some 50 ns) would cost more than it could catch.
    """
    return (
        rule.when.guarded is not None
        or bool(rule.when.functions & _PYTHON_CALLS)
        or index % _CLOCK_EVERY == _CLOCK_EVERY - 1
        or index == count - 1
    )


def _program_for(rule: Rule, action_name: str | None) -> Any:
    """The rule's program without its ``action.name == action_name &&``, if it has one.

    That test is known to be true in a plan for ``action_name``; skipping it saves a
    fraction of a microsecond per rule, which adds up over the rules of one action. A
    rule with deadline checks runs its guarded programs (the shortened one has them too).
    """
    expr = rule.when
    if (
        action_name is not None
        and expr.unguarded is not None
        and expr.guard == (("action", "name"), action_name)
    ):
        return expr.unguarded
    return expr.guarded if expr.guarded is not None else expr.program


def _may_match(rule: Rule, action_name: str) -> bool:
    """False when the rule's leading ``action.name == "..."`` test rules this action out."""
    guard = rule.when.guard
    return guard is None or guard[0] != ("action", "name") or guard[1] == action_name


_NO_HISTORY = NoHistory()
_EMPTY_RUN: Mapping[str, Any] = {
    "step": 0,
    "model_calls": 0,
    "tokens": 0,
    "cost_usd": 0.0,
    "actions": 0,
    "elapsed_s": 0.0,
}


def _as_window(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        return parse_duration(value)
    raise TypeError(f"count() window must be a duration, got {type(value).__name__}")


def _leaf_paths(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for k in sorted(value):
            yield from _leaf_paths(value[k], f"{prefix}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaf_paths(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


class PolicyEngine:
    """Rules of one contract and its packs, grouped by decision point, ready to evaluate."""

    def __init__(
        self,
        *,
        contract: str,
        policy_hash: str,
        rules: Sequence[Rule],
        actions: Mapping[str, ActionTraits],
        default: Effect = "deny",
        on_error: Effect = "deny",
    ) -> None:
        cap = CAPS["rules"]
        if len(rules) > cap.limit:
            sources: dict[str, int] = {}
            for r in rules:
                sources[r.source] = sources.get(r.source, 0) + 1
            counted = ", ".join(f"{n:,} from {source}" for source, n in sources.items())
            raise ContractError(
                [
                    Issue(
                        contract,
                        1,
                        1,
                        "policy.rules",
                        f"{cap.exceeded(len(rules))} ({counted})",
                        "split the contract, or apply fewer policy packs to it",
                    )
                ]
            )
        self.contract = contract
        self.policy_hash = policy_hash
        self.default: Effect = default
        self.on_error: Effect = on_error
        self.actions = dict(actions)
        self.rules = tuple(rules)
        #: rule evaluation time per decision (the ``decision_ms`` cap when loaded)
        self.budget_ms = CAPS["decision_ms"].limit
        self._by_point: dict[str, tuple[Rule, ...]] = {
            point: tuple(r for r in rules if r.at == point) for point in DECISION_POINTS
        }
        self._plans: dict[str, _Plan] = {
            point: _plan(group) for point, group in self._by_point.items()
        }
        self._action_plans: dict[str, _Plan] = {
            name: _plan([r for r in self._by_point["action"] if _may_match(r, name)], name)
            for name in self.actions
        }

    def rules_at(self, at: str) -> tuple[Rule, ...]:
        return self._by_point[at]

    def decide(
        self,
        *,
        at: DecisionPoint = "action",
        action: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        observations: Sequence[Observation] = (),
        proposal: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        outcome: Any = None,
        now: datetime,
        history: HistoryProvider | None = None,
    ) -> Decision:
        """Evaluate every rule of ``at`` against one environment and combine the effects."""
        started = time.perf_counter()
        if at not in self._by_point:
            raise PolicyError(
                f"unknown decision point {at!r}; use one of {', '.join(DECISION_POINTS)}"
            )
        if now.tzinfo is None:
            raise PolicyError("'now' must be timezone-aware, e.g. 2026-01-31T12:00:00Z")
        now = now.astimezone(UTC)
        if at == "action":
            action_value = self._action_value(action)
            plan = self._action_plans[action_value["name"]]
        else:
            action_value = dict(action or {})
            plan = self._plans[at]
        prov = ProvenanceIndex(observations)
        contributions: list[_Contribution] = []
        errors: list[RuleError] = []
        if plan.rules:
            # Only the variables (and parts of them) the plan's rules can read are built and
            # converted; see _Plan. Unread variables are never copied either.
            values: dict[str, Any] = {}
            for name, shape in plan.shape:
                value: Any
                if name == "action":
                    value = action_value
                elif name == "input":
                    value = input if type(input) is dict else dict(input or {})
                elif name == "context":
                    value = context if type(context) is dict else dict(context or {})
                elif name == "proposal":
                    value = proposal if type(proposal) is dict else dict(proposal or {})
                elif name == "run":
                    value = {**_EMPTY_RUN, **(run or {})}
                elif name == "now":
                    value = now
                else:  # outcome
                    value = outcome if outcome is not None else {}
                values[name] = prune(value, shape)
            functions = plan.functions
            budget = None
            if plan.provenance or plan.count or plan.guarded:
                budget = Budget(self.budget_ms)
                functions = dict(functions)
                if plan.guarded:
                    functions[TICK] = budget.ticker()
                if plan.provenance:

                    def provenance(value: Any) -> dict[str, list[str]]:
                        budget.check()
                        return prov.of(value).to_dict()

                    functions["provenance"] = provenance
                if plan.count:
                    hist = history if history is not None else _NO_HISTORY

                    def count(name: str, match: Mapping[str, Any], window: Any) -> int:
                        budget.check()
                        # in the normal form of the counted action's arguments (if this
                        # contract declares it): recorded actions are projected the same way
                        traits = self.actions.get(str(name))
                        asked = match_form(traits.normalize, match) if traits else dict(match)
                        return hist.count(str(name), asked, now - _as_window(window), now)

                    functions["count"] = count
            context_ = Environment.of(values, functions).context
            # The clock runs from here: rule evaluation, not converting the request, is
            # what the budget bounds. It is read after the rules _timed() marks; inside a
            # rule, guarded programs and count()/provenance() read it too (Budget).
            clock = time.perf_counter
            deadline = clock() + self.budget_ms / 1000
            if budget is not None:
                budget.deadline = deadline
            # The programs run directly rather than through Expression.evaluate: with many
            # rules the extra call per rule shows, and the message is only built on failure.
            for rule_id, program, full, contribution, timed in plan.checks:
                failure: BaseException | None = None
                try:
                    result = program.execute(context_)
                except Exception as exc:
                    result, failure = None, exc
                except BaseException as exc:  # a panic of the native evaluator: fail closed
                    if not is_panic(exc):
                        raise
                    result, failure = None, exc
                if program is not full and result is not True and result is not False:
                    # An error or a non-boolean from a shortened program: what the rule
                    # gives (and the message) is its own, so run it as written. Rare.
                    failure = None
                    try:
                        result = full.execute(context_)
                    except Exception as exc:
                        result, failure = None, exc
                    except BaseException as exc:
                        if not is_panic(exc):
                            raise
                        result, failure = None, exc
                if timed and clock() > deadline:
                    self._out_of_time(plan, rule_id, deadline, errors, contributions)
                    break
                if result is True:
                    contributions.append(contribution)
                    continue
                if result is False:
                    continue
                if failure is not None:
                    message = error_message(failure)
                else:
                    message = f"condition must be true or false, got {type(result).__name__}"
                errors.append(RuleError(rule_id, message))
                contributions.append(
                    (rule_id, self.on_error, f"rule {rule_id} failed closed: {message}", ())
                )
        if at == "action":
            contributions.extend(self._flow(action_value, prov))
        if prov.error is not None:
            # Observations that cannot be indexed make the decision fail, as they did when
            # they were indexed up front, rather than fail closed inside one rule.
            raise prov.error

        rule_ids: tuple[str, ...]
        reasons: tuple[str, ...]
        matched: tuple[str, ...]
        if len(contributions) == 1:  # the usual case, e.g. one allow rule: same as below
            rule_id, effect, reason, rule_reviewers = contributions[0]
            rule_ids, reasons, matched = (rule_id,), (reason,), (rule_id,)
            reviewers = tuple(sorted(set(rule_reviewers)))
        elif contributions:
            effect = strongest([c[1] for c in contributions])
            deciding = sorted((c for c in contributions if c[1] == effect), key=lambda c: c[0])
            rule_ids = tuple(c[0] for c in deciding)
            reasons = tuple(c[2] for c in deciding)
            reviewers = tuple(sorted({r for c in deciding for r in c[3]}))
            matched = tuple(sorted([c[0] for c in contributions]))
        else:
            if at != "action" and not self._by_point[at]:
                effect = "allow"
                reasons = (f"no {at} rules; {at} allowed",)
            else:
                effect = self.default
                reasons = (f"no rule matched; policy default is {self.default}",)
            rule_ids = ()
            reviewers = ()
            matched = ()
        return Decision(
            effect=effect,
            at=at,
            rules=rule_ids,
            matched=matched,
            reasons=reasons,
            errors=tuple(sorted(errors, key=lambda e: e.rule)) if errors else (),
            reviewers=reviewers,
            contract=self.contract,
            policy_hash=self.policy_hash,
            now=now.isoformat().replace("+00:00", "Z"),
            elapsed_us=(time.perf_counter() - started) * 1e6,
        )

    def _out_of_time(
        self,
        plan: _Plan,
        rule_id: str,
        deadline: float,
        errors: list[RuleError],
        contributions: list[_Contribution],
    ) -> None:
        """The decision's rules ran out of time in ``rule_id``: it fails closed, whatever
        it returned, and so does every rule after it, which is not evaluated."""
        message = out_of_time(self.budget_ms, deadline)
        errors.append(RuleError(rule_id, message))
        contributions.append(
            (rule_id, self.on_error, f"rule {rule_id} failed closed: {message}", ())
        )
        ids = [check[0] for check in plan.checks]
        for later in ids[ids.index(rule_id) + 1 :]:
            skipped = (
                f"not evaluated: the decision ran out of time in rule {rule_id} "
                f"(decision_ms, {self.budget_ms:,} ms)"
            )
            errors.append(RuleError(later, skipped))
            contributions.append(
                (later, self.on_error, f"rule {later} failed closed: {skipped}", ())
            )

    def _action_value(self, action: Mapping[str, Any] | None) -> dict[str, Any]:
        if not action or "name" not in action:
            raise PolicyError('an action decision needs an action: {"name": ..., "args": {...}}')
        name = str(action["name"])
        traits = self.actions.get(name)
        if traits is None:
            known = ", ".join(sorted(self.actions)) or "none"
            raise PolicyError(
                f"action {name!r} is not declared by contract {self.contract}; declared: {known}"
            )
        args = action.get("args") or {}
        if not isinstance(args, Mapping):
            raise PolicyError(f"action.args must be an object, got {type(args).__name__}")
        return {"name": name, "args": dict(args), "effect": traits.effect, "egress": traits.egress}

    def _flow(
        self, action: Mapping[str, Any], prov: ProvenanceIndex
    ) -> list[tuple[str, Effect, str, tuple[str, ...]]]:
        traits = self.actions[action["name"]]
        if traits.egress != "external" or not prov:
            return []
        allowed = set(traits.allows_labels)
        found: list[tuple[str, str]] = []
        for path, value in _leaf_paths(action["args"], "args"):
            for label in prov.of(value).labels:
                if label not in allowed:
                    found.append((label, path))
        if not found:
            return []
        detail = "; ".join(f"{label!r} data flows into {path}" for label, path in found)
        allowed_text = ", ".join(sorted(allowed)) or "none"
        reason = (
            f"{action['name']} sends data outside the organisation: {detail} "
            f"(allows_labels: {allowed_text})"
        )
        return [(f"flow:{action['name']}", "deny", reason, ())]

"""Contracts and policy packs as loaded, validated, immutable objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from charter.contract.formats import validator as schema_validator
from charter.contract.sections import Autonomy, Budget, Escalation, ModelSection, Privacy, Value
from charter.contract.source import Document, PathPart, read_yaml
from charter.contract.validate import contract_issues, pack_issues
from charter.errors import ContractError, Issue
from charter.policy.cel import Expression, compile_expression
from charter.policy.decision import Decision, DecisionPoint
from charter.policy.engine import ActionTraits, PolicyEngine, Rule
from charter.policy.history import HistoryProvider
from charter.policy.normalize import normalizers
from charter.policy.provenance import Observation
from charter.primitives import digest, import_path_problem, parse_duration

#: How long one executor call may take when the action sets no ``timeout``.
DEFAULT_ACTION_TIMEOUT = timedelta(seconds=60)
#: Executor calls per action (timed out or never returned) before it is given up.
DEFAULT_MAX_ATTEMPTS = 3


def import_path_issues(doc: Document) -> list[Issue]:
    """Code the contract names that this deployment does not allow it to run, located.

    Checked when a contract loads (``charter contract validate``, submission) and again
    when code is imported (``charter.primitives.import_callable``), so neither a contract
    file nor a bundle stored in the ledger can make a worker import ``os:system``.
    """
    d = doc.data
    found: list[tuple[list[PathPart], str]] = []
    for name, ch in (d.get("channels") or {}).items():
        if isinstance(ch, dict) and isinstance(ch.get("reader"), str):
            found.append((["channels", name, "reader"], ch["reader"]))
    for name, spec in (d.get("actions") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("executor"), str):
            found.append((["actions", name, "executor"], spec["executor"]))
    model = d.get("model")
    if isinstance(model, dict) and isinstance(model.get("script"), str):
        found.append((["model", "script"], model["script"]))
    issues = []
    for where, path in found:
        problem = import_path_problem(path)
        if problem is not None:
            issues.append(
                doc.issue(where, problem, "name your own code, or widen the allowed prefixes")
            )
    return issues


def version_key(version: str) -> tuple[int, ...]:
    """Order versions numerically: ``10`` after ``9``, ``1.10`` after ``1.9``."""
    return tuple(int(p) for p in version.split("."))


def _rules(raw: Iterable[Mapping[str, Any]], source: str, prefix: str = "") -> list[Rule]:
    return [
        Rule(
            id=prefix + str(r["id"]),
            at=r.get("at", "action"),
            when=compile_expression(r["when"]),
            effect=r["effect"],
            reason=str(r.get("reason", "")),
            reviewers=tuple(r.get("reviewers") or ()),
            source=source,
        )
        for r in raw
    ]


@dataclass(frozen=True)
class PolicyPack:
    """Organisation-wide rules applied to every contract its ``applies_to`` selects.

    Pack rule ids are prefixed with the pack name (``pii-guard/no-pii-email``) so a
    decision always says which pack a rule came from.
    """

    name: str
    version: str
    domains: tuple[str, ...]
    contracts: tuple[str, ...]
    rules: tuple[Rule, ...]
    content_hash: str
    path: str
    data: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> PolicyPack:
        return cls.from_document(read_yaml(path))

    @classmethod
    def from_document(cls, doc: Document) -> PolicyPack:
        issues = pack_issues(doc)
        if issues:
            raise ContractError(issues)
        data = doc.data
        name = data["pack"]
        applies = data["applies_to"]
        return cls(
            name=name,
            version=str(data.get("version", 1)),
            domains=tuple(applies.get("domains") or ()),
            contracts=tuple(applies.get("contracts") or ()),
            rules=tuple(_rules(data["rules"], source=name, prefix=f"{name}/")),
            content_hash=digest(data),
            path=doc.file,
            data=data,
        )

    def applies(self, contract: str, domain: str) -> bool:
        return contract in self.contracts or domain in self.domains or "*" in self.domains


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    labels: tuple[str, ...]
    max_age: timedelta | None
    reader: str | None


@dataclass(frozen=True)
class ActionSpec:
    name: str
    executor: str | Mapping[str, Any]
    effect: str
    args_schema: Mapping[str, Any]
    egress: str
    allows_labels: tuple[str, ...]
    compensate: str | None
    reads: tuple[str, ...]
    validator: Draft202012Validator = field(compare=False, repr=False)
    description: str = ""
    #: argument name → normaliser ``count()`` compares it with (see charter.policy.normalize)
    normalize: Mapping[str, str] = field(default_factory=dict)
    timeout: timedelta = DEFAULT_ACTION_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class Contract:
    """A loaded contract: what a delegated task may see and do, and how its proposals are decided.

    Load with :meth:`load`; every check happens before the object exists, so holding a
    ``Contract`` means holding a valid one.
    """

    name: str
    version: str
    domain: str
    description: str
    input_schema: Mapping[str, Any]
    input_validator: Draft202012Validator = field(repr=False, compare=False)
    channels: Mapping[str, ChannelSpec]
    actions: Mapping[str, ActionSpec]
    escalation: Escalation
    budget: Budget
    model: ModelSection
    success: tuple[Expression, ...]
    value: Value | None
    autonomy: Autonomy
    privacy: Privacy
    data: Mapping[str, Any] = field(repr=False)
    content_hash: str
    path: str
    packs: tuple[PolicyPack, ...]
    engine: PolicyEngine = field(repr=False, compare=False)

    @property
    def ref(self) -> str:
        """``name@version``, the identity people and decisions use."""
        return f"{self.name}@{self.version}"

    @property
    def policy_hash(self) -> str:
        return self.engine.policy_hash

    @property
    def sensitive(self) -> bool:
        """Whether the contract reads data labelled sensitive (its runs are sealed at rest
        when the deployment has a key-encryption key)."""
        wanted = set(self.privacy.sensitive)
        return any(wanted.intersection(ch.labels) for ch in self.channels.values())

    @property
    def normalizers(self) -> dict[str, Mapping[str, str]]:
        """Action → argument → the normaliser ``count()`` compares it with."""
        return {name: spec.normalize for name, spec in self.actions.items() if spec.normalize}

    @classmethod
    def load(cls, path: str | Path, packs: Sequence[PolicyPack] = ()) -> Contract:
        """Load and fully check a contract file; raise :class:`ContractError` listing every problem.

        Packs whose ``applies_to`` selects this contract are merged into its policy.
        """
        return cls.from_document(read_yaml(path), packs)

    @classmethod
    def from_document(cls, doc: Document, packs: Sequence[PolicyPack] = ()) -> Contract:
        issues = contract_issues(doc)
        if not issues:
            issues = import_path_issues(doc)
        if issues:
            raise ContractError(issues)
        d = doc.data
        name, domain, version = d["contract"], d["domain"], str(d["version"])
        applied = tuple(sorted((p for p in packs if p.applies(name, domain)), key=lambda p: p.name))
        content_hash = digest(d)
        policy = d.get("policy") or {}
        actions = {
            a: ActionSpec(
                name=a,
                executor=spec["executor"],
                effect=spec["effect"],
                args_schema=spec["args"],
                egress=spec.get("egress", "internal"),
                allows_labels=tuple(spec.get("allows_labels") or ()),
                compensate=spec.get("compensate"),
                reads=tuple(spec.get("reads") or ()),
                validator=schema_validator(spec["args"]),
                description=str(spec.get("description") or ""),
                normalize=normalizers(spec["args"], spec.get("normalize") or {}),
                timeout=parse_duration(spec["timeout"])
                if spec.get("timeout")
                else DEFAULT_ACTION_TIMEOUT,
                max_attempts=int(spec.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
            )
            for a, spec in d["actions"].items()
        }
        rules = _rules(policy.get("rules") or [], source="contract")
        for pack in applied:
            rules.extend(pack.rules)
        policy_hash = digest(
            {
                "contract": content_hash,
                "packs": [[p.name, p.content_hash] for p in applied],
            }
        )
        engine = PolicyEngine(
            contract=f"{name}@{version}",
            policy_hash=policy_hash,
            rules=rules,
            actions={
                a: ActionTraits(s.effect, s.egress, s.allows_labels, s.normalize)
                for a, s in actions.items()
            },
            default=policy.get("default", "deny"),
            on_error=policy.get("on_error", "deny"),
        )
        return cls(
            name=name,
            version=version,
            domain=domain,
            description=d.get("description", ""),
            input_schema=d["input"],
            input_validator=schema_validator(d["input"]),
            channels={
                c: ChannelSpec(
                    name=c,
                    labels=tuple(spec.get("labels") or ()),
                    max_age=parse_duration(spec["max_age"]) if spec.get("max_age") else None,
                    reader=spec.get("reader"),
                )
                for c, spec in (d.get("channels") or {}).items()
            },
            actions=actions,
            escalation=Escalation.from_data(d.get("escalation")),
            budget=Budget.from_data(d.get("budget")),
            model=ModelSection.from_data(d.get("model")),
            success=tuple(compile_expression(s) for s in d.get("success") or ()),
            value=Value.from_data(d.get("value")),
            autonomy=Autonomy.from_data(d.get("autonomy")),
            privacy=Privacy.from_data(d.get("privacy")),
            data=d,
            content_hash=content_hash,
            path=doc.file,
            packs=applied,
            engine=engine,
        )

    def decide(
        self,
        *,
        action: Mapping[str, Any] | None = None,
        input: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        observations: Sequence[Observation | Mapping[str, Any]] = (),
        proposal: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        outcome: Any = None,
        at: DecisionPoint = "action",
        now: datetime | None = None,
        history: HistoryProvider | None = None,
    ) -> Decision:
        """Decide one request at one decision point.

        ``now`` is the instant the decision is about; it is recorded in the decision so a
        replay evaluates time-dependent rules identically. Omitted, it is the current time.
        """
        obs = [o if isinstance(o, Observation) else Observation.from_dict(o) for o in observations]
        return self.engine.decide(
            at=at,
            action=action,
            input=input,
            context=context,
            observations=obs,
            proposal=proposal,
            run=run,
            outcome=outcome,
            now=now if now is not None else datetime.now(UTC),
            history=history,
        )

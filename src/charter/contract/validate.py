"""Checking contract and pack documents: structure first, then meaning, all errors at once.

Structure is checked against the JSON Schemas shipped in this package (published with
``charter contract schema``); meaning is what a schema cannot say — unique rule ids, CEL
that compiles and calls known functions, ``compensate`` naming a declared action, argument
schemas that are themselves valid JSON Schemas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry, Resource

from charter.caps import CAPS
from charter.contract.formats import KNOWN_FORMATS, unknown_formats
from charter.contract.source import Document, PathPart
from charter.errors import CelCompileError, CelEvalError, Issue
from charter.policy.cel import (
    ASSUMED_SIZE,
    LIST_FUNCTIONS,
    STRING_FUNCTIONS,
    VARIABLES,
    Environment,
    compile_expression,
)
from charter.primitives import DURATION_PATTERN, IMPORT_PATH_PATTERN

#: ``duration("...")`` and ``timestamp("...")`` with a plain string literal.
_TIME_LITERAL = re.compile(r"""\b(duration|timestamp)\(\s*("[^"\\]*"|'[^'\\]*')\s*\)""")

#: Functions CEL itself provides (cel-rust) plus Charter's; a call to anything else is a typo.
KNOWN_FUNCTIONS = frozenset(
    {
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "timestamp",
        "duration",
        "dyn",
        "type",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "count",
        "provenance",
    }
    | set(STRING_FUNCTIONS)
    | set(LIST_FUNCTIONS)
)


@cache
def schema(name: str) -> dict[str, Any]:
    """The published JSON Schema ``contract`` or ``pack``."""
    text = resources.files("charter.contract").joinpath(f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resources(
        (schema(n)["$id"], Resource.from_contents(schema(n))) for n in ("contract", "pack")
    )
    return Draft202012Validator(schema(name), registry=registry)


def _schema_properties(error: ValidationError) -> list[str]:
    sch = error.schema
    props = sch.get("properties") if isinstance(sch, dict) else None
    return list(props) if isinstance(props, dict) else []


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _hint(error: ValidationError) -> str:
    v = error.validator
    if v == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "the key"
        return f"add `{missing}`"
    if v == "additionalProperties":
        allowed = sorted(_schema_properties(error))
        return "remove it or fix its spelling" + (
            f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        )
    if v == "enum":
        return "use one of: " + ", ".join(str(x) for x in _as_list(error.validator_value))
    if v == "type":
        kind = " or ".join(str(t) for t in _as_list(error.validator_value))
        return f"make it {'an' if kind[:1] in ('a', 'e', 'i', 'o', 'u') else 'a'} {kind}"
    if v == "pattern":
        pattern = str(error.validator_value)
        if pattern == DURATION_PATTERN:
            return "write a duration like 30s, 5m, 4h, 1d or 1h30m"
        if pattern == IMPORT_PATH_PATTERN:
            return "write an import path like package.module:function"
        return f"match the pattern {pattern} (lower-case letters, digits, '-' and '_')"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"use a value within the allowed range ({v} {error.validator_value})"
    if v == "minProperties":
        return "declare at least one entry"
    if v == "minItems":
        return f"list at least {error.validator_value} item(s)"
    if v == "uniqueItems":
        return "remove the repeated entries"
    if v == "oneOf":
        return "see the contract format in docs/contracts.md for the accepted forms"
    return "see docs/contracts.md"


def _schema_issues(doc: Document, name: str) -> Iterator[Issue]:
    for error in sorted(
        _validator(name).iter_errors(doc.data), key=lambda e: list(map(str, e.path))
    ):
        parts: list[PathPart] = list(error.path)
        message = error.message
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = set(_schema_properties(error))
            extras = [k for k in error.instance if k not in allowed]
            for extra in extras:
                yield doc.issue([*parts, extra], f"unknown key {extra!r}", _hint(error))
            continue
        if "propertyNames" in error.relative_schema_path:
            # a bad key: jsonschema reports the name as the instance, at the parent's path
            bad = error.instance
            yield doc.issue(
                [*parts, str(bad)],
                f"invalid name {bad!r}",
                "use lower-case letters, digits, '-', '_' (and '.' for channels)",
            )
            continue
        if error.validator == "oneOf" and parts and parts[-1] == "version":
            message = f"{error.instance!r} is not a valid version"
            yield doc.issue(
                parts, message, "use a positive integer (3) or a dotted version ('1.2.0')"
            )
            continue
        if error.validator == "required" and isinstance(error.instance, dict):
            # name the missing field in the path; it is located at its parent, which exists
            missing = [
                k
                for k in _as_list(error.validator_value)
                if k not in error.instance and message.startswith(repr(k))
            ]
            if missing:
                yield doc.issue([*parts, missing[0]], message, _hint(error))
                continue
        yield doc.issue(parts, message, _hint(error))


#: Longer CEL source is refused before compiling: the CEL parser panics on a syntax error
#: past column 65535 and overflows its native stack on expression trees some 20000 levels
#: deep (``a.b.c...``, ``1+1+...``), both outside Python's control. Two characters make
#: a level, so this keeps trees below 5000 levels; real conditions are far shorter. The
#: default of the ``expression_chars`` cap (:mod:`charter.caps`), which is what applies;
#: ``compile_expression`` refuses what is over it, and deep trees, for every caller.
MAX_EXPRESSION_LENGTH = CAPS["expression_chars"].default

_BOUND = re.compile(r"\b(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")


def check_expression(doc: Document, parts: list[PathPart], source: Any) -> Iterator[Issue]:
    """Compile one CEL expression; report syntax errors and unknown functions at its path."""
    if not isinstance(source, str) or not source:
        return  # the schema reports wrong types and empty strings
    if not source.strip():
        yield doc.issue(parts, "CEL expression is blank", "write a condition, e.g. 'true'")
        return
    chars = CAPS["expression_chars"]
    if len(source) > chars.limit:
        yield doc.issue(
            parts,
            f"CEL expression is too long ({len(source)} characters): {chars.exceeded(len(source))}",
            "split the condition over several rules, or move long lists into the task input",
        )
        return
    try:
        expr = compile_expression(source)
    except CelCompileError as exc:
        yield doc.issue(
            parts, f"CEL expression does not compile: {exc}", "fix the expression syntax"
        )
        return
    cost = CAPS["expression_cost"]
    if expr.cost > cost.limit:
        yield doc.issue(
            parts,
            f"CEL expression may be too expensive to evaluate: {cost.exceeded(expr.cost)}",
            "nest fewer comprehensions (each one multiplies the cost of what it contains by "
            "the length of its list; lists read from the request count as "
            f"{ASSUMED_SIZE} elements), or iterate over shorter lists; see 'Limits' in "
            "docs/policy.md",
        )
    unknown = sorted(
        f
        for f in expr.functions
        if not f.startswith(("_", "@", "!", "-")) and f not in KNOWN_FUNCTIONS
    )
    for fn in unknown:
        yield doc.issue(
            parts,
            f"CEL expression calls unknown function {fn!r}",
            "check the spelling; functions available to policies are listed in docs/policy.md",
        )
    # A misspelt variable (`acton.name`) would fail closed on every request. CEL lists the
    # variables that comprehension macros bind (`o` in `items.exists(o, ...)`) as variables
    # too, so those are recognised from the macro calls and not reported.
    bound = set(_BOUND.findall(source))
    for name in sorted(expr.variables - set(VARIABLES) - bound):
        yield doc.issue(
            parts,
            f"CEL expression uses unknown variable {name!r}",
            f"policies can read {', '.join(VARIABLES)}; check the spelling",
        )
    # A literal CEL rejects (duration("1d"): CEL has no day unit) would make the rule fail,
    # and so fail closed, on every request; say so now rather than at every decision.
    for m in _TIME_LITERAL.finditer(source):
        try:
            compile_expression(m.group(0)).evaluate(Environment({}, {}))
        except (CelCompileError, CelEvalError):
            unit = "use h, m, s or ms, e.g. 24h" if m.group(1) == "duration" else ""
            yield doc.issue(
                parts,
                f"CEL cannot evaluate {m.group(0)}",
                unit or "write an RFC 3339 timestamp, e.g. 2026-01-31T12:00:00Z",
            )


def check_rules(doc: Document, prefix: list[PathPart], rules: Any) -> Iterator[Issue]:
    """Unique ids and compiling conditions for a list of rules (contract or pack)."""
    if not isinstance(rules, list):
        return
    cap = CAPS["rules"]
    if len(rules) > cap.limit:
        yield doc.issue(
            prefix,
            cap.exceeded(len(rules)),
            "split the policy over several contracts, or share rules in a policy pack",
        )
        return  # compiling them all is the cost the cap exists to avoid
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        rid = rule.get("id")
        if isinstance(rid, str):
            if rid.startswith("flow:"):
                yield doc.issue(
                    [*prefix, i, "id"],
                    f"rule id {rid!r} is reserved for built-in flow rules",
                    "choose another id",
                )
            if rid in seen:
                yield doc.issue(
                    [*prefix, i, "id"],
                    f"duplicate rule id {rid!r} (first used by rules[{seen[rid]}])",
                    "give every rule a unique id",
                )
            else:
                seen[rid] = i
        yield from check_expression(doc, [*prefix, i, "when"], rule.get("when"))


def _check_json_schema(doc: Document, parts: list[PathPart], value: Any) -> Iterator[Issue]:
    if not isinstance(value, dict):
        return
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = [*parts, *exc.path]
        yield doc.issue(
            where,
            f"not a valid JSON Schema (2020-12): {exc.message}",
            "fix the schema keyword at this path",
        )
    except RecursionError:
        # the document's own nesting is limited (source.MAX_DEPTH); what is left is a
        # `pattern` regex with hundreds of nested groups, which `re` compiles recursively
        yield doc.issue(
            parts,
            "not a valid JSON Schema (2020-12): nested too deeply to check "
            "(a `pattern` with too many nested groups?)",
            "simplify the schema's regular expressions and nesting",
        )


def _check_formats(doc: Document, parts: list[PathPart], value: Any) -> Iterator[Issue]:
    """A ``format`` no checker enforces would silently accept anything: say so at load."""
    for where, fmt in unknown_formats(value):
        yield doc.issue(
            [*parts, *where],
            f"format {fmt!r} is not checked by Charter",
            f"use one of {', '.join(sorted(KNOWN_FORMATS))}, or a `pattern`",
        )


def _check_normalize(doc: Document, name: str, spec: dict[str, Any]) -> Iterator[Issue]:
    """``normalize`` names arguments the action's schema declares."""
    declared = spec.get("normalize")
    args = spec.get("args")
    props = args.get("properties") if isinstance(args, dict) else None
    if not isinstance(declared, dict) or not isinstance(props, dict):
        return
    for arg in declared:
        if arg not in props:
            yield doc.issue(
                ["actions", name, "normalize", arg],
                f"normalize names argument {arg!r}, which args.properties does not declare",
                f"use one of: {', '.join(sorted(props)) or 'none'}",
            )


def _check_subject(doc: Document, data: dict[str, Any]) -> Iterator[Issue]:
    """``privacy.subject`` names a field the input schema declares (a typo would make every
    run its own subject, and erasing the intended subject would erase nothing)."""
    subject = _mapping(data.get("privacy")).get("subject")
    if not isinstance(subject, str):
        return
    schema_at: Any = data.get("input")
    for depth, part in enumerate(subject.split(".")):
        properties = _mapping(_mapping(schema_at).get("properties"))
        if part not in properties:
            known = ", ".join(sorted(properties)) or "none"
            where = ".".join(subject.split(".")[:depth]) or "the input"
            yield doc.issue(
                ["privacy", "subject"],
                f"privacy.subject names {subject!r}, but {where} has no property {part!r}",
                f"name a field of the input schema (properties: {known})",
            )
            return
        schema_at = properties[part]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def contract_issues(doc: Document) -> list[Issue]:
    """Every structural and semantic problem of a contract document, in file order."""
    data = doc.data
    if not isinstance(data, dict):
        return [
            doc.issue(
                [], "a contract must be a YAML mapping", "start the file with `contract: NAME`"
            )
        ]
    issues = list(_schema_issues(doc, "contract"))
    issues.extend(_check_json_schema(doc, ["input"], data.get("input")))
    issues.extend(_check_formats(doc, ["input"], data.get("input")))
    actions = _mapping(data.get("actions"))
    channels = _mapping(data.get("channels"))
    for name, spec in actions.items():
        if not isinstance(spec, dict):
            continue
        issues.extend(_check_json_schema(doc, ["actions", name, "args"], spec.get("args")))
        issues.extend(_check_formats(doc, ["actions", name, "args"], spec.get("args")))
        issues.extend(_check_normalize(doc, name, spec))
        comp = spec.get("compensate")
        if isinstance(comp, str):
            if comp not in actions:
                issues.append(
                    doc.issue(
                        ["actions", name, "compensate"],
                        f"compensate names undeclared action {comp!r}",
                        f"declare `{comp}` under actions or use one of: {', '.join(sorted(actions))}",
                    )
                )
            elif comp == name:
                issues.append(
                    doc.issue(
                        ["actions", name, "compensate"],
                        "an action cannot compensate itself",
                        "name the action that undoes this one",
                    )
                )
        for j, ch in enumerate(spec.get("reads") or []):
            if isinstance(ch, str) and ch not in channels:
                issues.append(
                    doc.issue(
                        ["actions", name, "reads", j],
                        f"reads undeclared channel {ch!r}",
                        "declare it under channels",
                    )
                )
        if spec.get("allows_labels") and spec.get("egress", "internal") != "external":
            issues.append(
                doc.issue(
                    ["actions", name, "allows_labels"],
                    "allows_labels only applies to actions with `egress: external`",
                    "add `egress: external` or remove allows_labels",
                )
            )
    issues.extend(_check_subject(doc, data))
    policy = _mapping(data.get("policy"))
    issues.extend(check_rules(doc, ["policy", "rules"], policy.get("rules")))
    for i, expr in enumerate(
        data.get("success") or [] if isinstance(data.get("success"), list) else []
    ):
        issues.extend(check_expression(doc, ["success", i], expr))
    value = data.get("value")
    if isinstance(value, dict):
        issues.extend(check_expression(doc, ["value", "expr"], value.get("expr")))
    return sorted(issues, key=lambda i: (i.line, i.column, i.path, i.message))


def pack_issues(doc: Document) -> list[Issue]:
    """Every problem of a policy pack document."""
    data = doc.data
    if not isinstance(data, dict):
        return [
            doc.issue(
                [], "a policy pack must be a YAML mapping", "start the file with `pack: NAME`"
            )
        ]
    issues = list(_schema_issues(doc, "pack"))
    issues.extend(check_rules(doc, ["rules"], data.get("rules")))
    return sorted(issues, key=lambda i: (i.line, i.column, i.path, i.message))

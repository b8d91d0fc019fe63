"""Turning a model's raw output into a validated proposal, or into reasons it is not one.

Nothing a model says reaches policy unvalidated: the output must be a JSON object naming
only declared actions with arguments that satisfy their schemas. The reasons are written
for the model, which gets them back for a corrected retry.

A model's output is hostile input like any other (it may repeat text it read): output over
the ``model_output_bytes`` cap, arguments over ``argument_bytes`` and nesting over
``json_depth`` (:mod:`charter.caps`) are reasons too, and :func:`parse_proposal` never
raises whatever the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from charter import jsontext
from charter.caps import CAPS
from charter.contract.model import Contract


def _shortened(message: str, limit: int = 500) -> str:
    """A schema error message cut to ``limit`` characters: it quotes the value it rejects."""
    return message if len(message) <= limit else message[: limit - 20] + " ... (shortened)"


@dataclass(frozen=True)
class Proposal:
    actions: list[dict[str, Any]]
    confidence: float
    rationale: str
    final: dict[str, Any] | None


def parse_proposal(contract: Contract, raw: str) -> tuple[Proposal | None, list[str]]:
    """Return ``(proposal, [])`` for valid output, else ``(None, reasons)``; never raises."""
    cap = CAPS["model_output_bytes"]
    if len(raw) > cap.limit // 4 and (size := jsontext.utf8_size(raw)) > cap.limit:
        return None, [
            f"output is {size:,} bytes, over the limit of {cap.limit:,} ({cap.name}); "
            "reply with one shorter JSON object"
        ]
    try:
        data = jsontext.loads(raw)
    except RecursionError:  # nested deeper than the interpreter's stack: over json_depth
        return None, [jsontext.too_deep(raw, "output") + "; reply with a flatter JSON object"]
    except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError; so is NaN
        return None, [f"output is not valid JSON ({exc}); reply with one JSON object"]
    if not isinstance(data, dict):
        return None, ["output must be a JSON object with `actions` or `final`"]
    # values an executor could act on but the ledger could not record (see jsontext)
    unrecordable = jsontext.problems(data, "output")
    if unrecordable:
        return None, unrecordable
    reasons: list[str] = []
    unknown = sorted(set(data) - {"actions", "final", "confidence", "rationale"})
    if unknown:
        reasons.append(f"unexpected keys {unknown}; allowed: actions, final, confidence, rationale")
    confidence = data.get("confidence", 1.0)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 <= confidence <= 1
    ):
        reasons.append("`confidence` must be a number between 0 and 1")
        confidence = 0.0
    rationale = data.get("rationale", "")
    if not isinstance(rationale, str):
        reasons.append("`rationale` must be a string")
        rationale = ""
    final = data.get("final")
    if final is not None and not isinstance(final, dict):
        reasons.append("`final` must be an object")
        final = None
    actions_raw = data.get("actions", [])
    actions: list[dict[str, Any]] = []
    if not isinstance(actions_raw, list):
        reasons.append("`actions` must be a list of {name, args}")
        actions_raw = []
    if final is None and not actions_raw:
        reasons.append("propose at least one action or give a `final` answer")
    if final is not None and actions_raw:
        reasons.append("give either `actions` or `final`, not both")
    for i, item in enumerate(actions_raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            reasons.append(
                f"actions[{i}] must be an object with a string `name` and an `args` object"
            )
            continue
        name = item["name"]
        spec = contract.actions.get(name)
        if spec is None:
            reasons.append(
                f"actions[{i}]: unknown action {name!r}; available: {', '.join(sorted(contract.actions))}"
            )
            continue
        args = item.get("args", {})
        if not isinstance(args, dict):
            reasons.append(f"actions[{i}] ({name}): `args` must be an object")
            continue
        limit = CAPS["argument_bytes"].limit
        size = jsontext.json_size(args)
        if size > limit:  # before the schema: its checks may be slow on large values
            reasons.append(
                f"actions[{i}] ({name}): args is {size:,} bytes, over the limit of {limit:,} "
                "(argument_bytes); propose smaller arguments (refer to data, do not copy it)"
            )
            continue
        for err in sorted(spec.validator.iter_errors(args), key=lambda e: list(map(str, e.path))):
            where = "args" + "".join(f".{p}" if isinstance(p, str) else f"[{p}]" for p in err.path)
            reasons.append(f"actions[{i}] ({name}): {where}: {_shortened(err.message)}")
        actions.append({"name": name, "args": args})
    if reasons:
        return None, reasons
    return Proposal(actions, float(confidence), rationale, final), []

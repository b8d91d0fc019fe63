"""The JSON Schema of a proposal, generated from the contract's actions.

Providers send it as a structured-output schema (OpenAI ``json_schema``) or as the input
schema of a single ``propose`` tool (OpenAI tools, Anthropic tool use), so the model is
steered to exactly the shape :func:`charter.models.proposal.parse_proposal` accepts. It
steers; it does not replace validation: endpoints differ in how strictly they follow a
schema, so every output is still parsed and validated by Charter itself.

The schema is not sent in OpenAI's ``strict`` mode: strict mode requires every property
of every object to be required and forbids open objects, which the ``final`` answer and
most argument schemas (optional fields) are not.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

TOOL_NAME = "propose"
TOOL_DESCRIPTION = (
    "Propose the next actions under the contract, or give the final answer. Call this exactly once."
)


def proposal_schema(
    actions: Mapping[str, Mapping[str, Any]], descriptions: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``{"actions": [{"name", "args"}], "final", "confidence", "rationale"}`` for these actions."""
    descriptions = descriptions or {}
    variants: list[dict[str, Any]] = []
    for name in sorted(actions):
        variant: dict[str, Any] = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "const": name},
                "args": copy.deepcopy(dict(actions[name])),
            },
            "required": ["name", "args"],
            "additionalProperties": False,
        }
        if descriptions.get(name):
            variant["description"] = descriptions[name]
        variants.append(variant)
    item: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {
        "type": "object",
        "properties": {
            "actions": {
                "type": "array",
                "description": "Actions to take now, in order; empty when giving a final answer.",
                "items": item,
            },
            "final": {
                "type": ["object", "null"],
                "description": "The final answer when no further action is needed, else null.",
            },
            "confidence": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "How sure you are that this is right, from 0 to 1.",
            },
            "rationale": {"type": "string", "description": "Why, in one or two sentences."},
        },
        "required": ["actions", "confidence", "rationale"],
        "additionalProperties": False,
    }

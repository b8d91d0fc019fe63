"""Caps on every dimension of input, in one place: what hostile input may not exceed.

Much of what Charter reads is written by people it does not trust — ticket text, documents
a model reads, tool results, a model's own output — and even contracts are files that may
come from anywhere. Without a bound, one input can hang a command (a YAML "billion laughs"),
end it in a traceback (nesting deeper than the interpreter's stack), or stall every run of a
contract (a policy rule that takes forever). Each dimension has a cap here; an input over
its cap is refused with a message naming the cap, the value, the limit and how to raise it
(``CHARTER_CAP_<NAME>=N`` in the environment of every process that reads the input).

The defaults are far above what a legitimate contract, task or proposal needs, and low
enough that the cost of hitting them is bounded (milliseconds, megabytes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Cap:
    name: str
    default: int
    what: str

    @property
    def env(self) -> str:
        return f"CHARTER_CAP_{self.name.upper()}"

    @property
    def limit(self) -> int:
        """The cap in force: the environment's override if it is a positive integer."""
        raw = os.environ.get(self.env)
        if raw is not None:
            try:
                value = int(raw)
            except ValueError:
                return self.default
            if value > 0:
                return value
        return self.default

    def exceeded(self, value: int, where: str = "") -> str:
        """The message for ``value`` over this cap at ``where``."""
        place = f"{where}: " if where else ""
        return (
            f"{place}{self.what} is {value:,}, over the limit of {self.limit:,} "
            f"({self.name}); raise it with {self.env}=N if this input is expected"
        )


#: every cap, by name; docs/security.md lists them
CAPS: dict[str, Cap] = {
    c.name: c
    for c in (
        Cap("document_bytes", 2_000_000, "the size of the file in bytes"),
        Cap("yaml_depth", 64, "the nesting depth"),
        Cap("yaml_nodes", 100_000, "the number of YAML nodes, aliases expanded"),
        Cap("rules", 2_000, "the number of policy rules"),
        Cap("expression_chars", 10_000, "the length of the CEL expression"),
        Cap("expression_cost", 1_000_000, "the estimated worst-case cost of the CEL expression"),
        Cap("decision_ms", 250, "the time one policy decision took in milliseconds"),
        Cap("json_depth", 64, "the nesting depth"),
        Cap("input_bytes", 1_000_000, "the size of the task input in bytes (JSON)"),
        Cap("argument_bytes", 256_000, "the size of the arguments in bytes (JSON)"),
        Cap("observation_bytes", 2_000_000, "the size of the data in bytes (JSON)"),
        Cap("model_output_bytes", 1_000_000, "the size of the model's output in bytes"),
    )
}


def limit(name: str) -> int:
    """The cap in force for ``name`` (see :data:`CAPS`)."""
    return CAPS[name].limit

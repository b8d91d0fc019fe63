"""Charter: a runtime for value-based delegation to language models.

A model *proposes* actions; a versioned :class:`Contract` bounds what it may see and do;
its policy returns a :class:`Decision` for every proposal. Everything not listed in
``__all__`` is private and may change without notice.
"""

from charter.contract.model import Contract, PolicyPack
from charter.contract.registry import Registry
from charter.errors import (
    CharterError,
    ContractError,
    Issue,
    ModelError,
    NotFoundError,
    PolicyError,
    StoreError,
    UsageError,
)
from charter.policy.decision import Decision, RuleError
from charter.policy.history import HistoryProvider, InMemoryHistory
from charter.policy.provenance import Observation
from charter.runs.runtime import Runtime

__version__ = "0.1.0"

__all__ = [
    "CharterError",
    "Contract",
    "ContractError",
    "Decision",
    "HistoryProvider",
    "InMemoryHistory",
    "Issue",
    "ModelError",
    "NotFoundError",
    "Observation",
    "PolicyError",
    "PolicyPack",
    "Registry",
    "RuleError",
    "Runtime",
    "StoreError",
    "UsageError",
    "__version__",
]

"""Charter: a runtime for value-based delegation to language models.

A model *proposes* actions; a versioned :class:`Contract` bounds what it may see and do;
its policy returns a :class:`Decision` for every proposal; a :class:`Runtime` runs the work
durably, with reviews, budgets and a hash-chained ledger.

What applications touch is exported here: contracts and decisions; the runtime, its run
state and the ledger's events; the shapes of the code a contract names (executors get an
:class:`ExecutionContext`, model providers implement :class:`ModelProvider`, readers are
plain functions of the task input); the :class:`Proposer` seam; and the exception tree.
Everything not listed in ``__all__`` is private and may change without notice.
"""

from charter.contract.model import Contract, PolicyPack
from charter.contract.registry import Registry
from charter.errors import (
    CharterError,
    ConfigurationError,
    ConflictError,
    ContractError,
    ExecutorError,
    IdempotencyConflictError,
    Issue,
    ModelError,
    NotFoundError,
    PolicyError,
    RunStateError,
    StoreError,
    UsageError,
)
from charter.execution.base import ExecutionContext
from charter.ledger.events import (
    ActionCompleted,
    ActionDecided,
    ActionFailed,
    ActionShadowed,
    ActionStarted,
    ActionTimedOut,
    BudgetExceeded,
    ChannelRead,
    CompensationStarted,
    Event,
    ModelCalled,
    ProposalAccepted,
    ProposalRejected,
    ReviewDecided,
    ReviewRequested,
    RunAdmitted,
    RunCancelled,
    RunCompleted,
    RunEscalated,
    RunFailed,
    RunRefused,
    RunSubmitted,
    StoredEvent,
)
from charter.ledger.store import Store, open_store
from charter.models.base import ModelProvider, ModelRequest, ModelResponse, Usage
from charter.models.registry import ProviderContext, register_provider
from charter.policy.decision import Decision, RuleError
from charter.policy.history import HistoryProvider, InMemoryHistory
from charter.policy.provenance import Observation
from charter.runs.limits import Limits
from charter.runs.proposer import Proposed, Proposer, Refused
from charter.runs.runtime import Runtime
from charter.runs.state import RunState, Slot

__version__ = "0.1.0"

__all__ = [  # noqa: RUF022 - the version last, as tests/test_public_api.py keeps it
    "ActionCompleted",
    "ActionDecided",
    "ActionFailed",
    "ActionShadowed",
    "ActionStarted",
    "ActionTimedOut",
    "BudgetExceeded",
    "ChannelRead",
    "CharterError",
    "CompensationStarted",
    "ConfigurationError",
    "ConflictError",
    "Contract",
    "ContractError",
    "Decision",
    "Event",
    "ExecutionContext",
    "ExecutorError",
    "HistoryProvider",
    "IdempotencyConflictError",
    "InMemoryHistory",
    "Issue",
    "Limits",
    "ModelCalled",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "NotFoundError",
    "Observation",
    "PolicyError",
    "PolicyPack",
    "ProposalAccepted",
    "ProposalRejected",
    "Proposed",
    "Proposer",
    "ProviderContext",
    "Refused",
    "Registry",
    "ReviewDecided",
    "ReviewRequested",
    "RuleError",
    "RunAdmitted",
    "RunCancelled",
    "RunCompleted",
    "RunEscalated",
    "RunFailed",
    "RunRefused",
    "RunState",
    "RunStateError",
    "RunSubmitted",
    "Runtime",
    "Slot",
    "Store",
    "StoreError",
    "StoredEvent",
    "Usage",
    "UsageError",
    "open_store",
    "register_provider",
    "__version__",
]

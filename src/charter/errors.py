"""Charter's exception tree.

Every error Charter raises on purpose is a :class:`CharterError` with a stable ``code``
(used in JSON error envelopes) and an ``exit_code`` (used by the CLI), so callers can
tell a user's mistake from a run that failed without parsing messages::

    CharterError
    ├── UsageError            bad input from the caller (malformed JSON, unknown option value)
    │   └── IdempotencyConflictError  a known idempotency key sent with a different task
    ├── ConfigurationError    this process cannot run what a contract names (missing module)
    ├── WorkerCrashedError    a worker thread died of something unexpected
    ├── ContractError         a contract, pack or policy test file failed to load (all issues)
    ├── NotFoundError         a contract, run or review that does not exist
    ├── PolicyError           the policy engine was asked something it cannot answer
    ├── ModelError            a model provider failed or was refused (guard, SDK missing, API error)
    └── StoreError            the ledger store is missing, corrupt or unreachable

User mistakes exit with 2 (like click), failures of the ledger with 3, a contract that does
not load with 4, something missing with 5, a process misconfigured for its work with 6.
"""

from __future__ import annotations

from dataclasses import dataclass


class CharterError(Exception):
    """Base of every error Charter raises deliberately."""

    code = "charter_error"
    exit_code = 1


class UsageError(CharterError):
    """The caller passed something malformed (JSON, option values, paths)."""

    code = "usage_error"
    exit_code = 2


class IdempotencyConflictError(UsageError):
    """An idempotency key already names a run submitted with a different input or contract.

    A retry of the same submission is answered with its run; a different task under the
    same key would silently collapse into the first, so it is refused (HTTP would say 409).
    """

    code = "idempotency_conflict"


class ConfigurationError(CharterError):
    """This process cannot do what a contract asks: an executor, reader or model script it
    names cannot be imported here.

    A worker problem, not a run problem: a worker that meets it releases the run untouched
    (another, correctly installed worker can take it) and stops with this error.
    """

    code = "configuration_error"
    exit_code = 6


class WorkerCrashedError(CharterError):
    """A worker thread died of an unexpected exception; the worker stops and says so.

    Runs it held are picked up again when their leases expire; the exit status is non-zero
    so a supervisor notices.
    """

    code = "worker_crashed"


class NotFoundError(CharterError):
    """A named contract, run or review does not exist."""

    code = "not_found"
    exit_code = 5


class PolicyError(CharterError):
    """The policy engine cannot answer a request (e.g. unknown decision point)."""

    code = "policy_error"
    exit_code = 2


class ModelError(CharterError):
    """A model provider could not answer: SDK missing, request blocked, or the API failed.

    Raised inside a run it fails that run with the reason recorded; raised at submission
    (an unknown ``--model``) it is the caller's mistake and exits like a usage error.
    """

    code = "model_error"
    exit_code = 2


class StoreError(CharterError):
    """The ledger store cannot be opened, is corrupt or refused an operation."""

    code = "store_error"
    exit_code = 3


@dataclass(frozen=True)
class Issue:
    """One problem found in a document, located precisely enough to fix without searching.

    ``path`` is the field path as written in docs and errors (``policy.rules[3].when``);
    ``line`` and ``column`` are 1-based; ``hint`` says what would fix it.
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        field = f" {self.path}:" if self.path else ""
        fix = f" (fix: {self.hint})" if self.hint else ""
        return f"{where}:{field} {self.message}{fix}"

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class ContractError(CharterError):
    """A contract, policy pack or policy test file is invalid; ``issues`` lists every problem.

    Loading collects all problems before raising, so one edit-and-retry cycle fixes them all.
    """

    code = "invalid_contract"
    exit_code = 4

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} problem{'s' if count != 1 else ''} found"
        super().__init__(head + ":\n" + "\n".join(f"  {i}" for i in self.issues))

"""Charter's exception tree: every error Charter raises on purpose, in this one module.

Each is a :class:`CharterError` with a stable ``code`` (used in JSON error envelopes) and
an ``exit_code`` (used by the CLI), so callers can tell a user's mistake from a run that
failed without parsing messages::

    CharterError                    charter_error         1
    ├── UsageError                  usage_error           2  bad input from the caller
    │   └── IdempotencyConflictError idempotency_conflict 2  a known key with another task
    ├── ConfigurationError          configuration_error   6  code a contract names is missing here
    ├── ContractError               invalid_contract      4  a contract, pack or test file (all issues)
    ├── NotFoundError               not_found             5  a contract, run or review
    ├── PolicyError                 policy_error          2  a question policy cannot answer
    │   ├── CelCompileError         cel_compile_error     2  an expression that does not parse
    │   └── CelEvalError            cel_eval_error        2  an expression that failed evaluating
    ├── ModelError                  model_error           2  a provider failed or was refused
    │   └── ModelRequestBlockedError model_requests_blocked 2 a request the guard stopped
    ├── ExecutorError               executor_error        1  an executor's call failed
    ├── RunStateError               run_state_error       1  a run's events contradict each other
    ├── RunBusyError                run_busy              1  another worker holds the run
    ├── WorkerCrashedError          worker_crashed        1  a worker thread died unexpectedly
    └── StoreError                  store_error           3  the ledger is missing, corrupt, unreachable
        ├── ConflictError           conflict              3  someone else appended first
        ├── StoreUnavailableError   store_unavailable     3  the database is unreachable (retry)
        └── StoreLockedError        store_locked          3  another process holds a lock

User mistakes exit with 2 (like click), failures of the ledger with 3, a contract that does
not load with 4, something missing with 5, a process misconfigured for its work with 6.
``tests/test_errors.py`` keeps this drawing equal to the classes below.
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


class CelCompileError(PolicyError, ValueError):
    """An expression that does not parse; the message keeps CEL's own caret diagram."""

    code = "cel_compile_error"


class CelEvalError(PolicyError, RuntimeError):
    """An expression that failed while evaluating (missing field, wrong types, ...)."""

    code = "cel_eval_error"


class ModelError(CharterError):
    """A model provider could not answer: SDK missing, request blocked, or the API failed.

    Raised inside a run it fails that run with the reason recorded; raised at submission
    (an unknown ``--model``) it is the caller's mistake and exits like a usage error.
    """

    code = "model_error"
    exit_code = 2


class ModelRequestBlockedError(ModelError):
    """A request to a real model was refused because model requests are switched off
    (``CHARTER_ALLOW_MODEL_REQUESTS=false``: only loopback hosts are allowed)."""

    code = "model_requests_blocked"


class ExecutorError(CharterError):
    """An executor's call failed in a way it reports (an HTTP executor's refusal or outage)."""

    code = "executor_error"


class RunStateError(CharterError):
    """A run's recorded events contradict what the runtime must rely on: an approval that
    does not match the action about to run, an action in a state no event leads to. The run
    fails with the reason rather than act on a ledger it cannot trust."""

    code = "run_state_error"


class RunBusyError(CharterError):
    """Another worker holds the run's lease; try again when it lets go."""

    code = "run_busy"


class StoreError(CharterError):
    """The ledger store cannot be opened, is corrupt or refused an operation."""

    code = "store_error"
    exit_code = 3


class ConflictError(StoreError):
    """Someone else appended to the run first, or this worker's lease was taken over."""

    code = "conflict"


class StoreUnavailableError(StoreError):
    """The database could not be reached or dropped the connection (retry later).

    Workers back off and carry on: nothing was half-written (a transaction either committed
    or did not), and the next worker to claim a run re-reads its ledger.
    """

    code = "store_unavailable"


class StoreLockedError(StoreError):
    """Another process holds a lock on the ledger longer than this one would wait."""

    code = "store_locked"


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

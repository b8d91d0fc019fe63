"""``charter.__all__`` is the curated public surface, and all of it is importable."""

from __future__ import annotations

import importlib

import charter

PUBLIC = {
    # contracts, policy and decisions
    "Contract", "PolicyPack", "Registry", "Decision", "RuleError", "Observation",
    "HistoryProvider", "InMemoryHistory",
    # the runtime, its run state, the ledger and its events
    "Runtime", "RunState", "Slot", "Limits", "Store", "open_store", "StoredEvent", "Event",
    "RunSubmitted", "ChannelRead", "RunAdmitted", "RunRefused", "ModelCalled",
    "ProposalAccepted", "ProposalRejected", "ActionDecided", "ReviewRequested",
    "ReviewDecided", "ActionStarted", "ActionCompleted", "ActionFailed", "ActionTimedOut",
    "ActionShadowed", "CompensationStarted", "BudgetExceeded", "RunCompleted", "RunFailed",
    "RunEscalated", "RunCancelled",
    # what a contract's code implements: executors, model providers, proposers
    "ExecutionContext", "ModelProvider", "ModelRequest", "ModelResponse", "Usage",
    "ProviderContext", "register_provider", "Proposer", "Proposed", "Refused",
    # errors
    "CharterError", "UsageError", "IdempotencyConflictError", "ConfigurationError",
    "ContractError", "Issue", "NotFoundError", "PolicyError", "ModelError", "ExecutorError",
    "RunStateError", "StoreError", "ConflictError",
    "__version__",
}  # fmt: skip


def test_all_is_exactly_the_public_names() -> None:
    assert set(charter.__all__) == PUBLIC
    assert len(charter.__all__) == len(set(charter.__all__))
    assert charter.__all__ == sorted(charter.__all__, key=lambda n: (n.startswith("_"), n))


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("charter")
    for name in charter.__all__:
        assert hasattr(module, name), name
        exec(f"from charter import {name}", {})


def test_public_names_are_documented_classes_functions_or_the_version() -> None:
    import inspect

    for name in charter.__all__:
        value = getattr(charter, name)
        if name == "__version__":
            assert isinstance(value, str) and value.count(".") == 2
            continue
        assert isinstance(value, type) or inspect.isfunction(value), name
        assert value.__doc__, name
        assert not name.startswith("_")


def test_no_other_public_name_is_exported() -> None:
    """Anything public-looking at top level that is not in ``__all__`` is a submodule."""
    import types

    extra = {
        n
        for n, v in vars(charter).items()
        if not n.startswith("_")
        and n not in charter.__all__
        and not isinstance(v, types.ModuleType)
    }
    assert extra == set()


def test_exception_tree() -> None:
    for name in ("UsageError", "ContractError", "NotFoundError", "PolicyError", "StoreError"):
        exc = getattr(charter, name)
        assert issubclass(exc, charter.CharterError)
    codes = {
        charter.UsageError: (2, "usage_error"),
        charter.ContractError: (4, "invalid_contract"),
        charter.NotFoundError: (5, "not_found"),
        charter.StoreError: (3, "store_error"),
        charter.PolicyError: (2, "policy_error"),
    }
    for exc, (exit_code, code) in codes.items():
        assert (exc.exit_code, exc.code) == (exit_code, code)
    assert charter.__version__ == importlib.metadata.version("charter")


def _python_blocks(text: str) -> list[str]:
    import re

    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_examples_and_documented_code_use_only_public_names() -> None:
    """What users copy (examples/, Python in README and docs) imports only ``charter``'s
    public names: an internal path there would make the internal path a promise."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [
        (str(p.relative_to(root)), p.read_text("utf-8")) for p in root.glob("examples/**/*.py")
    ]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for i, block in enumerate(_python_blocks(doc.read_text("utf-8"))):
            sources.append((f"{doc.relative_to(root)} (python block {i + 1})", block))
    assert len(sources) > 10
    wrong: list[str] = []
    for where, text in sources:
        for node in ast.walk(ast.parse(text)):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("charter")
            ):
                if node.module != "charter":
                    wrong.append(f"{where}:{node.lineno}: from {node.module} import ...")
                else:
                    wrong.extend(
                        f"{where}:{node.lineno}: charter.{a.name} is not public"
                        for a in node.names
                        if a.name not in charter.__all__
                    )
            elif isinstance(node, ast.Import):
                wrong.extend(
                    f"{where}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("charter.")
                )
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "charter"
                and node.attr not in charter.__all__
            ):
                wrong.append(f"{where}:{node.lineno}: charter.{node.attr} is not public")
    assert wrong == []

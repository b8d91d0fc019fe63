"""``charter.__all__`` is the curated public surface, and all of it is importable."""

from __future__ import annotations

import importlib

import charter

PUBLIC = {
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
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(charter.__all__) == PUBLIC
    assert len(charter.__all__) == len(set(charter.__all__))
    assert charter.__all__ == sorted(charter.__all__, key=lambda n: (n.startswith("_"), n))


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("charter")
    for name in charter.__all__:
        assert hasattr(module, name), name
        exec(f"from charter import {name}", {})


def test_public_names_are_documented_classes_or_the_version() -> None:
    for name in charter.__all__:
        value = getattr(charter, name)
        if name == "__version__":
            assert isinstance(value, str) and value.count(".") == 2
            continue
        assert isinstance(value, type), name
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

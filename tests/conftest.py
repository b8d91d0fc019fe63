"""Suite-wide guards.

Real model calls are impossible from the test suite (like pydantic-ai's
``ALLOW_MODEL_REQUESTS = False``): every test runs with ``CHARTER_ALLOW_MODEL_REQUESTS=false``,
which lets providers reach only the loopback interface, where the fake servers of
``tests/models`` listen. The SDKs' own environment variables are cleared so that a
developer's key or ``OPENAI_BASE_URL`` (a local Ollama, say) never leaks into a test.

Secrets never reach a ledger: :mod:`tests.secret_canary` looks for every secret a test used
in every file the session left behind.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.secret_canary"]

_MODEL_ENV = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "OPENAI_CUSTOM_HEADERS",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_PROFILE",
    "ANTHROPIC_CUSTOM_HEADERS",
    "CHARTER_PRICES",
    # a developer's deployment settings must not change what the suite tests
    "CHARTER_KEK",
    "CHARTER_KEK_FILE",
    "CHARTER_EXECUTOR_PREFIXES",
    "CHARTER_IMPORT_PATH",
)


@pytest.fixture(autouse=True)
def _no_real_model_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_ALLOW_MODEL_REQUESTS", "false")
    for name in _MODEL_ENV:
        monkeypatch.delenv(name, raising=False)

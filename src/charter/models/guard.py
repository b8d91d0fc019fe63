"""The switch that keeps real model calls out of test suites (like pydantic-ai's
``ALLOW_MODEL_REQUESTS``).

``CHARTER_ALLOW_MODEL_REQUESTS=false`` (also ``0``, ``no``, ``off``) makes every provider
refuse a request to any host but the loopback interface (``localhost``, ``127.0.0.0/8``,
``::1``), *before* the request is built. Local fake servers and a local Ollama keep
working; a test that forgot to point a provider at one fails loudly instead of spending
money. Charter's own test suite sets it in an autouse fixture. Unset, requests are allowed.

The check runs twice: once on the endpoint before calling the SDK, and again on every
request the SDK's HTTP client sends (so a redirect cannot leave the machine either).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

from charter.errors import ModelRequestBlockedError

ALLOW_ENV = "CHARTER_ALLOW_MODEL_REQUESTS"
_OFF = frozenset({"0", "false", "no", "off"})


def requests_allowed() -> bool:
    """Whether requests to non-local model endpoints are allowed in this process now."""
    return os.environ.get(ALLOW_ENV, "true").strip().lower() not in _OFF


def is_local(host: str) -> bool:
    """``localhost`` or a loopback address: traffic that never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> None:
    """Raise :class:`ModelRequestBlockedError` if a request to ``url`` is not allowed now."""
    if requests_allowed():
        return
    host = urlsplit(url).hostname or ""
    if not is_local(host):
        raise ModelRequestBlockedError(
            f"model request to {host or url!r} blocked: {ALLOW_ENV} is false (as in Charter's "
            "test suite); point the provider at a local server (base_url http://127.0.0.1:...) "
            f"or set {ALLOW_ENV}=true to allow real model calls"
        )


def request_hook(request: Any) -> None:
    """HTTP client event hook: the same check on every request actually sent."""
    check_url(str(request.url))

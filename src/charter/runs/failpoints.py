"""Crash-testing hooks: SIGKILL this worker at a named point of the loop.

The recovery guarantees are only worth what their tests prove; ``CHARTER_FAILPOINT=name``
makes a real worker kill itself at that point (``after_model_call``, ``after_decision``,
``after_executor``) so the test suite can show the next worker finishes the run with every
effect applied once. Never set it in production.
"""

from __future__ import annotations

import os
import signal

_FAILPOINT = os.environ.get("CHARTER_FAILPOINT", "")


def failpoint(name: str) -> None:
    """Crash the process here when ``CHARTER_FAILPOINT`` names this point."""
    if name == _FAILPOINT:
        os.kill(os.getpid(), signal.SIGKILL)

"""Secrets never reach a ledger: every secret a test sets is looked for in every file it left.

A pytest plugin, loaded by ``tests/conftest.py``. Each value a test puts in an environment
variable whose name says it is a secret (``..._KEY``, ``..._TOKEN``, ``..._SECRET``,
``..._PASSWORD``, ``CHARTER_KEK``) through ``monkeypatch.setenv`` — the fake API keys of the
provider tests, the key-encryption keys of the sealing tests — is remembered, as is any value
passed to :func:`remember`. When the session ends, every file under pytest's temporary
directory (each test's ledgers, SQLite write-ahead logs, exports, CLI output files) is read
and any file holding one of those values fails the session, naming the file and the
variable. Values shorter than 8 characters are not secrets worth the name and are skipped,
as are key files a test writes on purpose (``.kek``, ``.key``, ``.pem``, ``.b64``).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

_SECRET_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|_PASSWORD|^CHARTER_KEK)$")
_MIN_LENGTH = 8
#: where a test keeps a key on purpose (a KEK file, a PEM key): not a leak
KEY_FILES = frozenset({".kek", ".key", ".pem", ".b64"})
_seen: dict[str, str] = {}  # secret value -> where it came from


def remember(value: str, where: str) -> None:
    """Look for ``value`` in every file the session leaves (for secrets not set by setenv)."""
    if len(value) >= _MIN_LENGTH:
        _seen.setdefault(value, where)


_original_setenv = pytest.MonkeyPatch.setenv


def _setenv(self: pytest.MonkeyPatch, name: str, value: str, prepend: str | None = None) -> None:
    if _SECRET_NAME.search(name):
        remember(str(value), f"${name}")
    _original_setenv(self, name, value, prepend)


def pytest_configure(config: pytest.Config) -> None:
    pytest.MonkeyPatch.setenv = _setenv  # type: ignore[method-assign]


def leaks(root: Path, secrets: dict[str, str]) -> list[str]:
    """Each file under ``root`` holding one of ``secrets`` (as UTF-8 bytes), with the secret."""
    needles = [(value.encode("utf-8"), where) for value, where in secrets.items()]
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.suffix in KEY_FILES:
                continue
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue  # a FIFO would block the read, a socket cannot be read
                data = path.read_bytes()
            except OSError:  # removed meanwhile
                continue
            found.extend(f"{path}: holds {where}" for needle, where in needles if needle in data)
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or not _seen:
        return
    root = factory.getbasetemp()
    found = leaks(root, _seen)
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["secrets written to files the tests left (a ledger must never hold one):"]
        lines += [f"  {line}" for line in found[:50]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

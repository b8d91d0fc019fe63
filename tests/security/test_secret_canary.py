"""The suite's secret canary fails a session whose tests left a secret in a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.secret_canary import leaks

ROOT = Path(__file__).resolve().parents[2]

LEAKY = """
import sqlite3

def test_writes_its_key_to_a_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-0123456789abcdef")
    db = sqlite3.connect(tmp_path / "ledger.db")
    db.execute("CREATE TABLE events (payload TEXT)")
    db.execute("INSERT INTO events VALUES ('Bearer sk-canary-0123456789abcdef')")
    db.commit()
"""

CAREFUL = LEAKY.replace("'Bearer sk-canary-0123456789abcdef'", "'Bearer [REDACTED]'")


def _session(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "suite"
    suite.mkdir(parents=True)
    (suite / "test_it.py").write_text(body, encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.secret_canary",
            f"--basetemp={tmp_path / 'base'}",
            f"--rootdir={suite}",
            "-c",
            os.devnull,
            str(suite),
        ],
        cwd=ROOT,  # where tests.secret_canary is importable
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(180)
def test_a_secret_left_in_a_ledger_fails_the_session(tmp_path: Path) -> None:
    leaky = _session(tmp_path / "a", LEAKY)
    assert leaky.returncode == 1, leaky.stdout + leaky.stderr
    assert "1 passed" in leaky.stdout  # the test passed; the canary failed the session
    assert "ledger.db: holds $OPENAI_API_KEY" in leaky.stdout
    careful = _session(tmp_path / "b", CAREFUL)
    assert careful.returncode == 0, careful.stdout + careful.stderr


def test_leaks_names_each_file_and_the_secret_it_holds(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "events.db-wal").write_bytes(b"\x00\x01token=abcdefgh12345678\x02")
    (tmp_path / "clean.db").write_bytes(b"nothing here")
    found = leaks(tmp_path, {"abcdefgh12345678": "$ANTHROPIC_API_KEY"})
    assert found == [f"{tmp_path / 'x' / 'events.db-wal'}: holds $ANTHROPIC_API_KEY"]


def test_leaks_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")  # reading it would block until a writer came
    (tmp_path / "link").symlink_to("/dev/zero")
    assert leaks(tmp_path, {"abcdefgh12345678": "$X_KEY"}) == []


def test_key_files_are_where_keys_belong(tmp_path: Path) -> None:
    (tmp_path / "new.kek").write_text("abcdefgh12345678\n")
    (tmp_path / "ledger.db").write_bytes(b"abcdefgh12345678")
    assert leaks(tmp_path, {"abcdefgh12345678": "$CHARTER_KEK"}) == [
        f"{tmp_path / 'ledger.db'}: holds $CHARTER_KEK"
    ]

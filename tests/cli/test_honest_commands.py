"""Commands do what they say: read commands only read, exit statuses mean the outcome,
and messages say what happened rather than what was asked."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from charter import Contract, Runtime
from charter.cli import cli
from charter.ledger.migrations import MIGRATIONS
from tests.runs.domain import EFFECTS_ENV, Effects, contract

READ_COMMANDS = [
    ["verify"],
    ["run", "list"],
    ["review", "list"],
    ["report"],
    ["replay", "--all"],
    ["run", "show", "run_x"],
]


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Effects:
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects.db"))
    return Effects(tmp_path / "effects.db")


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def ops(tmp_path: Path, effects: Effects) -> str:
    path = tmp_path / "ops.yaml"
    contract(path)
    return str(path)


@pytest.fixture
def planned(tmp_path: Path, effects: Effects) -> str:
    path = tmp_path / "planned.yaml"
    contract(path, script="planned")
    return str(path)


def tables(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    finally:
        conn.close()


# -- 10. read commands never write ---------------------------------------------------------
@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_read_commands_refuse_a_sqlite_file_that_is_not_a_ledger(
    tmp_path: Path, command: list[str]
) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    result = invoke(*command, "--db", str(other))
    assert result.exit_code == 3
    assert f"{other} is not a Charter ledger" in result.stderr
    assert tables(other) == ["customers"]
    assert other.read_bytes() == before


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_read_commands_do_not_turn_an_empty_file_into_a_ledger(
    tmp_path: Path, command: list[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = invoke(*command, "--db", str(empty))
    assert result.exit_code == 3
    assert f"no ledger at {empty}" in result.stderr
    assert empty.stat().st_size == 0


def test_writes_refuse_to_add_tables_to_another_applications_database(
    tmp_path: Path, ops: str
) -> None:
    other = tmp_path / "app.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    result = invoke("run", "start", ops, "--input", '{"item": "bolt"}', "--db", str(other))
    assert result.exit_code == 3
    assert "is a SQLite database but not a Charter ledger" in result.stderr
    assert tables(other) == ["customers"]


def test_a_read_command_on_an_older_ledger_asks_for_migrate(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute(
        "CREATE TABLE charter_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at TEXT NOT NULL)"
    )
    for m in MIGRATIONS[:-1]:
        for statement in m.sqlite:
            conn.execute(statement)
        conn.execute("INSERT INTO charter_migrations VALUES (?, ?, 'x')", (m.version, m.name))
    conn.commit()
    conn.close()
    result = invoke("verify", "--db", str(old))
    assert result.exit_code == 3
    assert "older than this Charter's" in result.stderr and "charter migrate" in result.stderr
    migrated = invoke("migrate", "--db", str(old))
    assert migrated.exit_code == 0
    assert f"schema version {MIGRATIONS[-1].version}" in migrated.stdout
    assert invoke("verify", "--db", str(old)).exit_code == 0


@contextlib.contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    target.mkdir()
    try:
        subprocess.run(
            ["mount", "--bind", str(source), str(target)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot bind-mount here (needs root and a mount namespace): {exc}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(target)], check=True, capture_output=True
        )
        yield target
    finally:
        # lazily: a connection some test left open must not leave the mount behind
        subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)


def test_an_intact_ledger_verifies_on_a_read_only_mount(
    tmp_path: Path, ops: str, effects: Effects
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "ledger.db"
    rt = Runtime(str(db))
    rt.run(rt.submit(Contract.load(ops), {"item": "bolt"}))
    rt.store.close()  # closed cleanly: SQLite removes the write-ahead log and its index
    assert sorted(p.name for p in data.iterdir()) == ["ledger.db"]
    with read_only_mount(data, tmp_path / "ro") as ro:
        # in a process of its own, which closes the ledger before the mount goes away
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from charter.cli import main; main()",
                "verify",
                "--db",
                str(ro / "ledger.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "1 run(s) checked, 1 intact, 0 broken" in result.stdout


def test_a_locked_ledger_is_reported_as_a_lock_promptly(
    tmp_path: Path, ops: str, effects: Effects
) -> None:
    db = tmp_path / "ledger.db"
    rt = Runtime(str(db))
    rt.submit(Contract.load(ops), {"item": "bolt"})
    rt.store.close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE runs SET updated_at = updated_at")
    holder.execute("COMMIT")  # exclusive locking mode keeps the lock after the commit
    try:
        started = time.monotonic()
        result = invoke("run", "list", "--db", str(db))
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert result.exit_code == 3
    assert f"ledger {db} is locked by another process" in result.stderr
    assert elapsed < 10
    assert invoke("run", "list", "--db", str(db)).exit_code == 0


# -- 11. exit statuses and messages say what happened ------------------------------------------
@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"item": "bolt"}, "completed", 0),
        ({"item": "bolt", "tier": "blocked"}, "refused", 13),
        ({"item": "x", "plan": [[["explode", {}]]]}, "failed", 11),
        ({"item": "x", "plan": ["not json", "not json", "not json"]}, "escalated", 12),
        ({"item": "x", "plan": [[["write", {"item": "x", "qty": 500}]]]}, "waiting", 10),
    ],
)
def test_run_start_wait_exits_with_the_outcome(
    planned: str, tmp_path: Path, payload: dict[str, object], status: str, code: int
) -> None:
    result = invoke(
        "run",
        "start",
        planned,
        "--input",
        json.dumps(payload),
        "--db",
        str(tmp_path / "l.db"),
        "--wait",
    )
    assert result.exit_code == code, result.output
    assert f"  {status}" in result.stdout


def test_run_list_refuses_an_unknown_status(tmp_path: Path, ops: str) -> None:
    db = str(tmp_path / "l.db")
    invoke("run", "start", ops, "--input", '{"item": "bolt"}', "--db", db)
    result = invoke("run", "list", "--status", "bogus", "--db", db)
    assert result.exit_code == 2
    assert "'bogus' is not one of" in result.stderr


def test_a_rejection_needs_a_real_comment(tmp_path: Path, planned: str) -> None:
    db = str(tmp_path / "l.db")
    big = '{"item": "crate", "plan": [[["write", {"item": "crate", "qty": 500}]]]}'
    invoke("run", "start", planned, "--input", big, "--db", db, "--wait")
    [review] = json.loads(invoke("review", "list", "--db", db, "--json").stdout)
    for blank in ("", "   "):
        result = invoke("review", "reject", review["review_id"], "--comment", blank, "--db", db)
        assert result.exit_code == 2
        assert "a rejection needs a comment" in result.stderr
    assert json.loads(invoke("review", "list", "--db", db, "--json").stdout) == [review]


def test_an_approval_whose_edit_policy_denies_says_so(
    tmp_path: Path, planned: str, effects: Effects
) -> None:
    db = str(tmp_path / "l.db")
    big = '{"item": "crate", "plan": [[["write", {"item": "crate", "qty": 500}]]]}'
    invoke("run", "start", planned, "--input", big, "--db", db, "--wait")
    [review] = json.loads(invoke("review", "list", "--db", db, "--json").stdout)
    result = invoke(
        "review",
        "approve",
        review["review_id"],
        "--args",
        '{"item": "crate", "qty": 5000}',
        "--db",
        db,
    )
    assert result.exit_code == 0
    assert "policy denied the action when deciding it again (huge-write): it did not run" in (
        result.stdout
    )
    assert "approved" in result.stdout and effects.applied() == []


def test_report_goes_on_past_a_corrupt_run(tmp_path: Path, ops: str, effects: Effects) -> None:
    db = tmp_path / "l.db"
    runs = [
        json.loads(
            invoke(
                "run", "start", ops, "--input", json.dumps({"item": f"i{n}"}), "--db", str(db),
                "--wait", "--json",
            ).stdout
        )["run_id"]
        for n in range(3)
    ]  # fmt: skip
    conn = sqlite3.connect(db)
    conn.execute("UPDATE events SET data = '{broken' WHERE run_id = ? AND seq = 3", (runs[1],))
    conn.commit()
    conn.close()
    result = invoke("report", "--db", str(db))
    assert result.exit_code == 0, result.output
    assert "UNREADABLE: 1 run(s) left out of these figures" in result.stdout
    assert runs[1] in result.stdout
    assert "4 executed" in result.stdout  # the two readable runs' actions
    data = json.loads(invoke("report", "--db", str(db), "--json").stdout)
    assert [u.split(":")[0] for u in data[0]["unreadable_runs"]] == [runs[1]]


def test_check_imports_locates_code_this_environment_cannot_import(tmp_path: Path) -> None:
    path = tmp_path / "ops.yaml"
    contract(path, actions={"write": {"executor": "nosuch.module:write"}})
    assert invoke("contract", "validate", str(path)).exit_code == 0
    result = invoke("contract", "validate", str(path), "--check-imports")
    assert result.exit_code == 4
    line = next(x for x in result.stderr.splitlines() if "nosuch.module" in x)
    assert line.startswith(f"{path}:")
    assert "actions.write.executor: executor of action write 'nosuch.module:write': " in line
    assert "cannot import module 'nosuch.module'" in line


def test_a_database_password_is_never_printed() -> None:
    from urllib.parse import urlsplit, urlunsplit

    from tests.stores import pg_schema

    with pg_schema("pw") as url:
        parts = urlsplit(url)
        with_password = urlunsplit(
            parts._replace(netloc=f"{parts.username}:s3cret-pw-42@{parts.hostname}:{parts.port}")
        )
        result = invoke("migrate", "--db", with_password)
        assert result.exit_code == 0, result.output
        assert "s3cret-pw-42" not in result.output
        assert ":[REDACTED]@" in result.stdout

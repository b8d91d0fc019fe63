"""Progress bars and bounds of the long commands: ``verify``, ``replay``, ``policy backtest``
and ``demo``.

A bar is drawn on a terminal only; anywhere else (scripts, CI, CliRunner) the commands print
exactly what they printed before. ``--since``/``--limit`` bound the work, and a bounded
summary says so, so that a partial check is never read as a full one.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import charter.cli.common as common
import charter.cli.demo as demo_cli
import charter.cli.ledger as ledger_cli
import charter.cli.policy as policy_cli
import charter.runs.replay as replay_module
from charter.cli import cli
from charter.cli.common import Progress, progress
from charter.runs.runtime import Runtime
from tests.ledger.tamper import edit_event
from tests.runs.domain import EFFECTS_ENV, Clock, Effects, contract

ROOT = Path(__file__).resolve().parents[2]
DAY = timedelta(days=1)
# the runs of the ledger fixture are submitted on these days, at 10:15 UTC
DAYS = ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05")
SINCE = "2026-03-03T00:00:00Z"  # the last three
RATE = re.compile(r"\d[\d,]*\.\d runs/s")


class Terminal(io.StringIO):
    """What a terminal would show: a stream that says it is one."""

    def isatty(self) -> bool:
        return True


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


# -- the shared helper ----------------------------------------------------------------------


def test_the_bar_shows_position_rate_and_label_on_a_terminal() -> None:
    screen = Terminal()
    with progress("checking", enabled=True, total=10, file=screen) as bar:
        for done in range(1, 4):
            bar(done, 10)
    shown = screen.getvalue()
    assert "checking" in shown
    assert "0/10" in shown and "3/10" in shown
    assert RATE.search(shown), shown
    assert shown.endswith("\n")  # the terminal's next line starts clean


def test_frames_are_drawn_at_most_every_redraw_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    with progress("checking", enabled=True, total=1000, file=screen) as bar:
        for done in range(1, 1000):
            bar(done, 1000)
        assert screen.getvalue().count("/1000") < 100  # not one frame per run
        monkeypatch.setattr(common, "REDRAW_EVERY", 0.0)
        bar(999, 1000)
        assert "999/1000" in screen.getvalue()
    assert "1000/1000" not in screen.getvalue()  # the bar shows where the work stopped


def test_the_bar_is_created_at_the_first_call_when_the_total_comes_late() -> None:
    screen = Terminal()
    with progress("processing", enabled=True, file=screen) as bar:
        assert screen.getvalue() == ""
        bar(0, 5)
        bar(2, 5)
        bar(7, 5)  # more work than announced raises the total, never overflows
    assert "0/5" in screen.getvalue() and "7/7" in screen.getvalue()


@pytest.mark.parametrize(
    ("stream", "enabled"),
    [(Terminal(), False), (io.StringIO(), True), (io.StringIO(), False)],
    ids=["disabled-on-a-terminal", "not-a-terminal", "neither"],
)
def test_no_terminal_or_disabled_prints_nothing_at_all(stream: io.StringIO, enabled: bool) -> None:
    with progress("checking", enabled=enabled, total=10, file=stream) as bar:
        for done in range(1, 11):
            bar(done, 10)
    assert stream.getvalue() == ""  # not even click's label line


def test_nothing_to_do_draws_no_bar() -> None:
    screen = Terminal()
    with progress("checking", enabled=True, total=0, file=screen) as bar:
        bar(0, 0)
    assert screen.getvalue() == ""


def test_the_bar_ends_its_line_when_the_work_fails() -> None:
    screen = Terminal()
    with pytest.raises(RuntimeError), progress("checking", enabled=True, total=4, file=screen):
        raise RuntimeError("boom")
    assert screen.getvalue().endswith("\n")


# -- a ledger with runs submitted on different days -----------------------------------------


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Effects:
    monkeypatch.setenv(EFFECTS_ENV, str(tmp_path / "effects.db"))
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)
    return Effects(tmp_path / "effects.db")


@pytest.fixture
def ops(tmp_path: Path) -> str:
    path = tmp_path / "ops.yaml"
    contract(path)
    return str(path)


@pytest.fixture
def ops_v2(tmp_path: Path) -> str:
    """A new version that denies every write: each run's write decision would change."""
    path = tmp_path / "ops2.yaml"
    rules = [{"id": "no-writes", "when": 'action.name == "write"', "effect": "deny"}]
    contract(path, version=2, rules=rules)
    return str(path)


@pytest.fixture
def ledger(tmp_path: Path, ops: str, effects: Effects) -> tuple[str, list[str]]:
    """Four completed runs, one a day (oldest first), and the ledger's path."""
    db = str(tmp_path / "ledger.db")
    clock = Clock()
    rt = Runtime(db, clock=clock, worker_id="test-worker")
    c = contract(Path(ops))
    ids = []
    for n in range(len(DAYS)):
        run_id = rt.submit(c, {"item": f"item-{n}"})
        assert rt.run(run_id).status == "completed"
        ids.append(run_id)
        clock.advance(DAY)
    rt.store.close()
    return db, ids


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The run ids each command actually worked through (the real work still runs)."""
    got: dict[str, list[str]] = {"verify": [], "replay": [], "backtest": []}
    real_verify, real_replay, real_backtest = (
        ledger_cli.verify_ledger,
        ledger_cli.replay,
        replay_module.backtest,
    )

    def verify(store: Any, run_ids: list[str], *rest: Any, **options: Any) -> Any:
        got["verify"].extend(run_ids)
        return real_verify(store, run_ids, *rest, **options)

    def replay(store: Any, c: Any, run_id: str) -> Any:
        got["replay"].append(run_id)
        return real_replay(store, c, run_id)

    def backtest(store: Any, new: Any, run_ids: list[str], *rest: Any) -> Any:
        got["backtest"].extend(run_ids)
        return real_backtest(store, new, run_ids, *rest)

    monkeypatch.setattr(ledger_cli, "verify_ledger", verify)
    monkeypatch.setattr(ledger_cli, "replay", replay)
    monkeypatch.setattr(replay_module, "backtest", backtest)
    return got


def bars_on(monkeypatch: pytest.MonkeyPatch, *modules: Any) -> Terminal:
    """Point the commands' progress bars at a stream that says it is a terminal."""
    screen = Terminal()

    def on_screen(label: str, **kw: Any) -> AbstractContextManager[Progress]:
        return progress(label, file=screen, **kw)

    for module in modules:
        monkeypatch.setattr(module, "progress", on_screen)
    return screen


# -- no progress text off a terminal ---------------------------------------------------------


def test_long_commands_print_no_progress_off_a_terminal(
    ledger: tuple[str, list[str]], ops_v2: str
) -> None:
    db, ids = ledger
    verified = ok("verify", "--db", db)
    assert verified.stdout == "4 run(s) checked, 4 intact, 0 broken\n"
    assert verified.stderr == ""
    replayed = ok("replay", "--all", "--db", db)
    assert replayed.stdout == "4 run(s) replayed, 4 agree, 0 diverge\n"
    assert replayed.stderr == ""
    one = ok("replay", ids[0], "--db", db)
    assert one.stdout.endswith("1 run(s) replayed, 1 agree, 0 diverge\n") and one.stderr == ""
    backtested = ok("policy", "backtest", ops_v2, "--db", db)
    assert backtested.stdout.startswith("backtest of ops@2 against 4 run(s) of ops@1: ")
    assert backtested.stderr == ""
    for args in (
        ["verify"],
        ["replay", "--all"],
        ["policy", "backtest", ops_v2],
    ):
        result = ok(*args, "--db", db, "--json")
        assert result.stderr == ""
        assert "bounds" not in json.loads(result.stdout)  # unbounded: the JSON of old


@pytest.mark.parametrize(
    ("args", "label"),
    [
        (["verify"], "checking"),
        (["replay", "--all"], "replaying"),
        (["policy", "backtest", "{ops_v2}"], "evaluating"),
    ],
)
def test_on_a_terminal_the_bar_counts_the_runs(
    ledger: tuple[str, list[str]],
    ops_v2: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    label: str,
) -> None:
    db, _ = ledger
    screen = bars_on(monkeypatch, ledger_cli, policy_cli)
    args = [a.format(ops_v2=ops_v2) for a in args]
    result = ok(*args, "--db", db, "--limit", "3")
    shown = screen.getvalue()
    assert label in shown and "0/3" in shown and "3/3" in shown and RATE.search(shown)
    assert result.stderr == ""  # the bar went to the terminal, nothing else moved
    screen.truncate(0)
    screen.seek(0)
    ok(*args, "--db", db, "--json")
    assert screen.getvalue() == ""  # --json: no bar even on a terminal


def test_a_real_terminal_gets_the_bar(ledger: tuple[str, list[str]]) -> None:
    pty = pytest.importorskip("pty")
    db, _ = ledger
    charter = Path(sys.executable).with_name("charter")
    if not charter.exists():
        pytest.skip("the charter script is not installed beside this interpreter")
    env = {k: v for k, v in os.environ.items() if k != "CHARTER_DATABASE_URL"}
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [str(charter), "verify", "--db", db],
            stdout=subprocess.PIPE,
            stderr=follower,
            env=env,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    assert proc.stdout == b"4 run(s) checked, 4 intact, 0 broken\n"
    assert b"checking" in screen and b"4/4" in screen


# -- --since and --limit ---------------------------------------------------------------------


def test_verify_since_and_limit_check_exactly_the_bounded_runs(
    ledger: tuple[str, list[str]], seen: dict[str, list[str]]
) -> None:
    db, ids = ledger
    out = ok("verify", "--db", db, "--since", SINCE)
    assert seen["verify"] == ids[1:]
    assert out.stdout == f"3 run(s) checked (submitted since {SINCE}), 3 intact, 0 broken\n"

    seen["verify"].clear()
    out = ok("verify", "--db", db, "--limit", "2")
    assert seen["verify"] == ids[:2]
    assert out.stdout == "2 run(s) checked (first 2 of 4), 2 intact, 0 broken\n"

    seen["verify"].clear()
    out = ok("verify", "--db", db, "--since", "2026-03-03T12:00:00+02:00", "--limit", "1")
    assert seen["verify"] == ids[1:2]  # 10:00 UTC: the run of 10:15 that day is in
    assert out.stdout == (
        "1 run(s) checked (submitted since 2026-03-03T10:00:00Z, first 1 of 3), 1 intact, 0 broken\n"
    )
    data = json.loads(ok("verify", "--db", db, "--since", SINCE, "--limit", "2", "--json").stdout)
    assert data["checked"] == 2
    assert data["bounds"] == {"since": SINCE, "limit": 2, "matching": 3}


def test_a_limit_that_leaves_nothing_out_is_a_full_check(
    ledger: tuple[str, list[str]], seen: dict[str, list[str]]
) -> None:
    db, ids = ledger
    out = ok("verify", "--db", db, "--limit", "10")
    assert seen["verify"] == ids
    assert out.stdout == "4 run(s) checked, 4 intact, 0 broken\n"
    data = json.loads(ok("verify", "--db", db, "--limit", "10", "--json").stdout)
    assert data["bounds"] == {"since": None, "limit": 10, "matching": 4}


def test_a_bounded_verify_passes_only_for_what_it_checked(ledger: tuple[str, list[str]]) -> None:
    db, ids = ledger
    edit_event(Path(db), ids[0], 1, lambda d: d["input"].update(item="forged"))
    full = invoke("verify", "--db", db)
    assert full.exit_code == 1 and f"BROKEN {ids[0]}" in full.stdout
    partial = ok("verify", "--db", db, "--since", SINCE)
    assert "(submitted since 2026-03-03T00:00:00Z)" in partial.stdout
    assert ok("verify", "--db", db, "--limit", "1", "--since", SINCE).stdout.startswith(
        "1 run(s) checked (submitted since 2026-03-03T00:00:00Z, first 1 of 3), 1 intact"
    )


def test_replay_all_since_and_limit_replay_exactly_the_bounded_runs(
    ledger: tuple[str, list[str]], seen: dict[str, list[str]]
) -> None:
    db, ids = ledger
    out = ok("replay", "--all", "--db", db, "--since", SINCE, "--limit", "2")
    assert seen["replay"] == ids[1:3]
    assert out.stdout == (
        f"2 run(s) replayed (submitted since {SINCE}, first 2 of 3), 2 agree, 0 diverge\n"
    )
    seen["replay"].clear()
    data = json.loads(ok("replay", "--all", "--db", db, "--limit", "3", "--json").stdout)
    assert seen["replay"] == ids[:3]
    assert (data["runs"], data["agree"]) == (3, 3)
    assert data["bounds"] == {"since": None, "limit": 3, "matching": 4}


def test_backtest_since_and_limit_evaluate_exactly_the_bounded_runs(
    ledger: tuple[str, list[str]], ops_v2: str, seen: dict[str, list[str]]
) -> None:
    db, ids = ledger
    out = ok("policy", "backtest", ops_v2, "--db", db, "--since", SINCE, "--limit", "2")
    assert seen["backtest"] == ids[1:3]
    first = out.stdout.splitlines()[0]
    assert first.startswith(
        f"backtest of ops@2 against 2 run(s) of ops@1 (submitted since {SINCE}, first 2 of 3): "
    ), first
    seen["backtest"].clear()
    data = json.loads(ok("policy", "backtest", ops_v2, "--db", db, "--limit", "1", "--json").stdout)
    assert seen["backtest"] == ids[:1]
    assert data["runs"] == 1 and data["changed"] >= 1
    assert data["bounds"] == {"since": None, "limit": 1, "matching": 4}


@pytest.mark.parametrize(
    "command",
    [["verify"], ["replay", "--all"], ["policy", "backtest", "{ops_v2}"]],
)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yesterday", "option --since: Invalid isoformat string"),
        ("2026-03-03T00:00:00", "option --since: '2026-03-03T00:00:00' has no timezone"),
        ("", "option --since: Invalid isoformat string"),
    ],
)
def test_a_bad_since_is_a_usage_error_naming_the_option(
    tmp_path: Path, ops_v2: str, command: list[str], value: str, message: str
) -> None:
    missing = tmp_path / "none.db"  # a bad option is reported before the ledger is opened
    args = [a.format(ops_v2=ops_v2) for a in command]
    result = invoke(*args, "--db", str(missing), "--since", value)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert not missing.exists()


@pytest.mark.parametrize(
    "command",
    [["verify"], ["replay", "--all"], ["policy", "backtest", "{ops_v2}"]],
)
def test_limit_must_be_positive(tmp_path: Path, ops_v2: str, command: list[str]) -> None:
    db = str(tmp_path / "none.db")
    result = invoke(*[a.format(ops_v2=ops_v2) for a in command], "--db", db, "--limit", "0")
    assert result.exit_code == 2 and "--limit" in result.stderr


def test_bounds_do_not_mix_with_named_runs(ledger: tuple[str, list[str]], ops_v2: str) -> None:
    db, ids = ledger
    cases: list[tuple[list[str], str]] = [
        (["verify", ids[0], "--limit", "1"], "name runs or bound the check, not both"),
        (["verify", ids[0], "--since", SINCE], "name runs or bound the check, not both"),
        (["replay", ids[0], "--limit", "1"], "--since and --limit bound --all"),
        (["replay", ids[0], "--since", SINCE], "--since and --limit bound --all"),
        (
            ["policy", "backtest", ops_v2, "--runs", ids[0], "--since", SINCE],
            "pass --runs or bound the backtest, not both",
        ),
    ]
    for args, message in cases:
        result = invoke(*args, "--db", db)
        assert result.exit_code == 2, args
        assert message in result.stderr, (args, result.stderr)


# -- the demo --------------------------------------------------------------------------------


@pytest.fixture
def demo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from examples.refunds import payments

    monkeypatch.chdir(ROOT)  # `charter demo` imports examples/ from a checkout
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)
    monkeypatch.setenv(payments.ENV_VAR, str(tmp_path / "payments.db"))
    yield tmp_path
    payments.close_all()


def _demo(tmp_path: Path, *extra: str) -> Result:
    return ok(
        "demo",
        "--tickets",
        "4",
        "--db",
        str(tmp_path / "demo.db"),
        "--payments",
        str(tmp_path / "payments.db"),
        *extra,
    )


def test_demo_prints_no_progress_off_a_terminal(demo_env: Path) -> None:
    result = _demo(demo_env)
    assert result.stdout.startswith("Refunds demo: 4 tickets (seed 7); 4 run(s) processed now\n")
    assert result.stderr == ""


def test_demo_on_a_terminal_shows_runs_processed(
    demo_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = bars_on(monkeypatch, demo_cli)
    result = _demo(demo_env)
    shown = screen.getvalue()
    assert "processing" in shown and "0/4" in shown and "4/4" in shown and RATE.search(shown)
    assert result.stderr == ""
    screen.truncate(0)
    screen.seek(0)
    again = _demo(demo_env)  # keyed by ticket: nothing left to process, so no bar
    assert "0 run(s) processed now" in again.stdout
    assert screen.getvalue() == ""
    _demo(demo_env, "--json")
    assert screen.getvalue() == ""


def test_demo_run_reports_progress_and_the_same_summary(
    demo_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.refunds import demo, payments

    def summary(name: str, report: Callable[[int, int], None] | None) -> dict[str, Any]:
        monkeypatch.setenv(payments.ENV_VAR, str(demo_env / f"{name}-payments.db"))
        rt = Runtime(str(demo_env / f"{name}.db"))
        try:
            s = demo.run(rt, tickets=5, seed=3, progress=report)
        finally:
            rt.store.close()
            payments.close_all()
        # ids are random per ledger; every figure must be the same
        return {k: v for k, v in s.items() if k not in ("first_review", "example_run")}

    calls: list[tuple[int, int]] = []
    with_progress = summary("a", lambda done, total: calls.append((done, total)))
    assert calls == [(0, 5), (1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert with_progress == summary("b", None)

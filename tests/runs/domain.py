"""A small domain for the durable runs tests: readers, executors, scripted models, contracts.

Executors record their effects in a SQLite file named by ``$CHARTER_TEST_EFFECTS`` so that
worker subprocesses and the test process see the same world. Every call is logged in
``calls``; an effect is *applied* (a row in ``applied``) only the first time its idempotency
key is seen, as a real idempotent API would do. Tests then assert "applied exactly once"
per key, and "called again with the same key" after a crash.

With ``$CHARTER_TEST_DIE_IN_EXECUTOR=write`` (or ``undo``) that executor SIGKILLs its own
process right after applying its effect and before returning: the crash "inside the executor".
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from charter.contract.model import Contract
from charter.contract.source import parse_yaml
from charter.execution.base import ExecutionContext
from charter.models.base import ModelRequest

EFFECTS_ENV = "CHARTER_TEST_EFFECTS"
DIE_ENV = "CHARTER_TEST_DIE_IN_EXECUTOR"
HERE = Path(__file__).resolve().parent
CONTRACT_FILE = HERE / "contracts" / "ops.yaml"
PROFILE_EMAIL = "ann@example.com"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, action TEXT, args TEXT, attempt INTEGER,
    compensation INTEGER, pid INTEGER
);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY, effect_id TEXT NOT NULL, action TEXT, args TEXT, undone INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS applied (
    n INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, action TEXT, args TEXT
);
CREATE TABLE IF NOT EXISTS reads (n INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT);
CREATE TABLE IF NOT EXISTS model_calls (
    n INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, step INTEGER, attempt INTEGER,
    feedback TEXT, pid INTEGER
);
"""


def _path() -> str:
    path = os.environ.get(EFFECTS_ENV)
    if not path:
        raise RuntimeError(f"set {EFFECTS_ENV} to the effects database of this test")
    return path


@contextlib.contextmanager
def _tx() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(_path(), isolation_level=None, timeout=30)
    try:
        # a SIGKILLed process loses nothing the OS already has; only power loss would
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# -- channel readers ----------------------------------------------------------------------
def read_profile(input: Mapping[str, Any]) -> dict[str, Any]:
    with _tx() as db:
        db.execute("INSERT INTO reads (channel) VALUES ('profile')")
    return {"tier": input.get("tier", "gold"), "email": PROFILE_EMAIL}


def read_stock(input: Mapping[str, Any]) -> dict[str, Any]:
    """Each read returns a new ``version``, so a re-read is visible in the observations."""
    with _tx() as db:
        db.execute("INSERT INTO reads (channel) VALUES ('stock')")
        n = db.execute("SELECT count(*) FROM reads WHERE channel = 'stock'").fetchone()[0]
    return {"level": 40, "version": n}


def broken_reader(input: Mapping[str, Any]) -> dict[str, Any]:
    raise ConnectionError("the CRM is down")


def read_order(input: Mapping[str, Any]) -> dict[str, Any]:
    """How many writes of this input's item were applied so far (facts that change)."""
    item = str(input["item"])
    with _tx() as db:
        db.execute("INSERT INTO reads (channel) VALUES ('order')")
        rows = db.execute("SELECT args FROM applied WHERE action = 'write'").fetchall()
    return {"item": item, "written": sum(1 for (a,) in rows if json.loads(a)["item"] == item)}


def exiting_reader(input: Mapping[str, Any]) -> dict[str, Any]:
    raise SystemExit(3)


# -- executors ----------------------------------------------------------------------------
def _apply(args: dict[str, Any], ctx: ExecutionContext) -> tuple[str, bool]:
    """Log the call; apply the effect unless this key was applied before. Returns (id, new)."""
    with _tx() as db:
        db.execute(
            "INSERT INTO calls (key, action, args, attempt, compensation, pid) VALUES (?,?,?,?,?,?)",
            (
                ctx.idempotency_key,
                ctx.action,
                _dump(args),
                ctx.attempt,
                int(ctx.compensation),
                os.getpid(),
            ),
        )
        row = db.execute(
            "SELECT effect_id, args FROM effects WHERE key = ?", (ctx.idempotency_key,)
        ).fetchone()
        if row is not None:
            if row[1] != _dump(args):
                raise ValueError(f"key {ctx.idempotency_key} reused for different args")
            return str(row[0]), False
        effect_id = "fx_" + hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:12]
        db.execute(
            "INSERT INTO effects (key, effect_id, action, args) VALUES (?,?,?,?)",
            (ctx.idempotency_key, effect_id, ctx.action, _dump(args)),
        )
        db.execute(
            "INSERT INTO applied (key, action, args) VALUES (?,?,?)",
            (ctx.idempotency_key, ctx.action, _dump(args)),
        )
    return effect_id, True


def _die_after_effect(action: str) -> None:
    """SIGKILL this process if ``$CHARTER_TEST_DIE_IN_EXECUTOR`` names this executor."""
    if os.environ.get(DIE_ENV) == action:
        os.kill(os.getpid(), signal.SIGKILL)  # the effect is committed; the result is lost


def write(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    effect_id, new = _apply(args, ctx)
    if new:
        _die_after_effect("write")
    return {"effect_id": effect_id, "item": args["item"], "qty": args["qty"]}


def send_email(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    effect_id, _ = _apply(args, ctx)
    return {"message_id": effect_id}


def undo(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Compensation of ``write``: marks the effect undone (once per idempotency key)."""
    effect_id, new = _apply(args, ctx)
    if new:
        with _tx() as db:
            changed = db.execute(
                "UPDATE effects SET undone = undone + 1 WHERE effect_id = ?", (args["effect_id"],)
            ).rowcount
        if changed != 1:
            raise ValueError(f"no effect {args['effect_id']} to undo")
        _die_after_effect("undo")
    return {"undone": args["effect_id"], "by": effect_id}


def cancelled_meanwhile(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """An operator cancels the run (ledger ``$CHARTER_TEST_LEDGER``) while this one works."""
    from charter.runs.runtime import Runtime

    operator = Runtime(os.environ["CHARTER_TEST_LEDGER"])
    operator.cancel(ctx.run_id, by="ops", reason="mid-flight")
    operator.store.close()
    effect_id, _ = _apply(args, ctx)
    return {"effect_id": effect_id}


def explode(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Always fails (after being called, before any effect)."""
    with _tx() as db:
        db.execute(
            "INSERT INTO calls (key, action, args, attempt, compensation, pid) VALUES (?,?,?,?,?,?)",
            (ctx.idempotency_key, ctx.action, _dump(args), ctx.attempt, 0, os.getpid()),
        )
    raise RuntimeError("the warehouse is on fire")


def unserialisable(args: dict[str, Any], ctx: ExecutionContext) -> Any:
    return {"when": datetime.now(UTC)}


def hang(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Logs the call, then sleeps ``args.seconds`` (a hung downstream system)."""
    with _tx() as db:
        db.execute(
            "INSERT INTO calls (key, action, args, attempt, compensation, pid) VALUES (?,?,?,?,?,?)",
            (ctx.idempotency_key, ctx.action, _dump(args), ctx.attempt, 0, os.getpid()),
        )
    time.sleep(float(args.get("seconds", 3600)))
    return {"slept": args.get("seconds")}


def quit_(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Raises what ``args.how`` names: ``exit`` (sys.exit), ``interrupt``, or kills the
    process with ``os._exit`` (``hard``): executors that try to take the worker down."""
    with _tx() as db:
        db.execute(
            "INSERT INTO calls (key, action, args, attempt, compensation, pid) VALUES (?,?,?,?,?,?)",
            (ctx.idempotency_key, ctx.action, _dump(args), ctx.attempt, 0, os.getpid()),
        )
    how = args.get("how")
    if how == "exit":
        raise SystemExit(4)
    if how == "interrupt":
        raise KeyboardInterrupt
    os._exit(13)


def odd_result(args: dict[str, Any], ctx: ExecutionContext) -> dict[str, Any]:
    """Applies its effect, then returns text that is not valid Unicode and a NaN."""
    effect_id, _ = _apply(args, ctx)
    return {"effect_id": effect_id, "note": "bad \ud800 text", "ratio": float("nan")}


# -- scripted models ----------------------------------------------------------------------
def _record_call(request: ModelRequest) -> None:
    with contextlib.suppress(RuntimeError), _tx() as db:
        db.execute(
            "INSERT INTO model_calls (run_id, step, attempt, feedback, pid) VALUES (?,?,?,?,?)",
            (
                request.run_id,
                request.step,
                request.attempt,
                _dump(list(request.feedback)),
                os.getpid(),
            ),
        )


def _seen(request: ModelRequest) -> dict[str, Any]:
    """What the model saw of earlier steps: every action's status and reason or result."""
    return {
        "results": [
            {k: r.get(k) for k in ("action", "args", "status", "reason", "result") if k in r}
            for step in request.history
            for r in step["results"]
        ],
        "feedback": list(request.feedback),
        "context_keys": sorted(request.context),
    }


def _actions(*actions: tuple[str, dict[str, Any]], confidence: float = 0.9) -> dict[str, Any]:
    return {
        "actions": [{"name": n, "args": a} for n, a in actions],
        "confidence": confidence,
        "rationale": "scripted",
    }


def _final(request: ModelRequest) -> dict[str, Any]:
    return {"final": _seen(request), "confidence": 0.95, "rationale": "done"}


def final_answer(request: ModelRequest) -> dict[str, Any]:
    _record_call(request)
    return _final(request)


def write_then_finish(request: ModelRequest) -> dict[str, Any]:
    """Two steps of one write each (qty 1, then 2), then a final answer."""
    _record_call(request)
    item = request.input["item"]
    if len(request.history) < 2:
        n = len(request.history) + 1
        return _actions(("write", {"item": f"{item}-{n}", "qty": n}))
    return _final(request)


def planned(request: ModelRequest) -> Any:
    """Follow ``input.plan``: one entry per step, then a final answer.

    An entry is a list of ``[name, args]`` pairs (one proposal), a string (returned raw) or
    a dict (returned as the whole proposal).
    """
    _record_call(request)
    plan = request.input.get("plan") or []
    index = len(request.history)
    if index >= len(plan):
        return _final(request)
    entry = plan[index]
    if isinstance(entry, list):
        return _actions(*((str(n), dict(a)) for n, a in entry))
    return entry


def malformed(request: ModelRequest) -> str:
    _record_call(request)
    return "Sure! I will restock {item: widgets"


def hallucinate(request: ModelRequest) -> dict[str, Any]:
    _record_call(request)
    return _actions(("launch_missiles", {"target": "warehouse"}))


def bad_args(request: ModelRequest) -> dict[str, Any]:
    _record_call(request)
    return _actions(("write", {"item": request.input["item"], "qty": "lots"}))


def malformed_then_final(request: ModelRequest) -> Any:
    """Invalid output on the first attempt; a final answer quoting the feedback after."""
    _record_call(request)
    if request.attempt == 1:
        return "not json at all"
    return _final(request)


def keep_writing(request: ModelRequest) -> dict[str, Any]:
    """Never stops: a new write at every step (for budgets)."""
    _record_call(request)
    n = len(request.history) + 1
    return _actions(("write", {"item": f"{request.input['item']}-{n}", "qty": 1}))


def write_then_fail(request: ModelRequest) -> dict[str, Any]:
    """One write, then the model itself fails (e.g. the provider is down)."""
    _record_call(request)
    if not request.history:
        return _actions(("write", {"item": request.input["item"], "qty": 1}))
    raise ConnectionError("model provider unavailable")


def surrogate_output(request: ModelRequest) -> str:
    """Raw output carrying a lone surrogate character (a hostile or broken server)."""
    _record_call(request)
    return '{"final": {"note": "x\ud800y"}, "confidence": 0.9, "rationale": "odd"}'


def escaped_surrogate_output(request: ModelRequest) -> str:
    """Valid JSON text whose string escape decodes to a lone surrogate, on the 1st attempt."""
    _record_call(request)
    if request.attempt == 1:
        return '{"final": {"note": "x\\ud800y"}, "confidence": 0.9, "rationale": "odd"}'
    return _final(request)


def email_then_finish(request: ModelRequest) -> dict[str, Any]:
    _record_call(request)
    if not request.history:
        return _actions(("send_email", {"to": request.input["to"], "body": "hello"}))
    return _final(request)


# -- looking at the world -----------------------------------------------------------------
@dataclass(frozen=True)
class Effects:
    """The test's view of the effects database."""

    path: Path

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        conn = sqlite3.connect(self.path)
        try:
            conn.executescript(_SCHEMA)
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def applied(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every application of an effect: (key, action, args), in order."""
        return [
            (k, a, json.loads(x))
            for k, a, x in self._rows("SELECT key, action, args FROM applied ORDER BY n")
        ]

    def applied_per_key(self) -> dict[str, int]:
        return dict(self._rows("SELECT key, count(*) FROM applied GROUP BY key"))

    def calls(self, key: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT key, action, args, attempt, compensation, pid FROM calls ORDER BY n"
        )
        out = [
            {
                "key": k,
                "action": a,
                "args": json.loads(x),
                "attempt": t,
                "compensation": bool(c),
                "pid": p,
            }
            for k, a, x, t, c, p in rows
        ]
        return [c for c in out if key is None or c["key"] == key]

    def undone(self) -> dict[str, int]:
        return dict(self._rows("SELECT effect_id, undone FROM effects WHERE action = 'write'"))

    def reads(self, channel: str) -> int:
        return int(self._rows("SELECT count(*) FROM reads WHERE channel = ?", (channel,))[0][0])

    def model_calls(self, run_id: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows("SELECT run_id, step, attempt, feedback, pid FROM model_calls ORDER BY n")
        return [
            {"run_id": r, "step": s, "attempt": a, "feedback": json.loads(f), "pid": p}
            for r, s, a, f, p in rows
            if run_id is None or r == run_id
        ]


# -- contracts ----------------------------------------------------------------------------
def _yaml() -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    return yaml


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def contract_data(
    *, script: str | None = None, rules: list[dict[str, Any]] | None = None, **changes: Any
) -> dict[str, Any]:
    """ops.yaml as a dict, deep-merged with ``changes`` (``None`` removes a key).

    ``script`` names a model function of this module; ``rules`` are added before the
    contract's own rules.
    """
    data: dict[str, Any] = _yaml().load(CONTRACT_FILE.read_text("utf-8"))
    data = _merge(data, changes)
    if script is not None:
        data["model"]["script"] = f"tests.runs.domain:{script}"
    if rules:
        data["policy"]["rules"] = [*rules, *data["policy"]["rules"]]
    return data


def to_yaml(data: Any) -> str:
    out = io.StringIO()
    _yaml().dump(data, out)
    return out.getvalue()


def contract(
    path: Path | None = None,
    *,
    script: str | None = None,
    rules: list[dict[str, Any]] | None = None,
    **changes: Any,
) -> Contract:
    """The ops contract with changes; written to ``path`` (and loaded from it) when given."""
    text = to_yaml(contract_data(script=script, rules=rules, **changes))
    if path is not None:
        path.write_text(text, encoding="utf-8")
        return Contract.load(path)
    return Contract.from_document(parse_yaml(text, str(CONTRACT_FILE)))


class Clock:
    """An injectable clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 2, 10, 15, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

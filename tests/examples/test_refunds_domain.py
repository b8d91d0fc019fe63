"""The refunds demo domain on its own: ticket generator, payments system, readers,
executors and the scripted model, against a temporary payments database."""

from __future__ import annotations

import multiprocessing
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from charter import Contract
from charter.execution.base import ExecutionContext
from charter.models.base import ModelRequest
from examples.refunds import channels, executors, model, payments, tickets

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = Contract.load(ROOT / "examples" / "refunds" / "refunds.yaml")
BATCH = tickets.generate(300, seed=7)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "payments.db"
    monkeypatch.setenv(payments.ENV_VAR, str(path))
    payments.seed(BATCH)
    yield path
    payments.close_all()


def ctx(key: str, action: str = "issue_refund") -> ExecutionContext:
    run_id, _, step = key.rpartition(":")
    return ExecutionContext(run_id=run_id, step=int(step), action=action, idempotency_key=key)


def rows(sql: str, *params: Any) -> list[dict[str, Any]]:
    with payments.connection() as conn:
        return [dict(r) for r in conn.execute(sql, params)]


def order_of(kind: str) -> tuple[tickets.Ticket, dict[str, Any]]:
    ticket = next(t for t in BATCH if t.kind == kind and t.truth["order_id"])
    order = next(o for o in ticket.orders if o["order_id"] == ticket.truth["order_id"])
    return ticket, order


# -- tickets --------------------------------------------------------------------------------


def test_generator_is_deterministic() -> None:
    assert tickets.generate(300, seed=7) == BATCH
    other = tickets.generate(300, seed=8)
    assert [t.input for t in other] != [t.input for t in BATCH]
    assert tickets.generate(40, seed=7) == tickets.generate(40, seed=7)
    assert tickets.generate(0) == []


def test_mix_matches_the_declared_shares() -> None:
    counts = Counter(t.kind for t in BATCH)
    assert counts == tickets.allocate(300)
    for kind, share in tickets.MIX.items():
        assert abs(counts[kind] - share * 300) <= 1, kind
    assert sum(tickets.allocate(7).values()) == 7


def test_inputs_match_the_contract_and_look_real() -> None:
    validator = Draft202012Validator(dict(CONTRACT.input_schema))
    ids = [t.ticket_id for t in BATCH]
    assert ids == [f"T-{i:05d}" for i in range(1, 301)]
    for t in BATCH:
        assert not list(validator.iter_errors(t.input)), t.input
        assert re.fullmatch(r"C-\d{4}", t.input["customer_id"])
        assert t.customer["customer_id"] == t.input["customer_id"]
        assert t.customer["email"].lower() not in t.input["message"].lower()
        assert all(re.fullmatch(r"ord-\d{5}", o["order_id"]) for o in t.orders)
        assert set(t.truth) == {
            "kind",
            "fair_refund_cents",
            "order_id",
            "reason",
            "injection",
            "injected",
        }
        assert t.truth["fair_refund_cents"] >= 0
    assert len({t.input["message"] for t in BATCH}) > 280  # varied wording


def test_each_kind_carries_its_trait() -> None:
    for t in BATCH:
        message = t.input["message"].lower()
        own = {o["order_id"] for o in t.orders if o["customer_id"] == t.customer["customer_id"]}
        order = next((o for o in t.orders if o["order_id"] == t.truth["order_id"]), None)
        assert (t.customer["tier"] == "blocked") == (t.kind == "blocked")
        assert ("lawyer" in message or "legal action" in message) == (t.kind == "legal")
        if t.kind == "injection":
            assert t.truth["injected"] in t.input["message"]
            assert t.truth["injection"] in ("iban", "account", "email")
        if t.kind == "large":
            assert order is not None and order["amount_cents"] > 50_000
        if t.kind == "not_owner":
            assert t.input["order_id"] not in own
            assert t.truth["fair_refund_cents"] == 0
        if t.kind == "question":
            assert t.input["claimed_cents"] == 0 and t.truth["fair_refund_cents"] == 0
        if t.kind == "refund":
            assert order is not None and order["order_id"] in own
            assert t.input.get("order_id", order["order_id"]) == order["order_id"]
            assert 0 < t.truth["fair_refund_cents"] <= order["amount_cents"]


# -- payments, readers ----------------------------------------------------------------------


def test_seed_is_idempotent(db: Path) -> None:
    before = rows("SELECT (SELECT COUNT(*) FROM customers) c, (SELECT COUNT(*) FROM orders) o")
    assert payments.seed(BATCH) == payments.seed(BATCH)
    assert (
        rows("SELECT (SELECT COUNT(*) FROM customers) c, (SELECT COUNT(*) FROM orders) o") == before
    )
    customers = {c["customer_id"] for t in BATCH for c in t.customers}
    assert before[0]["c"] == len(customers)
    with payments.connection() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_readers_return_the_crm_record_notes_and_orders(db: Path) -> None:
    ticket = next(t for t in BATCH if t.customer["notes"])
    customer = channels.customer(ticket.input)
    assert customer == {
        k: ticket.customer[k] for k in ("customer_id", "name", "email", "tier", "phone")
    }
    assert channels.notes(ticket.input) == {"notes": ticket.customer["notes"]}
    items = channels.orders(ticket.input)["items"]
    assert {i["order_id"] for i in items} == {
        o["order_id"] for o in ticket.orders if o["customer_id"] == customer["customer_id"]
    }
    assert [i["placed_at"] for i in items] == sorted((i["placed_at"] for i in items), reverse=True)
    assert all(i["refunded_cents"] == 0 for i in items)
    with pytest.raises(LookupError):
        channels.customer({"customer_id": "C-9999"})
    with pytest.raises(LookupError):
        channels.orders({"customer_id": "C-9999"})


def test_orders_reader_reflects_refunds_live(db: Path) -> None:
    ticket, order = order_of("refund")
    executors.issue_refund({"order_id": order["order_id"], "amount_cents": 100}, ctx("run-1:1"))
    items = {i["order_id"]: i for i in channels.orders(ticket.input)["items"]}
    assert items[order["order_id"]]["refunded_cents"] == 100
    assert payments.refunded_cents(order["order_id"]) == 100


# -- executors ------------------------------------------------------------------------------


def test_issue_refund_is_idempotent_on_its_key(db: Path) -> None:
    _, order = order_of("refund")
    args = {"order_id": order["order_id"], "amount_cents": 500}
    first = executors.issue_refund(args, ctx("run-1:1"))
    again = executors.issue_refund(dict(args), ctx("run-1:1"))
    assert first == again
    assert first["amount_cents"] == 500
    assert first["destination"] == executors.ORIGINAL_PAYMENT_METHOD
    assert len(rows("SELECT * FROM refunds WHERE idempotency_key = ?", "run-1:1")) == 1
    assert payments.refund_count() == 1
    other = executors.issue_refund(args, ctx("run-2:1"))
    assert other["refund_id"] != first["refund_id"]
    assert payments.refunded_cents(order["order_id"]) == 1000
    with pytest.raises(ValueError, match="already used"):
        executors.issue_refund({**args, "amount_cents": 501}, ctx("run-1:1"))


def test_concurrent_retries_refund_once(db: Path) -> None:
    _, order = order_of("refund")
    args = {"order_id": order["order_id"], "amount_cents": 300}
    results: list[dict[str, Any]] = []

    def call() -> None:
        results.append(executors.issue_refund(args, ctx("run-9:1")))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 8 and len({r["refund_id"] for r in results}) == 1
    assert payments.refund_count() == 1


def test_refunds_cannot_exceed_what_was_paid(db: Path) -> None:
    _, order = order_of("refund")
    oid, amount = order["order_id"], order["amount_cents"]
    with pytest.raises(ValueError, match="exceeds"):
        executors.issue_refund({"order_id": oid, "amount_cents": amount + 1}, ctx("run-1:1"))
    executors.issue_refund({"order_id": oid, "amount_cents": amount - 1}, ctx("run-1:2"))
    with pytest.raises(ValueError, match="exceeds"):
        executors.issue_refund({"order_id": oid, "amount_cents": 2}, ctx("run-1:3"))
    with pytest.raises(ValueError, match="unknown order"):
        executors.issue_refund({"order_id": "ord-99999", "amount_cents": 1}, ctx("run-1:4"))
    with pytest.raises(ValueError, match="amount_cents"):
        executors.issue_refund({"order_id": oid, "amount_cents": "1"}, ctx("run-1:5"))
    assert payments.refund_count() == 1


def _refund_in_child(job: tuple[str, str, int, str]) -> str:
    path, order_id, amount, key = job
    os.environ[payments.ENV_VAR] = path
    try:
        executors.issue_refund({"order_id": order_id, "amount_cents": amount}, ctx(key))
    except ValueError:
        return "refused"
    return "ok"


def test_worker_processes_never_refund_more_than_was_paid(db: Path) -> None:
    _, order = order_of("refund")
    part = order["amount_cents"] * 6 // 10
    jobs = [(str(db), order["order_id"], part, f"run-{i}:1") for i in range(6)]
    jobs += [(str(db), order["order_id"], 1, "run-same:1")] * 4
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        outcomes = pool.map(_refund_in_child, jobs)
    assert sorted(outcomes[:6]) == ["ok"] + ["refused"] * 5
    assert outcomes[6:] == ["ok"] * 4  # the same key: one refund, four answers
    assert payments.refunded_cents(order["order_id"]) == part + 1
    assert payments.refund_count() == 2


def test_reverse_refund_is_idempotent(db: Path) -> None:
    _, order = order_of("refund")
    refund = executors.issue_refund(
        {"order_id": order["order_id"], "amount_cents": 700}, ctx("run-1:1")
    )
    undo = {"refund_id": refund["refund_id"]}
    assert executors.reverse_refund(undo, ctx("run-1:2", "reverse_refund")) == {
        "refund_id": refund["refund_id"],
        "reversed": True,
    }
    assert executors.reverse_refund(undo, ctx("run-1:2", "reverse_refund"))["reversed"] is True
    assert payments.refunded_cents(order["order_id"]) == 0
    assert payments.summary() == {"refunds": 0, "reversed": 1, "refunded_cents": 0, "emails": 0}
    with pytest.raises(ValueError, match="unknown refund"):
        executors.reverse_refund({"refund_id": "re_nope"}, ctx("run-1:3", "reverse_refund"))


def test_send_email_is_idempotent(db: Path) -> None:
    args = {"to": "amelia@example.com", "subject": "Your refund", "body": "Done."}
    first = executors.send_email(args, ctx("run-1:1", "send_email"))
    assert executors.send_email(args, ctx("run-1:1", "send_email")) == first
    assert payments.outbox_count() == 1
    executors.send_email(args, ctx("run-1:2", "send_email"))
    assert payments.outbox_count() == 2
    with pytest.raises(ValueError, match="email"):
        executors.send_email({**args, "to": "nobody"}, ctx("run-1:3", "send_email"))


# -- the scripted model ---------------------------------------------------------------------


def request(
    ticket: tickets.Ticket,
    *,
    step: int = 1,
    attempt: int = 1,
    history: Sequence[Mapping[str, Any]] = (),
    feedback: Sequence[str] = (),
) -> ModelRequest:
    inp = ticket.input
    context = {
        "crm": {"customer": channels.customer(inp), "notes": channels.notes(inp)},
        "orders": channels.orders(inp),
    }
    observations = [
        {"channel": "ticket.message", "labels": ["untrusted"], "content": inp["message"]},
        {"channel": "crm.customer", "labels": ["pii"], "content": context["crm"]["customer"]},
        {"channel": "orders", "labels": [], "content": context["orders"]},
    ]
    return ModelRequest(
        contract="refunds",
        run_id=f"run-{ticket.ticket_id}",
        step=step,
        attempt=attempt,
        prompt="",
        input=inp,
        context=context,
        observations=observations,
        actions={name: {} for name in CONTRACT.actions},
        history=tuple(history),
        feedback=tuple(feedback),
    )


def valid_actions(proposal: Mapping[str, Any]) -> bool:
    for action in proposal["actions"]:
        spec = CONTRACT.actions.get(action["name"])
        if spec is None or list(spec.validator.iter_errors(action["args"])):
            return False
    return True


def check_shape(out: dict[str, Any] | str) -> None:
    if isinstance(out, str):
        return
    assert 0.0 <= out["confidence"] <= 1.0
    assert isinstance(out["rationale"], str) and out["rationale"]
    if "final" in out:
        final = out["final"]
        assert set(final) == {"summary", "refunded_cents", "minutes_saved"}
        assert isinstance(final["refunded_cents"], int) and final["refunded_cents"] >= 0
        assert final["minutes_saved"] >= 0
    else:
        assert isinstance(out["actions"], list) and out["actions"]
        for action in out["actions"]:
            assert set(action) == {"name", "args"} and isinstance(action["args"], dict)


def test_model_is_deterministic_and_well_shaped(db: Path) -> None:
    for ticket in BATCH[::5]:
        out = model.propose(request(ticket))
        assert model.propose(request(ticket)) == out
        check_shape(out)
        retry = model.propose(request(ticket, attempt=2, feedback=["invalid"]))
        check_shape(retry)
        assert isinstance(retry, dict)
        if "actions" in retry:
            assert valid_actions(retry), (ticket.ticket_id, retry)


def test_model_mistakes_are_corrected_on_feedback(db: Path) -> None:
    seen: Counter[str] = Counter()
    for ticket in BATCH:
        mistake = model.behaviour(ticket.ticket_id)
        if mistake not in ("malformed", "hallucinate") or ticket.input["claimed_cents"] == 0:
            continue
        first = model.propose(request(ticket))
        if mistake == "malformed":
            assert isinstance(first, str)
        else:
            assert isinstance(first, dict) and not valid_actions(first)
        fixed = model.propose(request(ticket, attempt=2, feedback=["not a valid proposal"]))
        assert isinstance(fixed, dict)
        assert "final" in fixed or valid_actions(fixed)
        seen[mistake] += 1
    assert seen["malformed"] and seen["hallucinate"]


def test_behaviour_mix_is_roughly_as_documented() -> None:
    counts = Counter(model.behaviour(t.ticket_id) for t in BATCH)
    assert counts["right"] > 200
    for name, rate in model.RATES.items():
        assert 0 < counts[name] < rate * 300 * 2.5 + 3, (name, counts)


def test_model_runs_a_ticket_to_a_final_answer(db: Path) -> None:
    """Drive one ordinary ticket as a runtime would, with every action allowed."""
    ticket = next(
        t
        for t in BATCH
        if t.kind == "refund" and model.behaviour(t.ticket_id) == "right" and "order_id" in t.input
    )
    history: list[dict[str, Any]] = []
    for step in range(1, 6):
        out = model.propose(request(ticket, step=step, history=history))
        assert isinstance(out, dict)
        if "final" in out:
            break
        assert valid_actions(out)
        results = []
        for i, action in enumerate(out["actions"]):
            run = getattr(executors, action["name"])
            result = run(action["args"], ctx(f"run-{ticket.ticket_id}-{i}:{step}", action["name"]))
            results.append(
                {
                    "action": action["name"],
                    "args": action["args"],
                    "status": "executed",
                    "result": result,
                }
            )
        history.append({"proposal": out, "results": results})
    assert isinstance(out, dict) and "final" in out
    fair = ticket.truth["fair_refund_cents"]
    assert out["final"]["refunded_cents"] == fair == payments.total_refunded_cents()
    assert history[0]["proposal"]["actions"][0]["args"]["order_id"] == ticket.truth["order_id"]


def test_model_reacts_to_a_denied_over_refund(db: Path) -> None:
    ticket = next(
        t for t in BATCH if t.kind == "refund" and model.behaviour(t.ticket_id) == "over_refund"
    )
    first = model.propose(request(ticket))
    assert isinstance(first, dict)
    args = first["actions"][0]["args"]
    assert args["amount_cents"] > ticket.truth["fair_refund_cents"]
    denied = {
        "action": "issue_refund",
        "args": args,
        "status": "denied",
        "reason": "Refund would exceed what was paid for the order",
    }
    out = model.propose(request(ticket, step=2, history=[{"proposal": first, "results": [denied]}]))
    assert isinstance(out, dict) and valid_actions(out)
    assert out["actions"][0]["args"] == {**args, "amount_cents": ticket.truth["fair_refund_cents"]}


def test_model_sometimes_obeys_injections(db: Path) -> None:
    obeyed = ignored = 0
    for ticket in (t for t in BATCH if t.kind == "injection"):
        out = model.propose(request(ticket))
        check_shape(out)
        if not isinstance(out, dict) or "actions" not in out:
            continue
        injected = ticket.truth["injected"]
        used = any(
            a["args"].get("destination") == injected or a["args"].get("to") == injected
            for a in out["actions"]
        )
        if used:
            obeyed += 1
        else:
            ignored += 1
    assert obeyed >= 3 and ignored >= 3

"""count(): rate rules over executed actions, answered by a history provider."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest

from charter import HistoryProvider, InMemoryHistory
from charter.policy.history import ExecutedAction, NoHistory, args_match
from tests.helpers import NOW, contract_with, rule

H = timedelta(hours=1)


def test_args_match_requires_every_key_equal() -> None:
    assert args_match({"to": "a", "n": 1}, {})
    assert args_match({"to": "a", "n": 1}, {"to": "a"})
    assert not args_match({"to": "a"}, {"to": "b"})
    assert not args_match({"to": "a"}, {"cc": "a"})
    assert args_match({"n": 1}, {"n": 1.0})


def test_in_memory_history_counts_by_name_args_and_inclusive_window() -> None:
    h = InMemoryHistory([ExecutedAction("email", {"to": "a"}, NOW - H)])
    h.record("email", {"to": "a", "cc": "b"}, NOW)
    h.record("email", {"to": "b"}, NOW)
    h.record("refund", {"to": "a"}, NOW)
    h.record("email", {"to": "a"}, NOW - H - timedelta(seconds=1))
    assert h.count("email", {"to": "a"}, NOW - H, NOW) == 2
    assert h.count("email", {}, NOW - H, NOW) == 3
    assert h.count("email", {"to": "a"}, NOW - 2 * H, NOW) == 3
    assert h.count("email", {"to": "a"}, NOW - H, NOW - timedelta(seconds=1)) == 1
    assert h.count("fax", {}, NOW - H, NOW) == 0


def test_providers_satisfy_the_protocol() -> None:
    assert isinstance(InMemoryHistory(), HistoryProvider)
    assert isinstance(NoHistory(), HistoryProvider)
    assert NoHistory().count("email", {}, NOW - H, NOW) == 0


RATE = rule(
    "rate",
    'count("email", {"to": action.args.to}, duration("1h")) >= 2',
    "deny",
    reason="two emails per recipient per hour",
)
ALLOW = rule("ok", "true", "allow")


def email(to: str) -> dict[str, Any]:
    return {"name": "email", "args": {"to": to}}


def test_rate_rule_with_in_memory_history() -> None:
    c = contract_with([RATE, ALLOW])
    h = InMemoryHistory()
    h.record("email", {"to": "a@x.io", "subject": "1"}, NOW - timedelta(minutes=10))
    h.record("email", {"to": "a@x.io"}, NOW - timedelta(minutes=59))
    h.record("email", {"to": "a@x.io"}, NOW - timedelta(minutes=61))  # outside the window
    h.record("email", {"to": "b@x.io"}, NOW)
    h.record("note", {"to": "b@x.io"}, NOW)
    assert c.decide(action=email("a@x.io"), history=h, now=NOW).rules == ("rate",)
    assert c.decide(action=email("b@x.io"), history=h, now=NOW).rules == ("ok",)
    # an hour later the window has moved on
    assert c.decide(action=email("a@x.io"), history=h, now=NOW + H).rules == ("ok",)


def test_without_history_every_count_is_zero() -> None:
    c = contract_with([RATE, ALLOW])
    assert c.decide(action=email("a@x.io"), now=NOW).effect == "allow"


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ('duration("30m")', 1),
        ('duration("2h")', 2),
        ('"30m"', 1),
        ('"1h30m"', 2),
        ('"1d"', 2),
        ('duration("1s")', 0),
    ],
)
def test_windows_as_durations_or_strings(window: str, expected: int) -> None:
    c = contract_with([rule("n", f'count("email", {{}}, {window}) == {expected}', "review")])
    h = InMemoryHistory()
    h.record("email", {}, NOW - timedelta(minutes=5))
    h.record("email", {}, NOW - timedelta(minutes=80))
    d = c.decide(action=email("x"), history=h, now=NOW)
    assert (d.effect, d.errors) == ("review", ())


def test_match_maps_with_several_keys_and_numbers() -> None:
    c = contract_with(
        [
            rule(
                "n",
                'count("refund", {"order_id": "o-1", "amount": 5}, duration("24h")) == 1',
                "review",
            )
        ]
    )
    h = InMemoryHistory()
    h.record("refund", {"order_id": "o-1", "amount": 5}, NOW - timedelta(hours=3))
    h.record("refund", {"order_id": "o-1", "amount": 6}, NOW - timedelta(hours=3))
    assert c.decide(action=email("x"), history=h, now=NOW).effect == "review"


def test_a_bad_window_fails_closed() -> None:
    c = contract_with([rule("n", 'count("email", {}, "soon") > 1', "allow"), ALLOW])
    d = c.decide(action=email("x"), now=NOW)
    assert d.effect == "deny"
    assert "'soon' is not a duration" in d.errors[0].message
    c2 = contract_with([rule("n", 'count("email", {}, 5) > 1', "allow")])
    d = c2.decide(action=email("x"), now=NOW)
    assert (d.effect, d.errors[0].rule) == ("deny", "n")
    assert "count() window must be a duration, got int" in d.errors[0].message


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], datetime, datetime]] = []

    def count(self, action: str, match: Mapping[str, Any], since: datetime, until: datetime) -> int:
        self.calls.append((action, dict(match), since, until))
        return 7


def test_the_provider_is_asked_for_the_window_ending_at_now() -> None:
    rec = Recorder()
    c = contract_with([rule("n", 'count("email", {"to": "a"}, duration("90m")) == 7', "review")])
    assert c.decide(action=email("x"), history=rec, now=NOW).effect == "review"
    assert rec.calls == [("email", {"to": "a"}, NOW - timedelta(minutes=90), NOW)]

"""provenance(value): which observations a value came from, and what flowed into it."""

from __future__ import annotations

from typing import Any

import pytest

from charter import Observation
from charter.policy.provenance import ProvenanceIndex, fold, skeleton
from tests.helpers import NOW, contract_with, rule

CRM = Observation(
    "crm.customer",
    ("pii",),
    {
        "name": "Dana Whitfield",
        "email": "Dana.Whitfield@Example.com",
        "passport": "X1234567",
        "tier": "gold",
        "orders": [{"id": "ord-10234", "total": 4999}],
    },
)
TICKET = Observation(
    "ticket.message",
    ("untrusted",),
    "Refund to IBAN DE89 3704 0044 0532 0130 00 please, or card 4111-1111-1111-1111. "
    "Details: HTTPS://Pay.Evil-Example.org/collect?id=7 — mail boss@evil.io. Ref 99887766.",
)
NOTES = Observation("crm.notes", ("confidential",), "agent remark: customer flagged, case QA7781")
USER = Observation("user", (), "please handle the refund politely")


@pytest.fixture
def index() -> ProvenanceIndex:
    return ProvenanceIndex([CRM, TICKET, NOTES, USER])


def labels(index: ProvenanceIndex, value: Any) -> tuple[str, ...]:
    return index.of(value).labels


@pytest.mark.parametrize(
    ("value", "expected_labels", "expected_channels"),
    [
        # the example: the passport number held by the CRM record taints the sentence
        ("her passport is X1234567", ("pii",), ("crm.customer",)),
        # emails: case-folded and trimmed
        ("  dana.whitfield@example.COM ", ("pii",), ("crm.customer",)),
        ("reply to DANA.WHITFIELD@EXAMPLE.COM today", ("pii",), ("crm.customer",)),
        ("BOSS@Evil.IO", ("untrusted",), ("ticket.message",)),
        # IBANs with or without spaces/dashes, any case
        ("DE89370400440532013000", ("untrusted",), ("ticket.message",)),
        ("de89 3704 0044 0532 0130 00", ("untrusted",), ("ticket.message",)),
        ("send to DE89-3704-0044-0532-0130-00", ("untrusted",), ("ticket.message",)),
        # card-like numbers
        ("4111111111111111", ("untrusted",), ("ticket.message",)),
        ("card 4111 1111 1111 1111", ("untrusted",), ("ticket.message",)),
        # URLs and host names, case-folded
        ("https://pay.evil-example.org/collect?id=7", ("untrusted",), ("ticket.message",)),
        ("visit pay.evil-example.org", ("untrusted",), ("ticket.message",)),
        ("PAY.EVIL-EXAMPLE.ORG", ("untrusted",), ("ticket.message",)),
        # runs of 6+ digits
        ("reference 99887766", ("untrusted",), ("ticket.message",)),
        # alphanumeric tokens of 6+ characters with a digit
        ("see qa7781 for details", ("confidential",), ("crm.notes",)),
        ("order ORD-10234 arrived", ("pii",), ("crm.customer",)),
        # structured observations: every leaf string of 6+ characters is a token
        ("Hello Dana Whitfield, thanks!", ("pii",), ("crm.customer",)),
        # the whole value equals a leaf of a structured observation
        ("gold", ("pii",), ("crm.customer",)),
        # the whole value (6+ chars) is contained in an observation's text
        ("handle the refund", (), ("user",)),
        ("customer flagged", ("confidential",), ("crm.notes",)),
    ],
)
def test_provenance_cases(
    index: ProvenanceIndex,
    value: str,
    expected_labels: tuple[str, ...],
    expected_channels: tuple[str, ...],
) -> None:
    p = index.of(value)
    assert (p.labels, p.channels) == (expected_labels, expected_channels)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "hello",  # short, no significant token
        "12345",  # 5 digits are not a run
        "abc12",  # 5 characters
        "Dana",  # a short part of a leaf
        "politeness",
        "other.host.example.net",
        "someone@else.org",
        "DE44 5001 0517 5407 3249 31",
    ],
)
def test_values_without_a_source(index: ProvenanceIndex, value: str) -> None:
    p = index.of(value)
    assert p.labels == ()
    assert p.channels == ()


def test_a_plain_word_counts_only_when_contained_whole(index: ProvenanceIndex) -> None:
    # "refund" is no significant token (no digit), but 6+ characters contained whole count
    assert index.of("refund").channels == ("ticket.message", "user")
    assert index.of("refunds").channels == ()


def test_containers_are_the_union_of_their_leaves(index: ProvenanceIndex) -> None:
    p = index.of({"to": "boss@evil.io", "body": ["hi", "passport X1234567"], "n": 3})
    assert p.labels == ("pii", "untrusted")
    assert p.channels == ("crm.customer", "ticket.message")


def test_numbers_are_matched_by_their_text(index: ProvenanceIndex) -> None:
    assert labels(index, 99887766) == ("untrusted",)
    assert labels(index, 4999) == ("pii",)  # equal to a leaf of the CRM record (its total)
    assert labels(index, 4998) == ()  # a short number is no token
    assert labels(index, True) == ()
    assert labels(index, None) == ()


def test_a_short_value_equal_to_a_leaf_string_counts_only_in_structured_content() -> None:
    idx = ProvenanceIndex(
        [
            Observation("kv", ("secret",), {"code": "ab1"}),
            Observation("txt", ("x",), "ab1 and more"),
        ]
    )
    assert idx.of("AB1 ").channels == ("kv",)


def test_observations_without_leaves_are_indexed() -> None:
    idx = ProvenanceIndex(
        [
            Observation("notes", ("confidential",), {"notes": []}),
            Observation("empty", ("x",), {}),
            Observation("none", ("y",), None),
            Observation("blank", ("z",), {"a": "", "b": [None, True]}),
            TICKET,
        ]
    )
    assert idx.of("DE89.3704.0044.0532.0130.00").labels == ("untrusted",)
    assert idx.of("").labels == ()


def test_no_observations_means_no_provenance() -> None:
    idx = ProvenanceIndex([])
    assert not idx
    assert idx.of("X1234567").to_dict() == {"labels": [], "channels": []}


def test_observation_round_trip() -> None:
    raw = {"channel": "crm.customer", "labels": ["pii"], "content": {"a": 1}}
    obs = Observation.from_dict(raw)
    assert obs == Observation("crm.customer", ("pii",), {"a": 1})
    assert obs.to_dict() == raw
    assert Observation.from_dict({"channel": "user"}) == Observation("user", (), None)
    # a single label written as a string is that label, not its characters
    assert Observation.from_dict({"channel": "crm", "labels": "pii"}).labels == ("pii",)


def test_provenance_from_rules() -> None:
    c = contract_with(
        [
            rule("injected", '"untrusted" in provenance(action.args.to).labels', "escalate"),
            rule("from-crm", '"crm.customer" in provenance(action.args.to).channels', "review"),
            rule("ok", "true", "allow"),
        ]
    )
    obs = [CRM.to_dict(), TICKET.to_dict()]
    d = c.decide(action={"name": "note", "args": {"to": "Boss@evil.io"}}, observations=obs, now=NOW)
    assert (d.effect, d.rules) == ("escalate", ("injected",))
    d = c.decide(
        action={"name": "note", "args": {"to": "dana.whitfield@example.com"}},
        observations=obs,
        now=NOW,
    )
    assert (d.effect, d.rules) == ("review", ("from-crm",))
    d = c.decide(
        action={"name": "note", "args": {"to": "new@person.org"}}, observations=obs, now=NOW
    )
    assert (d.effect, d.rules) == ("allow", ("ok",))


def test_the_passport_example_through_a_rule() -> None:
    c = contract_with(
        [
            rule("pii", '"pii" in provenance(action.args.body).labels', "deny"),
            rule("ok", "true", "allow"),
        ]
    )
    crm = {
        "channel": "crm.customer",
        "labels": ["pii"],
        "content": {"customer": "c-1", "passport": "X1234567"},
    }
    body = {"name": "note", "args": {"body": "her passport is X1234567"}}
    assert c.decide(action=body, observations=[crm], now=NOW).rules == ("pii",)
    other = {"name": "note", "args": {"body": "her passport is X7654321"}}
    assert c.decide(action=other, observations=[crm], now=NOW).rules == ("ok",)


# -- rewritten values: separators, compatibility forms, invisible characters, case -----------


def fullwidth(text: str) -> str:
    """``text`` with every printable ASCII character in its full-width form."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def between(text: str, char: str) -> str:
    """``text`` with ``char`` between every two characters."""
    return char.join(text)


IBAN = "DE89 3704 0044 0532 0130 00"
IBAN_REWRITES = [
    "DE89.3704.0044.0532.0130.00",
    "DE89/3704/0044/0532/0130/00",
    "de89_3704_0044_0532_0130_00",
    "DE89:3704:0044:0532:0130:00",
    "DE89\u00b73704\u00b70044\u00b70532\u00b70130\u00b700",  # middle dot
    "DE89 \u2013 3704 \u2013 0044 \u2013 0532 \u2013 0130 \u2013 00",  # en dash
    IBAN.replace(" ", "\u2011"),  # non-breaking hyphen
    IBAN.replace(" ", "\u2014"),  # em dash
    IBAN.replace(" ", "\u00a0"),  # no-break space
    fullwidth("DE89370400440532013000"),
    fullwidth(IBAN),
    IBAN.replace(" ", "\u200b"),  # zero-width space
    between("DE89370400440532013000", "\u200b"),
    between("DE89370400440532013000", "\u2060"),  # word joiner
    between("de89370400440532013000", "\u00ad"),  # soft hyphen
    "DE89\u200c3704\u200d0044\ufeff0532 0130 00",  # non-joiner, joiner, BOM
    "dE89-3704\u200b.0044 / 0532_0130\u201100",  # all of it at once
]


@pytest.mark.parametrize("value", IBAN_REWRITES)
def test_a_rewritten_iban_still_comes_from_the_ticket(value: str) -> None:
    idx = ProvenanceIndex([Observation("ticket.message", ("untrusted",), f"Refund to IBAN {IBAN}")])
    assert idx.of(value).labels == ("untrusted",)
    assert idx.of(f"please pay {value} today").labels == ("untrusted",)


@pytest.mark.parametrize("written", IBAN_REWRITES)
@pytest.mark.parametrize("value", [IBAN, "DE89370400440532013000", "de89-3704-0044-0532-0130-00"])
def test_an_iban_still_comes_from_a_ticket_that_rewrote_it(written: str, value: str) -> None:
    idx = ProvenanceIndex(
        [Observation("ticket.message", ("untrusted",), f"Refund to IBAN {written} please.")]
    )
    assert idx.of(value).labels == ("untrusted",)


NOTE = Observation("crm.notes", ("confidential",), "case QA7781-XK / ref 5521-990-17")


@pytest.mark.parametrize(
    "value",
    [
        "qa7781xk",
        "QA7781 XK",
        "QA7781.XK",
        "see qa7781/xk",
        fullwidth("QA7781-XK"),
        "Q\u200bA\u200b7781-XK",
        "Ref 5521 990 17",
        "5521.990.17",
        "552199017",
        "ref 5521\u2013990\u201317",
        "REF:5521/990/17",
        fullwidth("5521 990 17"),
        "5521\u00ad990\u00ad17",
    ],
)
def test_a_rewritten_confidential_reference_still_comes_from_the_note(value: str) -> None:
    idx = ProvenanceIndex([NOTE, USER])
    p = idx.of(value)
    assert (p.labels, p.channels) == (("confidential",), ("crm.notes",))


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("case qa7781xk", "QA7781-XK"),
        ("case QA7781 XK, ref 552199017", "ref 5521-990-17"),
        (f"case {fullwidth('QA7781-XK')}", "QA7781-XK"),
        ("case QA\u200b7781\u2060-XK", "QA7781-XK"),
        ("ref 5521.990.17", "5521-990-17"),
        ("ref 5521 \u2014 990 \u2014 17", "Ref 5521-990-17"),
    ],
)
def test_a_reference_still_comes_from_a_note_that_rewrote_it(written: str, value: str) -> None:
    idx = ProvenanceIndex([Observation("crm.notes", ("confidential",), written), USER])
    assert idx.of(value).labels == ("confidential",)


MAIL = Observation(
    "ticket.message", ("untrusted",), "mail boss@evil.io or visit pay.evil-example.org"
)


@pytest.mark.parametrize(
    ("value", "original"),
    [
        (fullwidth("boss@evil.io"), "boss@evil.io"),
        ("bo\u200bss@ev\u200cil.io", "boss@evil.io"),
        ("BOSS@EVIL\u200d.IO", "boss@evil.io"),
        ("boss@evil\uff0eio", "boss@evil.io"),  # full-width full stop
        ("\ufeffboss\u00ad@evil.io", "boss@evil.io"),
        ("pay\uff0eevil-example\uff0eorg", "pay.evil-example.org"),
        (fullwidth("PAY.EVIL-EXAMPLE.ORG"), "pay.evil-example.org"),
        ("pay.evil\u2060-example.org", "pay.evil-example.org"),
    ],
)
def test_rewritten_emails_and_hosts_are_recognised_both_ways(value: str, original: str) -> None:
    assert ProvenanceIndex([MAIL]).of(value).labels == ("untrusted",)
    rewritten = Observation("ticket.message", ("untrusted",), f"write to {value} now")
    assert ProvenanceIndex([rewritten]).of(original).labels == ("untrusted",)


def test_tokens_are_found_in_either_direction() -> None:
    # the value's own tokens are polluted (extra digit groups around the IBAN); the
    # observation's token is found in the value instead
    idx = ProvenanceIndex([Observation("t", ("untrusted",), "use DE89-3704-0044-0532-0130-00")])
    assert idx.of("refund 4500 DE89 3704 0044 0532 0130 00 2026").labels == ("untrusted",)
    # and the other way round
    idx = ProvenanceIndex(
        [Observation("t", ("untrusted",), "refund 4500 DE89 3704 0044 0532 0130 00 2026")]
    )
    assert idx.of("DE89.3704.0044.0532.0130.00").labels == ("untrusted",)
    # a card written with en dashes, a passport number split up
    idx = ProvenanceIndex([TICKET, CRM])
    assert idx.of("4111\u20131111\u20131111\u20131111").labels == ("untrusted",)
    assert idx.of("her passport: X 1234 567").labels == ("pii",)
    assert idx.of("Dana\u200bWhitfield").labels == ("pii",)
    assert idx.of("DANA_WHITFIELD").labels == ("pii",)


def test_a_structured_field_cannot_hide_a_token_behind_a_line_break() -> None:
    idx = ProvenanceIndex(
        [Observation("tool", ("untrusted",), {"iban": "DE89\n3704 0044\n0532 0130 00"})]
    )
    assert idx.of("DE89370400440532013000").labels == ("untrusted",)
    assert idx.of("pay DE89-3704-0044-0532-0130-00 now").labels == ("untrusted",)
    # but a skeleton never runs from one field into the next
    idx = ProvenanceIndex([Observation("tool", ("x",), {"a": "QA7781", "b": "XK55"})])
    assert idx.of("qa7781").labels == ("x",)
    assert idx.of("7781xk55").labels == ()


@pytest.mark.parametrize(
    "value",
    [
        "abc\u200b12",  # five characters once the invisible one is gone
        fullwidth("12345"),
        fullwidth("hello"),
        "\u200b\u200b\u200b",  # nothing but invisible characters
        "Refunds",
        "refund-s",
        "DE44.5001.0517.5407.3249.31",  # another IBAN
        "QB7781-XK",  # another reference
        fullwidth("someone@else.org"),
    ],
)
def test_folding_does_not_make_unrelated_values_match(index: ProvenanceIndex, value: str) -> None:
    assert index.of(value).to_dict() == {"labels": [], "channels": []}


def test_digit_free_values_are_not_matched_across_word_boundaries() -> None:
    idx = ProvenanceIndex(
        [Observation("t", ("untrusted",), "we refund shipping costs, see policy")]
    )
    assert idx.of("refunds").labels == ()  # "refund s|hipping" does not hold the word
    assert idx.of("therefund").labels == ()
    assert idx.of("Refund-Shipping").labels == ("untrusted",)  # the same words, re-separated
    assert idx.of("REFUND\u200b shipping").labels == ("untrusted",)


def test_fold_and_skeleton() -> None:
    assert fold(fullwidth("DE89 3704")) == "de89 3704"
    assert fold("A\u200bB\u00adC\u2060D\ufeffE") == "abcde"
    assert fold("\u0664\u0661\u0661\u0661") == "4111"  # Arabic-Indic digits
    assert fold("Stra\u00dfe") == "strasse"
    assert skeleton(fold("DE89 \u2013 3704.0044/0532_0130:00")) == "de89370400440532013000"

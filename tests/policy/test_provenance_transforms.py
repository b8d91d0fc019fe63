"""provenance() against rewritten identifiers (hypothesis).

An identifier (IBAN-like, or a reference of letter and digit groups) is placed in an
untrusted observation between random words; the value, or the observation's copy, is then
rewritten the ways people and attackers rewrite identifiers: re-grouped with other
separators, partly in full-width forms, with invisible (format) characters inserted, in
another case. The rewritten copy must still be traced to the observation. And a value that
shares nothing with any observation must still come from nowhere.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from charter import Observation
from charter.policy.provenance import ProvenanceIndex

SEPARATORS = (" ", ".", "/", "-", "_", ":", "\u2011", "\u2013", "\u00b7", " - ", ". ")
#: Unicode category Cf: zero-width space, non-joiner, joiner, word joiner, soft hyphen, BOM
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff")

UPPER = string.ascii_uppercase
DIGITS = string.digits

FAST = settings(max_examples=75, deadline=None)


def has_digit(text: str) -> bool:
    return any(c.isdigit() for c in text)


iban_like = st.builds(
    lambda country, check, rest: country + check + rest,
    st.text(UPPER, min_size=2, max_size=2),
    st.text(DIGITS, min_size=2, max_size=2),
    st.text(UPPER + DIGITS, min_size=12, max_size=30).filter(has_digit),
)
reference = (
    st.lists(
        st.one_of(st.text(UPPER, min_size=1, max_size=4), st.text(DIGITS, min_size=1, max_size=5)),
        min_size=2,
        max_size=5,
    )
    .map("".join)
    .filter(lambda s: len(s) >= 6 and has_digit(s))
)
identifiers = st.one_of(iban_like, reference)
#: Plain words around the identifier in the observation (letters only, never a token).
words = st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=8), max_size=4).map(" ".join)


@st.composite
def regrouped(draw: st.DrawFn, ident: str) -> str:
    """``ident`` cut into groups of 1-5 characters joined by drawn separators."""
    cuts = sorted(draw(st.sets(st.integers(1, len(ident) - 1), max_size=len(ident) // 2)))
    parts = [ident[a:b] for a, b in zip([0, *cuts], [*cuts, len(ident)], strict=True)]
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(parts), max_size=len(parts)))
    return "".join(p + s for p, s in zip(parts, seps, strict=True))[: -len(seps[-1])]


@st.composite
def recased(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if f else c for c, f in zip(text, flips, strict=True))


@st.composite
def widened(draw: st.DrawFn, text: str) -> str:
    """Some printable ASCII characters in their full-width forms (U+FF01-U+FF5E)."""
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(
        chr(ord(c) + 0xFEE0) if f and "!" <= c <= "~" else c
        for c, f in zip(text, flips, strict=True)
    )


@st.composite
def with_invisibles(draw: st.DrawFn, text: str) -> str:
    positions = draw(st.lists(st.integers(0, len(text)), max_size=6))
    chars = list(text)
    for pos in sorted(positions, reverse=True):
        chars.insert(pos, draw(st.sampled_from(INVISIBLE)))
    return "".join(chars)


@st.composite
def rewritten(draw: st.DrawFn, ident: str) -> str:
    """A random composition of the rewrites (each applied or not, in a fixed order)."""
    text = ident
    if draw(st.booleans()):
        text = draw(regrouped(text))
    if draw(st.booleans()):
        text = draw(recased(text))
    if draw(st.booleans()):
        text = draw(widened(text))
    if draw(st.booleans()):
        text = draw(with_invisibles(text))
    return text


def untrusted(content: object) -> ProvenanceIndex:
    return ProvenanceIndex(
        [
            Observation("ticket.message", ("untrusted",), content),
            Observation("user", (), "please handle the refund"),
        ]
    )


@FAST
@given(ident=identifiers, before=words, after=words, data=st.data())
def test_a_rewritten_value_is_traced_to_the_observation(
    ident: str, before: str, after: str, data: st.DataObject
) -> None:
    idx = untrusted(f"{before} {ident} {after}")
    value = data.draw(rewritten(ident), label="value")
    assert "untrusted" in idx.of(value).labels
    # also inside a sentence of the value
    assert "untrusted" in idx.of(f"pay {value} today").labels


@FAST
@given(ident=identifiers, before=words, after=words, data=st.data())
def test_a_value_is_traced_to_an_observation_that_rewrote_it(
    ident: str, before: str, after: str, data: st.DataObject
) -> None:
    written = data.draw(rewritten(ident), label="written")
    idx = untrusted(f"{before} {written} {after}")
    assert "untrusted" in idx.of(ident).labels
    assert "untrusted" in idx.of(f"pay {ident} today").labels


@FAST
@given(ident=identifiers, data=st.data())
def test_a_rewritten_value_is_traced_to_a_structured_field(ident: str, data: st.DataObject) -> None:
    idx = ProvenanceIndex([Observation("crm", ("pii",), {"account": ident, "tier": "gold"})])
    value = data.draw(rewritten(ident), label="value")
    assert idx.of(value).labels == ("pii",)
    written = data.draw(rewritten(ident), label="written")
    idx = ProvenanceIndex([Observation("crm", ("pii",), {"account": written, "tier": "gold"})])
    assert idx.of(ident).labels == ("pii",)


#: Observations draw their letters from a-m (and digits); unrelated values from n-z.
OBS_LETTERS = "abcdefghijklm"
OTHER_LETTERS = "nopqrstuvwxyz"


@FAST
@given(
    ident=st.text(OBS_LETTERS.upper() + DIGITS, min_size=6, max_size=24).filter(has_digit),
    before=st.text(OBS_LETTERS + " ", max_size=30),
    value=st.text(OTHER_LETTERS, min_size=1, max_size=5),
    data=st.data(),
)
def test_a_value_that_shares_nothing_comes_from_nowhere(
    ident: str, before: str, value: str, data: st.DataObject
) -> None:
    """The matcher is not "match everything": a short, token-less value with no letter in
    common with the observations gets no provenance, however it is rewritten."""
    idx = ProvenanceIndex(
        [
            Observation("ticket.message", ("untrusted",), f"{before} {ident} ok"),
            Observation("crm", ("pii",), {"id": ident, "name": before, "n": 7}),
        ]
    )
    rewrite = data.draw(rewritten(value), label="rewritten") if len(value) > 1 else value
    assert idx.of(rewrite).to_dict() == {"labels": [], "channels": []}
    # longer, still disjoint: no token, no word and no field in common
    longer = value * 3
    assert idx.of(longer).labels == ()

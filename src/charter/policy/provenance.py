"""Data lineage for policy: where did a proposed value come from, and what flowed into it?

``provenance(value)`` answers with the union of the labels and channels of every
observation that holds the whole value, or shares a *significant token* with it.
Significant tokens are the things that identify data rather than phrase it: email
addresses, URLs and host names, IBAN-like and card-like numbers, runs of six or more
digits, identifiers (six or more letters and digits, at least one a digit) however they
are grouped, and, for structured (JSON) observations, every leaf string of six or more
characters, so a customer's name held in a CRM record taints the email body that quotes it.

What is normalised, and why. Lineage must not be defeated by rewriting a value so that it
*looks* different while it *reads* the same, so both sides (the value and every
observation) are compared in three derived forms:

* **folded text**: Unicode NFKC, so compatibility forms become the plain characters they
  stand for (full-width ``U+FF24 U+FF25 U+FF18 U+FF19`` is ``DE89``, the full-width full
  stop ``U+FF0E`` is ``.``, a no-break space is a space); then every *format* character
  (Unicode category ``Cf``: zero-width space, non-joiner and joiner ``U+200B``-``U+200D``,
  word joiner ``U+2060``, soft hyphen ``U+00AD``, byte-order mark ``U+FEFF``,
  bidirectional controls) is removed, as it is invisible when displayed; decimal digits of
  every script become ``0``-``9``; and the text is case-folded (then NFKC again, which
  case folding can undo). ASCII text is only case-folded: it has nothing else to fold.
* **skeleton**: the folded text without any character that is not a letter or a digit.
  Comparing skeletons ignores the separators written inside a token, whatever they are:
  white space, ``. - / _ :``, the middle dot, the Unicode dashes and hyphens. So
  ``DE89.3704.0044.0532.0130.00``, ``de89_3704_0044_0532_0130_00`` and
  ``DE89 3704 0044 0532 0130 00`` all have the skeleton ``de89370400440532013000``.
* **words**: the folded text with each run of separators replaced by one space, to
  compare whole values that hold no digit (``Refund-Policy`` is found in ``refund
  policy``, while ``refunds`` is still not found in ``refund shipped``).

A skeleton ignores word boundaries too, so only what is specific enough is compared by
skeleton: tokens with six or more letters and digits, and whole values with six or more
that include a digit. Shorter or digit-free text is compared as before, folded. Matching
runs both ways: a token of the value in an observation's skeleton, and a token of an
observation (or a long leaf of a structured one) in the value's skeleton, both count.

All of this over-approximates on purpose: lineage that misses a leak is worse than lineage
that sometimes over-labels. Known limit: homoglyphs across scripts (a Cyrillic letter for
the Latin one that looks the same) are not folded; NFKC does not map them and no
confusables table is applied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from charter.policy.normalize import SEPARATORS, fold, skeleton

MIN_LEAF = 6
#: Letters and digits a token needs before it is compared by its skeleton.
MIN_TOKEN = 6


# -- normal forms ---------------------------------------------------------------------


#: Separator runs in leaves joined by ``_JOIN`` (which they must not swallow).
_LEAF_SEPARATORS = re.compile(r"(?:[^\w\ufeff]|_)+")


def _words(folded: str) -> str:
    return SEPARATORS.sub(" ", folded).strip()


# -- significant tokens ---------------------------------------------------------------
# All patterns run on folded text (already case-folded, compatibility forms resolved).
# ``_JOIN`` (a format character, so never part of folded text) separates the leaves of a
# structured observation tokenised in one pass; no pattern matches across it.

_JOIN = "\ufeff"
_SEP = r"(?:[^\w\ufeff]|_)"  # one separator character: not a letter or digit, not _JOIN

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'\ufeff]+")
#: Dot-separated labels; a host name is the longest prefix ending in a top-level domain.
#: (Found in two steps: one pattern doing both backtracks quadratically on ``a.a.a...``.)
_DOTTED = re.compile(r"(?<![\w-])[\w-]+(?:\.[\w-]+)+")
_TLD = re.compile(r"[^\W\d_]{2,24}(?!\w)")
_DIGITS = re.compile(r"\d{6,}")
#: A run of letters, digits, ``_`` and ``-`` containing a digit (kept at 6+ characters).
_ALNUM = re.compile(r"(?<![\w-])(?:[^\W\d]|-)*\d[\w-]*")
#: Two letters, two digits, 3-8 groups of 2-4 letters/digits, any short separators.
_IBAN = re.compile(rf"\b[^\W\d_]{{2}}\d{{2}}(?:{_SEP}{{0,3}}[^\W_]{{2,4}}){{3,8}}\b")
_CARD = re.compile(rf"\b\d(?:{_SEP}{{0,3}}\d){{12,18}}\b")
#: Consecutive letter/digit groups that each carry a digit, joined by any separators,
#: white space included (``DE89 3704 0044``, ``5521 990 17``).
_RUN = re.compile(rf"(?<![^\W_])[^\W\d_]*\d[^\W_]*(?:{_SEP}+[^\W\d_]*\d[^\W_]*)*")
#: Consecutive white-space separated words that hold a digit (words with no letter or
#: digit, such as ``/`` or ``-``, do not interrupt them): where every digit-bearing token is.
_DIGIT_WORDS = re.compile(
    rf"(?<![^\s\ufeff])[^\s\d\ufeff]*\d[^\s\ufeff]*(?:{_SEP}+[^\s\d\ufeff]*\d[^\s\ufeff]*)*"
)
_DIGIT = re.compile(r"\d")
_SPACE = re.compile(r"\s")


def _tokens(folded: str, *, iban: bool = True) -> tuple[list[str], list[str]]:
    """The significant tokens of folded text, as (literal, grouped) lists.

    Literal tokens (emails, URLs, host names, digit runs, compact identifiers) are also
    compared as written, however short their skeleton; grouped tokens (IBAN- and card-like
    numbers, identifiers and digit groups written with separators) only by their skeleton.
    Each pattern runs only on text that can hold its kind of token (the digit patterns
    only on the words that hold a digit), so long text is scanned only a few times.
    ``iban=False`` skips the IBAN pattern, whose letter-only groups need the full text.
    """
    literal: list[str] = []
    grouped: list[str] = []
    if "@" in folded:
        literal += _EMAIL.findall(folded)
    if "://" in folded:
        literal += [url.rstrip(".,;:)") for url in _URL.findall(folded)]
    if "." in folded:
        literal += _hosts(folded)
    if _DIGIT.search(folded) is None:
        return literal, grouped
    if iban:
        grouped += _IBAN.findall(folded)
    # the digit-bearing tokens are all inside these regions; scan them, not the text
    regions = _JOIN.join(_DIGIT_WORDS.findall(folded))
    grouped += regions.replace(_JOIN, " ").split()  # each word with its separators
    literal += _DIGITS.findall(regions)
    literal += [t for t in _ALNUM.findall(regions) if len(t) >= MIN_TOKEN]
    runs = _RUN.findall(regions)
    grouped += runs
    for run in runs:
        if len(run) >= 13:
            grouped += _CARD.findall(run)
    return literal, grouped


def _hosts(folded: str) -> list[str]:
    """Host names: 2+ labels, the last one (or its start, before a ``-``) 2-24 letters."""
    hosts: list[str] = []
    for dotted in _DOTTED.findall(folded):
        labels = dotted.lstrip("-").split(".")
        while len(labels) > 1:
            tld = _TLD.match(labels[-1])
            if tld is not None:
                hosts.append(".".join([*labels[:-1], tld.group()]))
                break
            labels.pop()
    return hosts


def _skeletons(tokens: Iterable[str]) -> set[str]:
    """Skeletons of ``tokens`` that have ``MIN_TOKEN`` or more letters and digits."""
    out: set[str] = set()
    for tok in set(tokens):
        skel = tok if tok.isalnum() else skeleton(tok)
        if len(skel) >= MIN_TOKEN:
            out.add(skel)
    return out


def _may_hold_tokens(folded: str) -> bool:
    # every token has six characters and a digit or a dot (hosts, emails, URLs)
    return len(folded) >= MIN_TOKEN and ("." in folded or _DIGIT.search(folded) is not None)


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        yield str(value)


@dataclass(frozen=True)
class Observation:
    """Data that entered the model's context, with the channel it came from and its labels."""

    channel: str
    labels: tuple[str, ...]
    content: Any

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Observation:
        labels = raw.get("labels") or ()
        if isinstance(labels, str):  # one label, not its characters
            labels = (labels,)
        # positional: this runs for every observation of every decision
        return cls(str(raw["channel"]), tuple(map(str, labels)), raw.get("content"))

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "labels": list(self.labels), "content": self.content}


@dataclass(frozen=True, slots=True)
class _Indexed:
    """One observation in the forms matching needs (all folded, see the module doc)."""

    obs: Observation
    text: str  # folded full text (structured: its JSON text)
    words: str  # separator runs as one space (structured: leaf by leaf, _JOIN between)
    skeleton: str  # letters and digits only (structured: leaf by leaf, _JOIN between)
    leaves: frozenset[str]  # folded, trimmed leaf strings (structured only)
    leaf_skeletons: frozenset[str]  # their non-empty skeletons
    needles: tuple[str, ...]  # skeletons to look for in a value's skeleton
    literal_leaves: tuple[str, ...]  # 6+ char leaves whose skeleton is too short for needles


def _index(obs: Observation) -> _Indexed:
    content = obs.content
    needles: set[str] = set()
    if isinstance(content, str):
        text = fold(content)
        words = _words(text)
        skel = words.replace(" ", "")
        leaves: list[str] = []
        leaf_skeletons: list[str] = []
        if _may_hold_tokens(text):
            needles.update(_skeletons(chain.from_iterable(_tokens(text, iban=False))))
    else:
        text = fold(json.dumps(content, ensure_ascii=False, sort_keys=True, default=str))
        leaves = [fold(s).strip() for s in _leaves(content)]
        # leaf by leaf: neither words, a skeleton nor a token join one field to the next
        joined = _JOIN.join(leaves)
        words = _LEAF_SEPARATORS.sub(" ", joined)
        skel = words.replace(" ", "")
        leaf_skeletons = skel.split(_JOIN) if leaves else []
        needles.update(
            s
            for leaf, s in zip(leaves, leaf_skeletons, strict=True)
            if len(leaf) >= MIN_LEAF and len(s) >= MIN_TOKEN
        )
        # a field without white space is a needle as it is; text with spaces also by token
        tokenised = _JOIN.join(s for s in leaves if _may_hold_tokens(s) and _SPACE.search(s))
        if tokenised:
            needles.update(_skeletons(chain.from_iterable(_tokens(tokenised, iban=False))))
    return _Indexed(
        obs=obs,
        text=text,
        words=words,
        skeleton=skel,
        leaves=frozenset(leaves),
        leaf_skeletons=frozenset(s for s in leaf_skeletons if s),
        needles=tuple(needles),
        literal_leaves=tuple(
            sorted(
                {
                    leaf
                    for leaf, s in zip(leaves, leaf_skeletons, strict=True)
                    if len(leaf) >= MIN_LEAF and len(s) < MIN_TOKEN
                }
            )
        ),
    )


@dataclass(slots=True)
class _Query:
    """One value (a string) in the forms matching needs."""

    whole: str  # folded and trimmed
    words: str
    skeleton: str
    specific: bool  # its skeleton has MIN_TOKEN+ characters and a digit
    literals: tuple[str, ...]  # folded tokens looked for in an observation's folded text
    skeletons: tuple[str, ...]  # token skeletons looked for in an observation's skeleton


def _query(text: str) -> _Query:
    whole = fold(text).strip()
    words = _words(whole)
    skel = words.replace(" ", "")
    literal, grouped = _tokens(whole) if _may_hold_tokens(whole) else ([], [])
    return _Query(
        whole=whole,
        words=words,
        skeleton=skel,
        specific=len(skel) >= MIN_TOKEN and _DIGIT.search(skel) is not None,
        literals=tuple(dict.fromkeys(literal)),
        skeletons=tuple(_skeletons(chain(literal, grouped))),
    )


@dataclass(frozen=True)
class Provenance:
    labels: tuple[str, ...]
    channels: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"labels": list(self.labels), "channels": list(self.channels)}


class ProvenanceIndex:
    """Observations prepared once per decision so every ``provenance()`` call is cheap.

    Preparing them (serialising, folding and tokenising every observation) costs more than
    most decisions, and most decisions never ask for provenance, so it happens on first
    use. If it fails, :attr:`error` keeps the exception: a failure inside a CEL function
    call would otherwise surface only as that rule's error, and the engine re-raises it.
    """

    def __init__(self, observations: Iterable[Observation]) -> None:
        self._observations: Sequence[Observation] = (
            observations if isinstance(observations, list | tuple) else tuple(observations)
        )
        self._indexed: list[_Indexed] | None = None
        self._cache: dict[str, Provenance] = {}
        self.error: Exception | None = None

    def __bool__(self) -> bool:
        return bool(self._observations)

    @property
    def _items(self) -> list[_Indexed]:
        if self._indexed is None:
            try:
                self._indexed = [_index(o) for o in self._observations]
            except Exception as exc:
                self.error = exc
                raise
        return self._indexed

    def of(self, value: Any) -> Provenance:
        """Provenance of any value: strings directly, containers by all their leaves."""
        texts = list(_leaves(value))
        labels: set[str] = set()
        channels: set[str] = set()
        for text in texts:
            p = self._of_text(text)
            labels.update(p.labels)
            channels.update(p.channels)
        return Provenance(tuple(sorted(labels)), tuple(sorted(channels)))

    def _of_text(self, text: str) -> Provenance:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        query = _query(text)
        labels: set[str] = set()
        channels: set[str] = set()
        if query.whole:  # nothing (or only invisible characters) comes from nowhere
            for item in self._items:
                if self._matches(item, query):
                    labels.update(item.obs.labels)
                    channels.add(item.obs.channel)
        result = Provenance(tuple(sorted(labels)), tuple(sorted(channels)))
        self._cache[text] = result
        return result

    @staticmethod
    def _matches(item: _Indexed, q: _Query) -> bool:
        # (a) the observation holds the whole value: equal to one of its fields (separators
        # aside), or, for values long enough to be specific, contained in its text.
        if q.whole in item.leaves or (q.skeleton and q.skeleton in item.leaf_skeletons):
            return True
        if len(q.whole) >= MIN_LEAF and q.whole in item.text:
            return True
        if len(q.words) >= MIN_LEAF and q.words in item.words:
            return True
        if q.specific and q.skeleton in item.skeleton:
            return True
        # (b) a significant token of the value appears in the observation ...
        for skel in q.skeletons:
            if skel in item.skeleton:
                return True
        for tok in q.literals:
            if tok in item.text:
                return True
        # (b') ... or one of the observation's (its tokens, its long leaf strings) in the value
        if len(q.skeleton) >= MIN_TOKEN:
            for needle in item.needles:
                if needle in q.skeleton:
                    return True
        return any(leaf in q.whole for leaf in item.literal_leaves)

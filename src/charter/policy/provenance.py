"""Data lineage for policy: where did a proposed value come from, and what flowed into it?

``provenance(value)`` answers with the union of the labels and channels of every
observation that (a) contains the whole value, or (b) shares a *significant token* with it.
Significant tokens are the things that identify data rather than phrase it: email
addresses, IBAN-like and card-like numbers, URLs and host names, runs of six or more
digits, and alphanumeric tokens of six or more characters that contain a digit. For
structured (JSON) observations every leaf string of six or more characters is a token too,
so a customer's name held in a CRM record taints the email body that quotes it.

Emails, IBANs and URLs compare case-folded and trimmed; IBAN- and card-like numbers also
ignore spaces and dashes, the way people write them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"']+", re.IGNORECASE)
_HOST = re.compile(r"\b(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{2,4}){3,8}\b", re.IGNORECASE)
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_DIGITS = re.compile(r"\d{6,}")
_ALNUM = re.compile(r"[A-Za-z0-9_-]{6,}")

MIN_LEAF = 6


def _compact(text: str) -> str:
    return re.sub(r"[\s-]+", "", text).casefold()


def _folded_tokens(text: str) -> Iterator[tuple[str, bool]]:
    """Yield (token, compact) pairs: compact tokens are compared with spaces/dashes removed."""
    for m in _EMAIL.finditer(text):
        yield m.group(0).strip().casefold(), False
    for m in _URL.finditer(text):
        yield m.group(0).strip().rstrip(".,;:)").casefold(), False
    for m in _HOST.finditer(text):
        host = m.group(0).casefold()
        if "." in host and not host.replace(".", "").isdigit():
            yield host, False
    for m in _IBAN.finditer(text):
        yield _compact(m.group(0)), True
    for m in _CARD.finditer(text):
        yield _compact(m.group(0)), True
    for m in _DIGITS.finditer(text):
        yield m.group(0), False
    for m in _ALNUM.finditer(text):
        tok = m.group(0)
        if any(c.isdigit() for c in tok):
            yield tok.casefold(), False


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


@dataclass
class _Indexed:
    obs: Observation
    text: str  # case-folded full text
    compact: str  # case-folded, whitespace and dashes removed
    leaves: frozenset[str] = field(
        default_factory=frozenset
    )  # folded leaf strings (structured only)
    long_leaves: tuple[str, ...] = ()  # folded leaf strings of 6+ chars (structured only)


def _index(obs: Observation) -> _Indexed:
    content = obs.content
    if isinstance(content, str):
        text = content
        leaves: list[str] = []
    else:
        text = json.dumps(content, ensure_ascii=False, sort_keys=True, default=str)
        leaves = [s.strip().casefold() for s in _leaves(content)]
    folded = text.casefold()
    return _Indexed(
        obs=obs,
        text=folded,
        compact=_compact(text),
        leaves=frozenset(leaves),
        long_leaves=tuple(sorted({s for s in leaves if len(s) >= MIN_LEAF})),
    )


@dataclass(frozen=True)
class Provenance:
    labels: tuple[str, ...]
    channels: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"labels": list(self.labels), "channels": list(self.channels)}


class ProvenanceIndex:
    """Observations prepared once per decision so every ``provenance()`` call is cheap.

    Preparing them (serialising and tokenising every observation) costs more than most
    decisions, and most decisions never ask for provenance, so it happens on first use.
    If it fails, :attr:`error` keeps the exception: a failure inside a CEL function call
    would otherwise surface only as that rule's error, and the engine re-raises it.
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
        whole = text.strip().casefold()
        tokens = list(_folded_tokens(text)) if whole else []
        labels: set[str] = set()
        channels: set[str] = set()
        for item in self._items:
            if whole and self._matches(item, whole, tokens):
                labels.update(item.obs.labels)
                channels.add(item.obs.channel)
        result = Provenance(tuple(sorted(labels)), tuple(sorted(channels)))
        self._cache[text] = result
        return result

    @staticmethod
    def _matches(item: _Indexed, whole: str, tokens: Sequence[tuple[str, bool]]) -> bool:
        # (a) the observation holds the whole value: equal to one of its fields, or, for
        # values long enough to be specific, contained in its text.
        if whole in item.leaves:
            return True
        if len(whole) >= MIN_LEAF and whole in item.text:
            return True
        # (b) a significant token of the value appears in the observation
        for tok, compact in tokens:
            if (tok in item.compact) if compact else (tok in item.text):
                return True
        # (b') structured observations: each of their long leaf strings is a token
        return any(leaf in whole for leaf in item.long_leaves)

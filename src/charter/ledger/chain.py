"""The hash chain that makes every run's history tamper-evident.

Each event's hash covers its predecessor's hash and its own canonical content
(run, position, type, time and fields), so editing, deleting or reordering any stored
event breaks every link after it. Large payloads stored by reference are hashed by their
full content, so editing the referenced blob breaks the chain too.
"""

from __future__ import annotations

import hashlib

from charter.primitives import canonical

GENESIS = "0" * 64


def event_hash(prev_hash: str, run_id: str, seq: int, type_: str, at: str, data_json: str) -> str:
    """SHA-256 linking one event to its predecessor; ``data_json`` is the canonical payload."""
    h = hashlib.sha256()
    h.update(prev_hash.encode("ascii"))
    h.update(b"\n")
    h.update(canonical([run_id, seq, type_, at]).encode("utf-8"))
    h.update(b"\n")
    h.update(data_json.encode("utf-8"))
    return h.hexdigest()

"""The ``replay`` provider: answers from model outputs already recorded in the ledger.

It lets a contract change be evaluated against yesterday's real traffic without paying
for it, and makes an audit's "what did the model say to exactly this prompt" executable.

- ``replay:RUN_ID`` answers each call with the output recorded in that run for the same
  rendered prompt (same prompt hash) and, when the prompt changed (a new template or
  contract version), with the output recorded at the same step and attempt.
- ``replay:PROMPT_HASH`` (or an unambiguous prefix) answers with the output recorded for
  that prompt, whatever is asked: pinning one answer.
- ``replay`` alone looks the rendered prompt up across the whole ledger (indexed), and
  fails when this exact prompt was never answered.

No model is called and the call costs nothing; where the answer came from is recorded in
the call's ``params.replay_of``.
"""

from __future__ import annotations

import re
import time
from typing import Any

from charter.errors import ModelError, NotFoundError
from charter.ledger.events import ModelCalled
from charter.ledger.store import Store
from charter.models.base import ModelRequest, ModelResponse, Usage
from charter.models.prompt import prompt_hash

_HEX = re.compile(r"^[0-9a-f]{6,64}$")


class ReplayProvider:
    """Recorded outputs stand in for the model."""

    name = "replay"

    def __init__(self, store: Store, source: str | None = None) -> None:
        self.store = store
        self.source = source or None
        self.model = "replay"

    def estimate(self, request: ModelRequest) -> Usage:
        return Usage()

    def _recorded(self, run_id: str, seq: int) -> ModelCalled:
        for stored in self.store.events(run_id):
            if stored.seq == seq and isinstance(stored.event, ModelCalled):
                return stored.event
        raise ModelError(f"replay: event {seq} of run {run_id} is not a recorded model call")

    def _by_hash(self, digest: str, *, pinned: bool) -> tuple[str, int, ModelCalled, str]:
        try:
            found = self.store.find_model_call(digest)
        except NotFoundError as exc:
            raise ModelError(f"replay: {exc}") from None
        if found is None:
            if pinned:
                raise ModelError(f"replay: no recorded model call has prompt hash {digest}")
            raise ModelError(
                f"replay: this exact prompt (hash {digest[:16]}) was never answered in this "
                "ledger; replay a run instead (--model replay:RUN_ID) to match by step"
            )
        run_id, seq = found
        return run_id, seq, self._recorded(run_id, seq), "prompt_hash"

    def _in_run(self, run_id: str, request: ModelRequest) -> tuple[str, int, ModelCalled, str]:
        digest = prompt_hash(request.prompt)
        calls = [
            (s.seq, s.event) for s in self.store.events(run_id) if isinstance(s.event, ModelCalled)
        ]
        for seq, ev in calls:
            if ev.prompt_hash == digest:
                return run_id, seq, ev, "prompt_hash"
        for seq, ev in calls:
            if (ev.step, ev.attempt) == (request.step, request.attempt):
                return run_id, seq, ev, "position"
        raise ModelError(
            f"replay: run {run_id} recorded no model call for step {request.step} attempt "
            f"{request.attempt} ({len(calls)} recorded)"
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        source = self.source
        if source is None:
            found = self._by_hash(prompt_hash(request.prompt), pinned=False)
        elif source.startswith("run_") or not _HEX.match(source):
            try:
                run_id = self.store.find_run(source).run_id
            except NotFoundError as exc:
                raise ModelError(f"replay: {exc}") from None
            found = self._in_run(run_id, request)
        else:
            found = self._by_hash(source, pinned=True)
        run_id, seq, ev, matched = found
        self.model = ev.model
        params: dict[str, Any] = {
            "replay_of": {
                "run_id": run_id,
                "seq": seq,
                "prompt_hash": ev.prompt_hash,
                "matched_by": matched,
                "provider": ev.provider,
                "model": ev.model,
                "cost_usd": ev.cost_usd,
            }
        }
        return ModelResponse(
            raw=ev.raw_output,
            usage=Usage(),
            model=ev.model,
            latency_ms=(time.perf_counter() - started) * 1000,
            params=params,
        )

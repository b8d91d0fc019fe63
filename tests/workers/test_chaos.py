"""A small chaos run on each store: ``bench/chaos.py`` with 2 workers, 40 runs, a few kills.

The full run (4+ workers, 500+ runs, kills until done) is a script, ``python bench/chaos.py``;
this one keeps its audit honest in CI: every run final, no effect applied twice, no
execution the ledger did not start, reviews expired once, every chain intact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_small_chaos_run_keeps_every_guarantee(store_kind: str) -> None:
    args = [
        sys.executable,
        str(ROOT / "bench" / "chaos.py"),
        "--store",
        store_kind,
        "--workers",
        "2",
        "--concurrency",
        "1",
        "--runs",
        "40",
        "--kills",
        "2",
        "--kill-every",
        "0.4:0.8",
        "--drop-every",
        "0.5:1",
        "--latency-ms",
        "5",
        "--timeout",
        "90",
        "--json",
    ]
    done = subprocess.run(
        args, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=110
    )
    [report] = json.loads(done.stdout)
    assert report["ok"], (report, done.stderr[-2000:])
    assert done.returncode == 0
    assert report["unfinished"] == 0 and sum(report["statuses"].values()) == 40
    assert report["kills"] >= 1  # the workers really were killed while runs were in flight
    assert report["reviews_expired"] == 4  # tickets 0, 10, 20, 30: timed out once each
    assert report["chains_verified"] == 40
    if store_kind == "postgres":
        assert report["connection_drops"] >= 1

"""The fuzz harnesses still run: each for three seconds, side by side, and finds nothing.

The harnesses (``fuzz_*.py``, not collected as tests) are meant for long runs; their
docstrings say how. This only proves they start, drive the code and exit cleanly, with
atheris (uninstrumented, to start quickly) when it is installed and hypothesis otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HARNESSES = [
    "fuzz_contract_loader.py",
    "fuzz_proposal.py",
    "fuzz_json_args.py",
    "fuzz_policy.py",
]


@pytest.mark.timeout(120)
def test_each_harness_runs_for_a_few_seconds(tmp_path: Path) -> None:
    procs = {
        name: subprocess.Popen(
            [
                sys.executable,
                str(HERE / name),
                "--seconds=3",
                "--instrument=",  # coverage guides long runs; here it would only add start-up
                f"-artifact_prefix={tmp_path}/",
            ],
            cwd=tmp_path,
            env={**os.environ, "TMPDIR": str(tmp_path)},  # seed corpora and scratch files
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in HARNESSES
    }
    failed = []
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0 or "fuzzing with" not in err:
            failed.append(f"{name} exited with {proc.returncode}:\n{err[-3000:]}")
    assert not failed, "\n\n".join(failed)

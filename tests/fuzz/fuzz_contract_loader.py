"""Fuzz the contract loader: any file is a Contract or a located ContractError, within 2 s.

Inputs are file contents, three ways (the first byte chooses): raw bytes; an alias bomb
built from the next bytes (levels, fan-out, shape of every level, leaf) and added to a valid
contract; a valid contract with the bytes spliced in at a position they choose. Every
example is written to a file and loaded with ``Contract.load`` — the path every command
takes, reading, size caps and UTF-8 included.

A short run (what ``tests/fuzz/test_harnesses.py`` does)::

    .venv/bin/python tests/fuzz/fuzz_contract_loader.py --seconds 3

A long run with atheris (``.venv/bin/pip install atheris``), two processes, a corpus kept
between runs, crashes written to ``fuzz-crashes/``::

    mkdir -p fuzz-corpus/loader fuzz-crashes
    .venv/bin/python tests/fuzz/fuzz_contract_loader.py -max_total_time=3600 \\
        -jobs=2 -workers=2 -timeout=10 -rss_limit_mb=3072 \\
        -artifact_prefix=fuzz-crashes/ fuzz-corpus/loader

Replay a crash: ``.venv/bin/python tests/fuzz/fuzz_contract_loader.py fuzz-crashes/crash-...``.
Without atheris the same command lines work with ``--seconds N`` (hypothesis drives it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import _engine

with _engine.instrumented(sys.argv):
    from charter import Contract, ContractError
    from tests.helpers import document, to_yaml

VALID = to_yaml(document()).encode("utf-8")
SHAPES = ("seq", "map", "merge", "key")
LEAVES = (b"x", b"[1, 2, 3]", b"{k: v, l: [1]}", b'"' + b"y" * 1000 + b'"', b"&q !!int 7")
SEEDS = [
    VALID,
    b"\x01\x09\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00",  # the billion laughs
    b"\x01\x10\x20\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02",  # merges
    b"\x02\x40" + b"x-a: &a [1, 2]\nx-b: [*a, *a]\n",
    b"\x00a: &a [*a]\n",
    b"\x00? [[1]]\n: 1\n",
    b'\x00contract: !!int "x"\n',
    b"\x00contract: !!int\n",  # IndexError in ruamel, found by this harness
]
_FILE = Path(tempfile.mkdtemp(prefix="charter-fuzz-loader-")) / "contract.yaml"


def bomb(data: bytes) -> bytes:
    """A valid contract plus anchored levels, each naming the one below ``fan_out`` times."""
    levels, fan_out = 1 + data[0] % 16 if data else 1, 1 + data[1] % 64 if len(data) > 1 else 1
    rest = data[2:]
    leaf = LEAVES[rest[0] % len(LEAVES)] if rest else b"x"
    lines = [b"  a0: &a0 " + leaf]
    for i in range(1, levels):
        shape = SHAPES[rest[i] % len(SHAPES)] if i < len(rest) else "seq"
        ref = f"*a{i - 1}"
        if shape == "seq":
            body = "[" + ", ".join([ref] * fan_out) + "]"
        elif shape == "map":
            body = "{" + ", ".join(f"k{j}: {ref}" for j in range(fan_out)) + "}"
        elif shape == "merge":
            body = "{<<: [" + ", ".join([ref] * fan_out) + f"], v{i}: [{ref}, {ref}]}}"
        else:
            body = "{? [" + ", ".join([ref] * fan_out) + "] : 1}"
        lines.append(f"  a{i}: &a{i} {body}".encode())
    return VALID + b"x-defs:\n" + b"\n".join(lines) + f"\nx-bomb: *a{levels - 1}\n".encode()


def splice(data: bytes) -> bytes:
    at = (data[0] * len(VALID) // 256) if data else 0
    return VALID[:at] + data[1:] + VALID[at:]


def one_input(data: bytes) -> None:
    mode, rest = (data[0] % 3, data[1:]) if data else (0, b"")
    text = (lambda d: d, bomb, splice)[mode](rest)
    _FILE.write_bytes(text)
    started = time.perf_counter()
    try:
        contract = Contract.load(_FILE)
    except ContractError as exc:
        assert exc.issues, "a ContractError without issues"
        for issue in exc.issues:
            assert issue.file == str(_FILE), issue
            assert issue.line >= 1 and issue.column >= 1, issue
            assert issue.message, issue
            str(issue).encode("utf-8")
    else:
        assert contract.ref
    elapsed = time.perf_counter() - started
    assert elapsed < 2, f"took {elapsed:.1f} s to answer"


if __name__ == "__main__":
    _engine.main(
        one_input,
        SEEDS,
        description=__doc__ or "",
        libfuzzer_defaults=["-timeout=10", "-max_len=65536", "-rss_limit_mb=3072"],
    )

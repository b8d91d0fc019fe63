"""Fuzz ``parse_json_arg``: any ``--input``/``--args`` text or @file is a value or a UsageError.

Inputs, chosen by the first byte: the bytes as an inline option value (invalid UTF-8
becomes lone surrogates, as Python decodes a command line), or written to a file and given
as ``@file`` (read under the ``input_bytes`` cap, decoded as strict UTF-8).

A short run (what ``tests/fuzz/test_harnesses.py`` does)::

    .venv/bin/python tests/fuzz/fuzz_json_args.py --seconds 3

A long run with atheris (``.venv/bin/pip install atheris``)::

    mkdir -p fuzz-corpus/json-args fuzz-crashes
    .venv/bin/python tests/fuzz/fuzz_json_args.py -max_total_time=3600 -jobs=2 -workers=2 \\
        -timeout=10 -dict=tests/fuzz/json.dict -artifact_prefix=fuzz-crashes/ \\
        fuzz-corpus/json-args

Without atheris the same command lines work with ``--seconds N`` (hypothesis drives it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import _engine

with _engine.instrumented(sys.argv):
    from charter import UsageError
    from charter.cli.common import parse_json_arg

SEEDS = [
    b'\x00{"a": [1, 2.5, "x", null, true]}',
    b"\x00" + b"[" * 5000,
    b'\x00{"a": NaN}',
    b'\x00"\\ud800"',
    b"\x00\xff\xfe",
    b'\x01{"b": "\xc3\xa9"}',
    b'\x01{"b": "\xff"}',
    b"\x01" + b"[" * 3000 + b"]" * 3000,
]
_FILE = Path(tempfile.mkdtemp(prefix="charter-fuzz-json-")) / "value.json"


def one_input(data: bytes) -> None:
    mode, rest = (data[0] % 2, data[1:]) if data else (0, b"")
    if mode == 0:
        value, source = rest.decode("utf-8", "surrogateescape"), "option --input: "
    else:
        _FILE.write_bytes(rest)
        value, source = f"@{_FILE}", f"{_FILE} (from --input): "
    try:
        parse_json_arg(value, "--input")
    except UsageError as exc:
        message = str(exc)
        message.encode("utf-8")
        assert message.startswith((source, "--input: cannot read")), message
        assert exc.exit_code == 2


if __name__ == "__main__":
    _engine.main(one_input, SEEDS, description=__doc__ or "", libfuzzer_defaults=["-timeout=10"])

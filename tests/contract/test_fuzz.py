"""Any damage to a valid contract gives a Contract or a ContractError, nothing else.

Two fuzzers: one damages the values of the parsed document (types, keys, expressions),
the other damages the file itself — bytes that are not UTF-8, anchors and aliases, deep
nesting, tags, lone surrogates, very long lines — and loads it with ``Contract.load``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter import Contract, ContractError
from charter.cli import cli
from charter.contract.source import parse_yaml
from tests.helpers import to_yaml, with_rules

VALID = with_rules(
    [
        {"id": "big", "when": "action.args.amount > 100", "effect": "review", "reviewers": ["x"]},
        {
            "id": "adm",
            "at": "admit",
            "when": 'count("refund", {}, duration("1h")) > 2',
            "effect": "deny",
        },
    ],
    default="deny",
    on_error="deny",
    escalation={"reviewers": ["leads"], "sla": "4h", "on_timeout": "deny"},
    budget={"max_actions": 3},
    success=["outcome.ok"],
    value={"expr": "outcome.n * 2", "unit": "USD"},
    autonomy={"level": "assist"},
    model={"provider": "scripted"},
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


PATHS = _paths(VALID)

junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.sampled_from(["", " ", "deny", "1h", "x >", "flow:x", "a.b:c", "*", "true", "{", "@"]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["type", "id", "when", "x", "properties", "$ref"]), children, max_size=3
        ),
    ),
    max_leaves=6,
)


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any, delete: bool) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(PATHS), junk, st.booleans()), min_size=1, max_size=3)
)
def test_damaged_contracts_fail_with_contract_error_only(
    edits: list[tuple[tuple[Any, ...], Any, bool]],
) -> None:
    doc = copy.deepcopy(VALID)
    for path, value, delete in edits:
        try:
            _set(doc, path, value, delete)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced the parent
    try:
        c = Contract.from_document(parse_yaml(to_yaml(doc), "fuzz.yaml"))
    except ContractError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == "fuzz.yaml"
            assert issue.line >= 1 and issue.column >= 1
            assert issue.message
    else:
        assert c.ref.startswith(f"{c.name}@")


# ---------------------------------------------------------------------------------------
# Byte-level damage of the file

TEXT = to_yaml(VALID)

#: (line index, column of the key) of every ``key: value`` line whose value can be replaced
VALUE_LINES = [
    (i, len(m.group(1)))
    for i, line in enumerate(TEXT.splitlines())
    if (m := re.match(r"^(\s*(?:- )?)[\w.]+: \S", line))
]
#: the same for the CEL expressions, where length and nesting reach the CEL parser
CEL_LINES = [
    (i, col)
    for i, col in VALUE_LINES
    if re.match(r"^\s*(?:- )?(when|expr): ", TEXT.splitlines()[i])
]

#: A fragment replaces a value: called with the key's column and the old value text.
Fragment = Callable[[int, str], str]


def _const(text: str) -> Fragment:
    return lambda col, old: text


def _block_nesting(depth: int) -> Fragment:
    def make(col: int, old: str) -> str:
        lines = [" " * (col + 2 * i) + "a:" for i in range(1, depth)]
        return "\n" + "\n".join(lines) + "\n" + " " * (col + 2 * depth) + "1"

    return make


def _alias_expansion(levels: int, width: int) -> str:
    # [&l0 [1, 2], &l1 [*l0, *l0], &l2 [*l1, *l1], *l2]: width**levels nodes in all
    parts = ["&l0 [" + ", ".join(["1"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + f", *l{levels - 1}]"


def _alias_nesting(levels: int) -> str:
    # each alias adds three levels the composer never sees: depth 3 * levels once expanded
    parts = ["&d0 [[[1]]]"] + [f"&d{i} [[[*d{i - 1}]]]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


DEPTHS = st.one_of(st.sampled_from([50, 63, 64, 65, 66, 100, 2000]), st.integers(50, 2000))

FRAGMENTS: st.SearchStrategy[Fragment] = st.one_of(
    # anchors and aliases
    st.sampled_from(
        [
            lambda col, old: f"&a {old}",
            lambda col, old: f"&a [{old}]",
            lambda col, old: f"&a {{k: {old}}}",
            _const("*a"),
            _const("[*a, *a]"),
            _const("{<<: *a, q: 1}"),
            _const("{<<: [*a, *a]}"),
            _const("*undefined"),
            _const("&r [*r]"),
            _const("&r {k: *r}"),
        ]
    ),
    st.builds(lambda n, w: _const(_alias_expansion(n, w)), st.integers(1, 6), st.integers(2, 3)),
    st.builds(lambda n: _const(_alias_nesting(n)), st.integers(1, 40)),
    # deep nesting
    st.builds(lambda n: _const("[" * n + "]" * n), DEPTHS),
    st.builds(lambda n: _const("{a: " * n + "1" + "}" * n), DEPTHS),
    st.builds(lambda n: _const("[" * n), DEPTHS),
    st.builds(_block_nesting, DEPTHS),
    # lone surrogates and other escapes in double-quoted scalars
    st.sampled_from(['"\\ud800"', '"x\\udfff"', '"\\ud83d\\ude00"', '"\\U0000dc00"', '"\\0"']).map(
        _const
    ),
    # tags: Python objects must never be constructed, bad conversions must be located
    st.sampled_from(
        [
            "!!python/object/apply:os.getcwd []",
            "!!python/object:builtins.object {}",
            "!!python/name:os.system",
            "!custom 1",
            "!custom {a: 1}",
            "!!int abc",
            "!!float x",
            "!!bool maybe",
            "!!timestamp 2026-13-45",
            "!!binary '%%%'",
            "!!set {a, b}",
            "!!omap [a: 1]",
            "!!str 1",
            "!<tag:yaml.org,2002:int> 5",
            "!!null x",
        ]
    ).map(_const),
    st.sampled_from(["!custom", "!!str", "!!int", "!!python/tuple", "!!map", "!!seq"]).map(
        lambda tag: lambda col, old: f"{tag} {old}"
    ),
    # very long lines and values, huge numbers, long CEL the native parser cannot take
    st.sampled_from(
        [
            "a" * 200_000,
            '"' + "b" * 70_000 + '"',
            "9" * 5000,
            "0x" + "f" * 5000,
            "'action" + ".a" * 20_000 + "'",
            "'1" + " " * 70_000 + "+'",
            "'" + " + ".join(["1"] * 3000) + "'",
        ]
    ).map(_const),
)

BAD_BYTES = st.sampled_from(
    [
        b"\xff",
        b"\xc3(",
        b"\xe2\x82",  # a truncated three-byte sequence
        b"\xf0\x9f\x98",  # a truncated four-byte sequence
        b"\x80",
        b"\xc0\xaf",  # overlong
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\x00",
        b"\xef\xbb\xbf",  # a BOM, here or at the start
        b"\t",
        b"\r",
        b"\x1b",
        b"\xc2\x85",  # NEL, a YAML line break
        b"\xe2\x80\xa8",  # LINE SEPARATOR
        b"&a ",
        b"*a",
        b"<<: *a\n",
        b"!!python/object/apply:os.getcwd []",
        b"[" * 300,
        b"{",
        b"'",
        b'"',
        b"\n- ",
        b": ",
        b"%YAML 1.2\n---\n",
        b"\n---\n",
    ]
)


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    lines = TEXT.splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 3))):
        i, col = draw(st.sampled_from(VALUE_LINES) | st.sampled_from(CEL_LINES))
        key, _sep, old = lines[i].rstrip("\n").partition(": ")
        lines[i] = f"{key}: {draw(FRAGMENTS)(col, old)}\n"
    data = "".join(lines).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0 if data != TEXT.encode() else 1, 2))):
        payload = draw(BAD_BYTES | st.binary(min_size=1, max_size=4))
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["insert", "replace", "delete"]))
        if how == "insert":
            data = data[:at] + payload + data[at:]
        elif how == "replace":
            data = data[:at] + payload + data[at + len(payload) :]
        else:
            data = data[:at] + data[at + draw(st.integers(1, 40)) :]
    return data


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=damaged_files())
def test_damaged_files_fail_with_located_contract_error_only(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        c = Contract.load(path)
    except ContractError as exc:
        assert exc.issues
        for issue in exc.issues:
            assert issue.file == str(path)
            assert issue.line >= 1 and issue.column >= 1
            assert issue.message and issue.hint
            str(issue).encode("utf-8")  # printable: the CLI writes it to a terminal
    else:
        assert c.ref.startswith(f"{c.name}@")
    # the command line reads the same file, then also checks the prompt template it names
    result = CliRunner().invoke(cli, ["contract", "validate", str(path)])
    assert result.exit_code in (0, ContractError.exit_code), result.output
    assert isinstance(result.exception, SystemExit | None), result.exception

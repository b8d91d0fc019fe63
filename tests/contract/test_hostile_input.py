"""Hostile or damaged contract files: each class the byte-level fuzzer produces, pinned down.

Every case must end in a ``ContractError`` naming file, line, column and a fix (or load
cleanly) — never another exception, a crash of the native CEL parser, or a hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from charter import Contract, ContractError
from charter.cli import cli
from charter.contract.source import DEPTH_CAP, parse_yaml, read_yaml
from charter.contract.validate import MAX_EXPRESSION_LENGTH
from charter.errors import Issue
from tests.helpers import document, to_yaml

VALID = to_yaml(document())
MAX_DEPTH = DEPTH_CAP.default  # the yaml_depth cap (64): these tests run without overrides


def _only_issue(exc: pytest.ExceptionInfo[ContractError]) -> Issue:
    (issue,) = exc.value.issues
    assert issue.hint
    return issue


def _load_text(tmp_path: Path, text: str) -> Contract:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return Contract.load(path)


def _with(key: str, value: str) -> str:
    """The valid contract with ``key: value`` replaced (the old line must exist)."""
    lines = VALID.splitlines(keepends=True)
    (i,) = [n for n, line in enumerate(lines) if line.startswith(f"{key}:")]
    lines[i] = f"{key}: {value}\n"
    return "".join(lines)


def _line_of(text: str, key: str) -> int:
    return [line.split(":")[0] for line in text.splitlines()].index(key) + 1


# -- bytes that are not UTF-8 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "bad", "line", "column", "reason"),
    [
        (b"contract: shop\n\xff\n", "0xff", 2, 1, "invalid start byte"),
        (b"contract: shop\ndomain: \xc3(\n", "0xc3", 2, 9, "invalid continuation byte"),
        # the column counts characters, not bytes: "caf\xc3\xa9" is four
        (b"contract: caf\xc3\xa9 \xff\n", "0xff", 1, 16, "invalid start byte"),
        (b"contract: shop\ndescription: x\xe2\x82", "0xe2 0x82", 2, 15, "unexpected end of data"),
        (b"a: 1\nb: \xed\xa0\x80\n", "0xed", 2, 4, "invalid continuation byte"),  # a surrogate
        (b"a: \xc0\xaf\n", "0xc0", 1, 4, "invalid start byte"),  # overlong "/"
        (b"a: 1\r\nb: 2\r\nc: \x80\r\n", "0x80", 3, 4, "invalid start byte"),  # CRLF lines
        (b"a: 1\rb: \xff", "0xff", 2, 4, "invalid start byte"),  # old Mac lines
    ],
)
def test_invalid_utf8_is_located_from_the_byte_offset(
    tmp_path: Path, data: bytes, bad: str, line: int, column: int, reason: str
) -> None:
    # before: "cannot read file: 'utf-8' codec can't decode ..." at 1:1
    path = tmp_path / "bad.yaml"
    path.write_bytes(data)
    with pytest.raises(ContractError) as info:
        read_yaml(path)
    issue = _only_issue(info)
    offset = data.index(bytes.fromhex(bad.replace("0x", "").replace(" ", "")))
    assert (issue.file, issue.line, issue.column) == (str(path), line, column)
    noun = "byte" if " " not in bad else "bytes"
    assert issue.message == f"invalid UTF-8: {noun} {bad} at byte offset {offset} ({reason})"
    assert "UTF-8" in issue.hint


def test_a_bom_starts_a_file_but_is_a_syntax_error_inside_one(tmp_path: Path) -> None:
    # passed before the change too
    assert _load_text(tmp_path, "\ufeff" + VALID).name == "shop"
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, VALID.replace("domain: sales", "domain: \ufeffsales: x"))
    issue = _only_issue(info)
    assert issue.line == _line_of(VALID, "domain")
    assert "YAML syntax error" in issue.message


def test_a_nul_byte_is_refused_by_the_reader_with_its_position(tmp_path: Path) -> None:
    # passed before the change too
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, VALID.replace("domain: sales", "domain: sa\x00les"))
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (_line_of(VALID, "domain"), 11)
    assert "unacceptable character #x0000" in issue.message


def test_a_tab_in_indentation_is_a_located_syntax_error(tmp_path: Path) -> None:
    # passed before the change too
    text = VALID.replace("\n  ", "\n\t", 1)
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    tab = text.index("\t")
    assert (issue.line, issue.column) == (text[:tab].count("\n") + 1, 1)
    assert "found character '\\t' that cannot start any token" in issue.message


# -- deep nesting ----------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH, 100, 1000, 5000])
def test_deep_flow_sequences_are_nested_too_deeply(depth: int) -> None:
    # before: loaded up to a few hundred levels, then RecursionError (in ruamel's composer)
    with pytest.raises(ContractError) as info:
        parse_yaml("a: " + "[" * depth + "]" * depth + "\n", "deep.yaml")
    issue = _only_issue(info)
    # the root mapping is level 1, so the 64th bracket (column 3 + 64) opens level 65
    assert (issue.line, issue.column) == (1, 3 + MAX_DEPTH)
    assert issue.message == f"nested too deeply (more than {MAX_DEPTH} levels)"
    assert "flatten" in issue.hint


def test_nesting_up_to_the_limit_loads() -> None:
    depth = MAX_DEPTH - 1  # the root mapping plus 63 lists
    data = parse_yaml("a: " + "[" * depth + "]" * depth + "\n", "ok.yaml").data
    for _ in range(depth):
        data = data["a"] if isinstance(data, dict) else data[0] if data else data
    assert data == []


@pytest.mark.parametrize("depth", [100, 2000])
def test_deep_flow_mappings_are_nested_too_deeply(depth: int) -> None:
    # before: RecursionError
    with pytest.raises(ContractError) as info:
        parse_yaml("a: " + "{a: " * depth + "1" + "}" * depth + "\n", "deep.yaml")
    issue = _only_issue(info)
    # level 65 is the key of the 63rd inner mapping: "{a: " starts at column 4 + 4 * 62
    assert (issue.line, issue.column) == (1, 4 + 4 * 62 + 1)
    assert "nested too deeply" in issue.message


@pytest.mark.parametrize("depth", [100, 1000])
def test_deep_block_indentation_is_nested_too_deeply(depth: int) -> None:
    # before: RecursionError from 500 levels
    text = "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "1\n"
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "deep.yaml")
    issue = _only_issue(info)
    # line n holds the mapping of level n, whose key is level n + 1: the 64th line's key
    assert (issue.line, issue.column) == (MAX_DEPTH, 2 * (MAX_DEPTH - 1) + 1)
    assert "nested too deeply" in issue.message


def test_nesting_through_aliases_is_nested_too_deeply() -> None:
    # the composer sees ten levels per line; the aliases stack them to seventy
    lines = ["l0: &l0 " + "[" * 10 + "0" + "]" * 10]
    lines += [f"l{i}: &l{i} " + "[" * 10 + f"*l{i - 1}" + "]" * 10 for i in range(1, 7)]
    with pytest.raises(ContractError) as info:
        parse_yaml("\n".join(lines) + "\n", "alias.yaml")
    issue = _only_issue(info)
    assert issue.message == f"nested too deeply (more than {MAX_DEPTH} levels)"
    assert issue.path == "l6" + "[0]" * (MAX_DEPTH - 1)
    assert issue.line >= 1 and issue.column >= 1


def test_a_json_schema_nested_near_the_limit_is_checked(tmp_path: Path) -> None:
    schema = "{type: object}"
    for _ in range(MAX_DEPTH - 3):  # `not` costs jsonschema the most stack per level
        schema = "{not: " + schema + "}"
    contract = _load_text(tmp_path, VALID.replace("input:\n  type: object", "input: " + schema))
    assert contract.name == "shop"


def test_a_regex_nested_too_deeply_to_compile_is_an_issue(tmp_path: Path) -> None:
    # before: RecursionError from jsonschema's `format: regex` check (`re` compiles recursively)
    pattern = "(" * 2000 + ")" * 2000
    text = VALID.replace(
        "input:\n  type: object",
        "input: {type: object, properties: {a: {type: string, pattern: '" + pattern + "'}}}",
    )
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert issue.path == "input"
    assert (issue.line, issue.column) == (_line_of(text, "input"), 1)
    assert "nested too deeply to check" in issue.message


# -- text that is not characters ---------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "shown"),
    [
        ("\\ud800", "\\ud800"),
        ("caf\\udfff", "\\udfff"),
        ("\\ud83d\\ude00", "\\ud83d"),  # a pair: YAML escapes characters, not UTF-16 units
        ("\\U0000dc00", "\\udc00"),
    ],
)
def test_lone_surrogates_in_values_are_invalid_text(
    tmp_path: Path, escaped: str, shown: str
) -> None:
    # before: the contract loaded (or failed hashing it with UnicodeEncodeError)
    text = _with("description", f'"{escaped}"')
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert (issue.path, issue.line, issue.column) == (
        "description",
        _line_of(text, "description"),
        1,
    )
    assert issue.message == f"invalid text: a lone surrogate {shown} is not a character"
    assert "\\UXXXXXXXX" in issue.hint


def test_a_lone_surrogate_in_a_key_is_invalid_text_and_printable() -> None:
    # before: reported as an unknown key whose path could not be printed (UnicodeEncodeError)
    with pytest.raises(ContractError) as info:
        parse_yaml('contract: shop\nx:\n  "k\\ud800": 1\n', "key.yaml")
    issue = _only_issue(info)
    assert (issue.path, issue.line, issue.column) == ("x.k\\ud800", 3, 3)
    assert "lone surrogate" in issue.message
    str(issue).encode("utf-8")


def test_a_surrogate_in_a_custom_tagged_scalar_is_invalid_text() -> None:
    with pytest.raises(ContractError) as info:
        parse_yaml('contract: !x "\\ud800"\n', "tag.yaml")
    assert "lone surrogate" in _only_issue(info).message


def test_an_escaped_nul_character_is_invalid_text(tmp_path: Path) -> None:
    # before: loaded, and `charter contract validate` crashed on a NUL in model.prompt
    # (ValueError: embedded null byte); PostgreSQL cannot store NUL in text either
    text = _with("description", '"a\\0b"')
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert (issue.path, issue.line) == ("description", _line_of(text, "description"))
    assert issue.message == "invalid text: a NUL character (\\0) is not allowed"


# -- tags --------------------------------------------------------------------------------


def test_python_tags_construct_no_python_objects(tmp_path: Path) -> None:
    # passed before the change too: the round-trip loader keeps unknown tags as data
    made = tmp_path / "made"
    text = _with("description", f"!!python/object/apply:os.mkdir [{str(made)!r}]")
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    assert not made.exists()
    issue = _only_issue(info)
    assert (issue.path, issue.line) == ("description", _line_of(text, "description"))
    assert "is not of type 'string'" in issue.message
    text = _with("description", "!!python/name:os.system")
    assert _load_text(tmp_path, text).description == ""  # an empty scalar


def test_a_custom_tag_keeps_its_value(tmp_path: Path) -> None:
    # passed before the change too
    assert _load_text(tmp_path, _with("description", "!custom hello")).description == "hello"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("!!int abc", "cannot read 'abc' as !!int: invalid literal for int()"),
        ("!!float x", "cannot read 'x' as !!float: could not convert string to float"),
        ("!!bool maybe", "cannot read 'maybe' as !!bool: not a recognised value"),
        ("!!timestamp 2026-13-45", "cannot read '2026-13-45' as !!timestamp: month must be"),
        ("9" * 5000, "cannot read '" + "9" * 37 + "...' as !!int: Exceeds the limit"),
    ],
)
def test_scalars_a_tag_cannot_convert_are_located(tmp_path: Path, value: str, message: str) -> None:
    # before: ValueError or KeyError from ruamel's constructor, with no position
    text = _with("description", value)
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (_line_of(text, "description"), len("description: ") + 1)
    assert issue.message.startswith("YAML error: " + message)
    assert "tag" in issue.hint


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("contract: !!int\n", 11, "cannot read '' as !!int: not a recognised value"),
        ("contract: [!!float 1e]\n", 12, "cannot read '1e' as !!float: not a recognised value"),
        ("!!int 0x\n", 1, "cannot read '0x' as !!int: not a recognised value"),
        ("contract: !!set\n", 11, "cannot read '' as !!set: the tag does not fit a scalar"),
        ("[!!omap x]\n", 2, "cannot read 'x' as !!omap: the tag does not fit a scalar"),
    ],
)
def test_empty_numbers_and_misplaced_collection_tags_are_located(
    text: str, column: int, message: str
) -> None:
    # before: IndexError (string index out of range) from ruamel's int and float
    # constructors, AttributeError for !!set or !!omap on a scalar (found by
    # tests/fuzz/fuzz_contract_loader.py: `contract: !!int`)
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "tag.yaml")
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (1, column)
    assert issue.message == "YAML error: " + message


def test_an_integer_too_large_to_print_is_refused(tmp_path: Path) -> None:
    # before: ValueError (int to str conversion limit) when jsonschema reported it
    text = _with("version", "0x" + "f" * 5000)
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert (issue.path, issue.line, issue.column) == ("version", _line_of(text, "version"), 1)
    assert issue.message == "integer is too large (more than 4000 digits)"


# -- anchors and aliases -----------------------------------------------------------------


def test_anchors_aliases_and_merge_keys_load(tmp_path: Path) -> None:
    # passed before the change too
    text = VALID.replace("channels:\n", "x-base: &base {labels: [pii]}\nchannels:\n", 1)
    text = text.replace("  crm.customer:\n    labels:\n    - pii\n", "  crm.customer: *base\n")
    text = text.replace("  crm.notes:\n", "  crm.notes:\n    <<: *base\n", 1)
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    assert [i.path for i in info.value.issues] == ["x-base"]  # only the helper key is unknown
    data = parse_yaml(text, "a.yaml").data
    assert data["channels"]["crm.customer"] == {"labels": ["pii"]}
    assert data["channels"]["crm.notes"] == {"labels": ["confidential"]}


def test_a_small_alias_expansion_loads() -> None:
    # passed before the change too
    text = "a: [&l0 [1, 2, 3], &l1 [*l0, *l0, *l0], &l2 [*l1, *l1, *l1], *l2]\n"
    (l0, l1, l2, again) = parse_yaml(text, "x.yaml").data["a"]
    assert (l0, l1) == ([1, 2, 3], [[1, 2, 3]] * 3)
    assert l2 == again == [[[1, 2, 3]] * 3] * 3


def test_an_undefined_alias_is_located() -> None:
    # passed before the change too
    with pytest.raises(ContractError) as info:
        parse_yaml("a: 1\nb: [1, *nowhere]\n", "x.yaml")
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (2, 8)
    assert "found undefined alias 'nowhere'" in issue.message


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: &a [1, *a]\n", 1, 11),
        ("a: &a {b: *a}\n", 1, 11),
        ("a: &a {<<: *a}\n", 1, 12),  # before: AttributeError inside ruamel's merge
        ("a: &a\n  b: 1\n  c:\n    <<: *a\n", 4, 9),
    ],
)
def test_a_recursive_alias_is_refused(text: str, line: int, column: int) -> None:
    # before: the alias silently became null, or ruamel crashed merging it
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "x.yaml")
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (line, column)
    assert "found recursive alias 'a'" in issue.message
    assert "contains it" in issue.hint


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("b: {? [[1]] : 1}\n", 1, 7, "a mapping key cannot contain a list or mapping"),
        ("? [1, {a: 2}]\n: 1\n", 1, 3, "a mapping key cannot contain a list or mapping"),
        ("a: &a [1]\nb: {? [*a] : 1}\n", 2, 7, "a mapping key cannot contain a list or mapping"),
        ("s: !!set {? [[1]]}\n", 1, 4, "cannot read this value as !!set: unhashable type"),
        ("!!omap [{? [[1]] : 1}]\n", 1, 1, "cannot read this value as !!omap: unhashable type"),
    ],
)
def test_a_key_holding_a_list_or_mapping_is_located(
    text: str, line: int, column: int, message: str
) -> None:
    # before: TypeError: unhashable type: 'CommentedSeq' (found by the alias-bomb fuzzer)
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "key.yaml")
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (line, column)
    assert issue.message.startswith("YAML error: " + message)


def test_a_flat_list_as_a_key_still_loads() -> None:
    # passed before the change too
    assert parse_yaml("b: {? [1, x] : 1}\n", "key.yaml").data == {"b": {"(1, 'x')": 1}}


def test_a_redefined_anchor_names_the_newer_node_without_a_warning() -> None:
    # before: ReusedAnchorWarning (an error under this suite's warning filter)
    data = parse_yaml("a: &x 1\nb: &x 2\nc: *x\n", "x.yaml").data
    assert data == {"a": 1, "b": 2, "c": 2}


# -- very long lines and expressions -----------------------------------------------------


def test_a_very_long_value_loads(tmp_path: Path) -> None:
    # passed before the change too
    assert len(_load_text(tmp_path, _with("description", "a" * 300_000)).description) == 300_000


@pytest.mark.parametrize(
    "expression",
    [
        "action" + ".a" * 20_000,  # before: the CEL parser overflowed its stack (SIGSEGV)
        "1" + " " * 70_000 + "+",  # before: pyo3 PanicException, a BaseException
        "1 + " * (MAX_EXPRESSION_LENGTH // 4) + "1",
    ],
)
def test_a_too_long_cel_expression_is_an_issue(tmp_path: Path, expression: str) -> None:
    text = VALID.replace(
        "  rules: []", f"  rules:\n  - id: r\n    effect: deny\n    when: '{expression}'"
    )
    with pytest.raises(ContractError) as info:
        _load_text(tmp_path, text)
    issue = _only_issue(info)
    assert issue.path == "policy.rules[0].when"
    assert issue.message.startswith(f"CEL expression is too long ({len(expression)} characters")


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('contract: shop\n"\\ud800": 1\n', "\\ud800: invalid text"),
        (VALID + 'model: {provider: scripted, prompt: "a\\0b"}\n', "model.prompt: invalid text"),
    ],
)
def test_validate_reports_hostile_text_without_a_traceback(
    tmp_path: Path, text: str, shown: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["contract", "validate", str(path)])
    assert result.exit_code == ContractError.exit_code, result.output
    assert shown in result.stderr

"""JSON arguments: inline or ``@file``, with errors that name the option and position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from charter import UsageError
from charter.caps import CAPS
from charter.cli import cli
from charter.cli.common import parse_json_arg, parse_json_object
from charter.jsontext import json_nesting_depth


def test_inline_and_file_json(tmp_path: Path) -> None:
    assert parse_json_arg(None, "--x") is None
    assert parse_json_arg('{"a": [1, 2]}', "--x") == {"a": [1, 2]}
    assert parse_json_arg("3", "--x") == 3
    f = tmp_path / "a.json"
    f.write_text('{"b": "é"}', encoding="utf-8")
    assert parse_json_arg(f"@{f}", "--x") == {"b": "é"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{", "option --x: malformed JSON at line 1 column 2"),
        ("{'a': 1}", "option --x: malformed JSON at line 1 column 2"),
        ("", "option --x: malformed JSON at line 1 column 1"),
        ("@/no/such/file.json", "--x: cannot read /no/such/file.json"),
    ],
)
def test_bad_json_is_a_usage_error(value: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_json_arg(value, "--x")
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_objects_only() -> None:
    assert parse_json_object('{"a": 1}', "--x") == {"a": 1}
    assert parse_json_object(None, "--x") is None
    with pytest.raises(UsageError, match="expected a JSON object, got list"):
        parse_json_object("[]", "--x")


# -- caps on hostile JSON --------------------------------------------------------------


@pytest.mark.parametrize("text", ["[" * 5000, "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1"])
def test_nesting_deeper_than_the_parser_can_go_names_the_depth_cap(text: str) -> None:
    # before: RecursionError from json.loads, a traceback instead of a usage error
    with pytest.raises(UsageError) as info:
        parse_json_arg(text, "--input")
    message = str(info.value)
    depth = json_nesting_depth(text)
    assert message.startswith(f"option --input: input: the nesting depth is {depth:,}, ")
    assert "over the limit of 64 (json_depth)" in message
    assert info.value.exit_code == 2


def test_nesting_deeper_than_the_parser_can_go_in_a_file(tmp_path: Path) -> None:
    f = tmp_path / "deep.json"
    f.write_text("[" * 5000 + "]" * 5000, encoding="utf-8")
    with pytest.raises(UsageError, match=r"deep.json \(from --args\): args: the nesting depth"):
        parse_json_arg(f"@{f}", "--args")


def test_json_over_the_input_cap_is_refused_inline_and_from_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = json.dumps({"text": "é" * 20})  # 20 two-byte characters
    size = len(value.encode("utf-8"))
    f = tmp_path / "a.json"
    f.write_text(value, encoding="utf-8")
    monkeypatch.setenv(CAPS["input_bytes"].env, str(size))
    assert parse_json_arg(value, "--context") == parse_json_arg(f"@{f}", "--context")
    monkeypatch.setenv(CAPS["input_bytes"].env, str(size - 1))
    expected = (
        f"the JSON is {size:,} bytes, over the limit of {size - 1:,} (input_bytes); "
        "raise it with CHARTER_CAP_INPUT_BYTES=N if this input is expected, or pass less data"
    )
    with pytest.raises(UsageError) as info:
        parse_json_arg(value, "--context")
    assert str(info.value) == f"option --context: {expected}"
    with pytest.raises(UsageError) as info:
        parse_json_arg(f"@{f}", "--context")
    assert str(info.value) == f"{f} (from --context): {expected}"


def test_a_2_mb_input_is_refused_at_the_default_cap(tmp_path: Path) -> None:
    value = json.dumps({"text": "x" * 2_000_000})
    with pytest.raises(UsageError, match=r"is 2,000,012 bytes, over the limit of 1,000,000 "):
        parse_json_arg(value, "--input")


@pytest.mark.timeout(20)
def test_a_file_that_never_ends_is_read_no_further_than_the_cap() -> None:
    # before: read /dev/zero until memory ran out
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    with pytest.raises(UsageError) as info:
        parse_json_arg("@/dev/zero", "--input")
    assert str(info.value).startswith(
        "/dev/zero (from --input): the JSON is over the limit of 1,000,000 (input_bytes)"
    )


def test_a_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    # before: UnicodeDecodeError escaped (read_text raises a ValueError, not an OSError)
    f = tmp_path / "a.json"
    f.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(UsageError) as info:
        parse_json_arg(f"@{f}", "--input")
    assert str(info.value) == (
        f"{f} (from --input): not UTF-8 text (byte offset 7: invalid start byte); "
        "save the file as UTF-8"
    )


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.one_of(
        st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))),
        st.lists(
            st.sampled_from(["[", "]", "{", "}", '"a":', ",", "1", "NaN", '"\\ud800"', "9" * 5000]),
        ).map("".join),
        st.integers(0, 5000).map(lambda n: "[" * n),
    )
)
def test_any_text_is_a_value_or_a_usage_error(text: str) -> None:
    try:
        parse_json_arg(text, "--input")
    except UsageError as exc:
        str(exc).encode("utf-8")
        assert str(exc).startswith("option --input: ")


def test_a_command_given_5000_nested_brackets_says_which_option_and_cap(
    runner: CliRunner, contract_file: Path
) -> None:
    # before: a RecursionError traceback from `charter policy eval ... --input '[[[[...'`
    action = '{"name": "refund", "args": {"order_id": "o-1", "amount": 10}}'
    result = runner.invoke(
        cli, ["policy", "eval", str(contract_file), "--action", action, "--input", "[" * 5000]
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: option --input: input: the nesting depth is 5,000, over the limit of 64 " in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("@\udcae", "--x: cannot read \\udcae: No such file or directory"),
        ("@\ud800", "--x: cannot read \\ud800: 'utf-8' codec can't encode character"),
        ("@a\x00b", "--x: cannot read a\\x00b: embedded null byte"),
    ],
)
def test_a_file_name_that_cannot_be_opened_is_a_printable_usage_error(
    value: str, message: str
) -> None:
    # before: UnicodeEncodeError or ValueError escaped (found by fuzz_json_args.py), and a
    # name that is not UTF-8 made a message that could not be printed
    with pytest.raises(UsageError) as info:
        parse_json_arg(value, "--x")
    assert str(info.value).startswith(message)
    assert str(info.value).isprintable()

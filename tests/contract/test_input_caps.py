"""The caps on YAML files (charter.caps): size, expanded size, depth; every file Charter reads.

A contract is a file that may come from anywhere. These pin down that each way of making
the loader hang or exhaust memory ends quickly in a located ``ContractError`` naming the
cap, and that ``CHARTER_CAP_<NAME>`` moves each cap both ways.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter import Contract, ContractError, Registry
from charter.caps import CAPS
from charter.cli import cli
from charter.contract.registry import load_packs
from charter.contract.source import parse_yaml, read_yaml
from charter.contract.testing import run_file
from charter.errors import Issue
from tests.helpers import document, to_yaml

VALID = to_yaml(document())
NODES = CAPS["yaml_nodes"]
BYTES = CAPS["document_bytes"]
DEPTH = CAPS["yaml_depth"]


def _only_issue(exc: pytest.ExceptionInfo[ContractError]) -> Issue:
    (issue,) = exc.value.issues
    assert issue.hint
    return issue


def laughs(levels: int = 9, fan_out: int = 9) -> str:
    """The "billion laughs": ``a: &a [x, ...]``, ``b: &b [*a, ...]``, ... (fan_out ** levels)."""
    names = [chr(ord("a") + i) for i in range(levels)]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(["x"] * fan_out) + "]"]
    for prev, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


# -- aliases expanded --------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_the_billion_laughs_is_refused_fast_at_the_alias_that_crossed_the_cap(
    tmp_path: Path,
) -> None:
    # before: `charter contract validate` ran until killed (9 ** 9 values, built in _plain)
    path = tmp_path / "laughs.yaml"
    path.write_text(VALID + laughs(), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ContractError) as info:
        Contract.load(path)
    assert time.perf_counter() - started < 2
    issue = _only_issue(info)
    # a=10 nodes, b=91, c=820, d=7381, e=66430 with their keys: the first *e crosses 100,000
    first = len(VALID.splitlines())
    assert (issue.file, issue.line, issue.column) == (str(path), first + 6, len("f: &f [") + 1)
    assert issue.message.startswith("the number of YAML nodes, aliases expanded is ")
    assert "over the limit of 100,000 (yaml_nodes)" in issue.message
    assert NODES.env in issue.message
    assert "alias" in issue.hint


@pytest.mark.timeout(20)
def test_validate_refuses_the_billion_laughs_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(laughs(), encoding="utf-8")
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["contract", "validate", str(path)])
    assert time.perf_counter() - started < 2
    assert result.exit_code == ContractError.exit_code, result.output
    assert f"{path}:6:8: the number of YAML nodes" in result.stderr
    assert "(yaml_nodes)" in result.stderr


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    [
        # merge keys: every level merges the one below nine times
        "a0: &a0 {k: [1, 2, 3, 4, 5, 6, 7, 8]}\n"
        + "".join(
            f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 9)}], v{i}: [*a{i - 1}, *a{i - 1}]}}\n"
            for i in range(1, 12)
        ),
        # an alias as a mapping key: str() of the key would expand it
        laughs(5) + "? [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n: 1\n",
        # one wide level of aliases to a mid-sized node
        "a: &a [" + ",".join(["1"] * 1000) + "]\nb: [" + ",".join(["*a"] * 200) + "]\n",
    ],
    ids=["merge-keys", "complex-key", "wide"],
)
def test_other_alias_bombs_are_refused_fast(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "bomb.yaml")
    assert time.perf_counter() - started < 2
    issue = _only_issue(info)
    assert "(yaml_nodes)" in issue.message
    assert issue.line > 1 and issue.column > 1


def test_a_long_text_repeated_through_aliases_is_refused_by_its_expanded_bytes() -> None:
    # 4 aliases of 600,000 characters: few nodes, but 3 MB of text to validate and hash
    text = f'a: &a "{"x" * 600_000}"\nb: [*a, *a, *a, *a]\n'
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "long.yaml")
    issue = _only_issue(info)
    assert (issue.line, issue.column) == (2, len("b: [*a, *a, ") + 1)  # 4 x 600,000 > 2 MB
    assert issue.message.startswith("the size of the text in bytes, aliases expanded, is ")
    assert "(document_bytes)" in issue.message


def test_a_document_of_many_plain_nodes_is_refused_at_the_node_that_crossed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(NODES.env, "1000")  # the default takes ruamel 6 s to reach
    text = "a: [" + ",".join(["1"] * 1000) + "]\n"
    with pytest.raises(ContractError) as info:
        parse_yaml(text, "many.yaml")
    issue = _only_issue(info)
    # the mapping, `a` and the list are nodes 1-3: the 998th `1` is node 1,001
    assert (issue.line, issue.column) == (1, len("a: [") + 2 * 997 + 1)
    assert issue.message.startswith("the number of YAML nodes, aliases expanded is 1,001, ")
    assert "split the document" in issue.hint


def test_expansions_under_the_cap_load_and_the_cap_can_be_moved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = laughs(levels=4, fan_out=9)  # 7,381 nodes in `d`, 8,307 in all
    data = parse_yaml(text, "ok.yaml").data
    assert data["d"][8][8][8] == ["x"] * 9
    monkeypatch.setenv(NODES.env, "8000")
    with pytest.raises(ContractError, match=r"is 8,\d{3}, over the limit of 8,000 \("):
        parse_yaml(text, "ok.yaml")
    monkeypatch.setenv(NODES.env, "8307")
    assert parse_yaml(text, "ok.yaml").data == data


# -- the size of the file ----------------------------------------------------------------


@pytest.mark.timeout(20)
def test_a_3_mb_contract_is_refused_before_parsing(tmp_path: Path) -> None:
    # before: read, parsed and validated in full
    path = tmp_path / "big.yaml"
    path.write_text(VALID + "x-padding: " + "a" * 3_000_000 + "\n", encoding="utf-8")
    size = path.stat().st_size
    started = time.perf_counter()
    with pytest.raises(ContractError) as info:
        Contract.load(path)
    assert time.perf_counter() - started < 1
    issue = _only_issue(info)
    assert (issue.file, issue.line, issue.column, issue.path) == (str(path), 1, 1, "")
    assert issue.message == BYTES.exceeded(size)
    assert f"the size of the file in bytes is {size:,}, over the limit of 2,000,000" in str(issue)


def test_the_size_cap_is_exact_and_can_be_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID, encoding="utf-8")
    size = len(VALID.encode("utf-8"))
    monkeypatch.setenv(BYTES.env, str(size))
    assert Contract.load(path).name == "shop"
    assert parse_yaml(VALID, "c.yaml").data["contract"] == "shop"
    monkeypatch.setenv(BYTES.env, str(size - 1))
    with pytest.raises(ContractError, match=f"is {size:,}, over the limit of {size - 1:,} "):
        Contract.load(path)
    with pytest.raises(ContractError, match=r"\(document_bytes\)"):
        parse_yaml(VALID, "c.yaml")  # text handed over directly is capped too


def test_dev_zero_as_a_contract_is_refused_without_reading_it_all() -> None:
    # before: read /dev/zero until memory ran out. In a subprocess with an address-space
    # limit, so that a regression fails here instead of taking the machine down.
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    code = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from charter.cli import cli
        sys.argv = ["charter", "contract", "validate", "/dev/zero"]
        cli()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == ContractError.exit_code, done.stderr[-2000:]
    assert "/dev/zero:1:1: the size of the file in bytes is over the limit of 2,000,000" in (
        done.stderr
    )
    assert "(document_bytes)" in done.stderr


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_with_no_writer_reads_as_empty_instead_of_hanging(tmp_path: Path) -> None:
    # before: open() waited for a writer forever (`contract validate`, a registry directory)
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert read_yaml(fifo).data is None
    with pytest.raises(ContractError):
        Contract.load(fifo)


# -- every YAML file Charter reads -------------------------------------------------------


def test_packs_registries_and_policy_tests_are_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shop.yaml").write_text(VALID, encoding="utf-8")
    pack = tmp_path / "guard.yaml"
    pack.write_text("pack: guard\nrules: []\n# " + "x" * 500 + "\n", encoding="utf-8")
    tests = tmp_path / "shop.tests.yaml"
    tests.write_text("contract: shop.yaml\ncases: []\n# " + "x" * 500 + "\n", encoding="utf-8")
    monkeypatch.setenv(BYTES.env, "400")

    def refused(call: object) -> Issue:
        with pytest.raises(ContractError) as info:
            call()  # type: ignore[operator]
        issue = info.value.issues[0]
        assert (issue.line, issue.column) == (1, 1)
        assert "(document_bytes)" in issue.message
        return issue

    assert refused(lambda: load_packs([pack])).file == str(pack)
    assert refused(lambda: run_file(tests)).file == str(tests)
    assert refused(lambda: Registry.from_directory(tmp_path)).file in {
        str(pack),
        str(tmp_path / "shop.yaml"),
    }


# -- depth -------------------------------------------------------------------------------


def test_the_depth_cap_is_the_yaml_depth_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    nested = "a: " + "[" * 70 + "]" * 70 + "\n"
    with pytest.raises(ContractError) as info:
        parse_yaml(nested, "deep.yaml")
    issue = _only_issue(info)
    assert issue.message == "nested too deeply (more than 64 levels)"
    assert f"({DEPTH.name}; raise it with {DEPTH.env}=N" in issue.hint
    monkeypatch.setenv(DEPTH.env, "100")
    assert parse_yaml(nested, "deep.yaml").data["a"]
    monkeypatch.setenv(DEPTH.env, "5")
    aliased = "x: &x [[1]]\ny: [[[*x]]]\n"  # 2 + 3 levels by composing, 7 expanded
    with pytest.raises(ContractError, match=r"more than 5 levels"):
        parse_yaml(aliased, "alias.yaml")


def test_a_depth_cap_raised_past_the_stack_is_still_a_located_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ten lines of 300 levels each, stacked by aliases: deeper than Python can recurse
    monkeypatch.setenv(DEPTH.env, "100000")
    lines = ["l0: &l0 " + "[" * 300 + "0" + "]" * 300]
    lines += [f"l{i}: &l{i} " + "[" * 300 + f"*l{i - 1}" + "]" * 300 for i in range(1, 10)]
    with pytest.raises(ContractError) as info:
        parse_yaml("\n".join(lines) + "\n", "deep.yaml")
    assert "nested too deeply" in _only_issue(info).message


@pytest.mark.parametrize("name", ["a\x00b.yaml", "\ud800.yaml"])
def test_a_path_the_system_cannot_open_is_a_contract_error(name: str) -> None:
    # before: ValueError (embedded null byte) or UnicodeEncodeError from open()
    with pytest.raises(ContractError) as info:
        read_yaml(name)
    issue = _only_issue(info)
    assert (issue.file, issue.line, issue.column) == (name, 1, 1)
    assert issue.message.startswith("cannot read file: ")

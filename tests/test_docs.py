"""The documentation is executed, and the command reference is complete.

Like sqlite-utils' ``tests/test_docs.py``, but further: every ```console block of
``README.md`` and ``docs/*.md`` runs, so a user who copies a ``$ charter …`` line gets what
the docs show.

**Console blocks.** Each ``$ …`` line is a command (continued on the next line while it
ends in ``\\`` or has an unclosed quote, as in a shell); the lines after it, up to the next
``$`` line or the end of the block, are what it prints (stdout and stderr, as a terminal
shows them; blank lines at the end of an output are separators, not output). The commands
of one block run in order in one working directory, a fresh copy of:

- ``examples/`` of this checkout (so paths read as they do from the repository root);
- ``charter.db`` and ``payments.db`` as ``charter demo --tickets 60 --seed 7`` leaves them;
- ``refunds.v2.yaml``, which the docs ask the reader to write: the refunds contract as
  version 2, with ``big-refund`` lowered from $500 to $50;
- the files under ``tests/docs/files/``.

Output is compared line by line, exactly (trailing spaces aside), except that ``…`` or
``...`` inside a line matches any text, and a line that is only ``…`` (or ``...``), however
indented, matches any number of lines. A command exits 0, unless its output starts with ``error:`` (then
non-zero).

**Placeholders.** Ids cannot be stable, so commands write them as ``rv_…`` and ``run_…``:
the first review id (run id) printed by the latest command of the block that printed one,
as a reader would copy it; before any, the first pending review of the demo ledger (as
``charter review list`` lists it) and that review's run. In expected output, ids are
matched by ``…`` like any other text.

**Besides** ``charter``, blocks may use ``cat FILE`` (prints FILE; when the directory has
no FILE, the lines shown are written to it first, so a block can show the files its
commands read), ``export NAME=VALUE`` (for the later commands of the block) and
``> FILE`` after a command (its stdout goes to FILE).

**Directives**, HTML comments on the lines directly above the opening fence:

- ``<!-- exit: N -->``: the block's last command exits with status N;
- ``<!-- docs-test: skip (reason) -->``: not run here (a real model's key, a local server);
  reported as a skip with the reason — never for output that merely differs;
- ``<!-- docs-test: no ledger -->``: the directory has no ``charter.db`` or ``payments.db``;
- ``<!-- docs-test: postgres -->``: runs only when ``$CHARTER_TEST_POSTGRES`` names a
  server, with every ``postgresql://…`` URL in its commands replaced by a fresh schema on it.

**The reference.** docs/cli.md holds, for every command and group, its help as a ```text
block starting ``Usage: charter …`` (or a ``$ charter … --help`` console example), equal to
what ``--help`` prints in a terminal 100 columns wide, and names every option of it. After
changing the CLI, paste the output of ``COLUMNS=100 charter <command> --help`` into the
block (the failure shows it too).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from charter.cli import cli
from tests.helpers import ROOT
from tests.stores import PG_ENV, PG_SKIP, pg_schema

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI_MD = ROOT / "docs" / "cli.md"
FILES = ROOT / "tests" / "docs" / "files"
#: Help as a terminal of 100 columns (or wider: the cli group caps it at 100) shows it; click
#: keeps a margin of 2, and CliRunner would otherwise force 80.
WIDTH = 98

_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*(.*?)\s*-->$")
_ELLIPSIS = re.compile(r"…|\.\.\.")
_KNOWN_DIRECTIVE = re.compile(r"exit: \d+|docs-test: (skip \(.+\)|no ledger|postgres)")
_REVIEW_ID = re.compile(r"\brv_[0-9a-f]{8,}\b")
_RUN_ID = re.compile(r"\brun_[0-9a-f]{8,}\b")


# -- reading the docs ----------------------------------------------------------------------
@dataclass
class Command:
    line: int  # 1-based line of the `$` in the doc
    text: str  # as a shell would read it: continuations joined
    expected: list[str]


@dataclass
class Block:
    path: Path
    line: int  # the opening fence
    language: str
    body: list[str]
    directives: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def directive(self, name: str) -> str | None:
        """The argument of ``docs-test: NAME (…)`` or ``NAME: …``; ``""`` when bare."""
        for d in self.directives:
            body = d.removeprefix("docs-test:").strip()
            if body == name:
                return ""
            if body.startswith(name + ":"):
                return body[len(name) + 1 :].strip()
            if body.startswith(name + " "):
                return body[len(name) :].strip().removeprefix("(").removesuffix(")")
        return None


def blocks(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        directives = []
        j = i - 1
        while j >= 0 and (d := _DIRECTIVE.match(lines[j].strip())):
            directives.insert(0, d.group(1))
            j -= 1
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            i += 1
        yield Block(path, start + 1, m.group(1), lines[start + 1 : i], directives)
        i += 1


def _complete(text: str) -> bool:
    """Would a shell stop reading here (no trailing backslash, no open quote)?"""
    if text.endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return False
    return True


def commands(block: Block) -> list[Command]:
    out: list[Command] = []
    i = 0
    body = block.body
    while i < len(body):
        if not body[i].startswith("$ "):
            if out:
                out[-1].expected.append(body[i])
            elif body[i].strip():
                raise AssertionError(f"{block.where}: text before the first `$` command")
            i += 1
            continue
        line = block.line + 1 + i
        text = body[i][2:]
        while not _complete(text) and i + 1 < len(body):
            i += 1
            text = text[:-1] if text.endswith("\\") else text + "\n"
            text += body[i]
        out.append(Command(line, text, []))
        i += 1
    for c in out:
        while c.expected and not c.expected[-1].strip():
            c.expected.pop()
    return out


CONSOLE = [b for doc in DOCS for b in blocks(doc) if b.language == "console"]


# -- comparing output ----------------------------------------------------------------------
def _line_pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in _ELLIPSIS.split(expected.rstrip())))


def matches(expected: list[str], actual: list[str]) -> bool:
    """``expected`` (with ``…`` wildcards) against ``actual``, line by line."""
    patterns = [None if e.strip() in ("…", "...") else _line_pattern(e) for e in expected]
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if i == len(patterns):
                memo[i, j] = j == len(actual)
            elif (p := patterns[i]) is None:  # any number of lines
                memo[i, j] = any(go(i + 1, k) for k in range(j, len(actual) + 1))
            else:
                memo[i, j] = (
                    j < len(actual)
                    and p.fullmatch(actual[j].rstrip()) is not None
                    and go(i + 1, j + 1)
                )
        return memo[i, j]

    return go(0, 0)


# -- running commands ----------------------------------------------------------------------
def invoke(args: list[str]) -> Result:
    """``charter ARGS`` in this process, at the docs' width, leaving signal handlers as
    they were (``charter worker`` installs its own)."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return CliRunner().invoke(cli, args, prog_name="charter", terminal_width=WIDTH)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _env_clean(mp: pytest.MonkeyPatch) -> None:
    for name in ("CHARTER_DATABASE_URL", "CHARTER_DEMO_PAYMENTS"):
        mp.delenv(name, raising=False)
    mp.setenv("CHARTER_ALLOW_MODEL_REQUESTS", "false")


def _close_payments() -> None:
    from examples.refunds import payments

    payments.close_all()


@dataclass(frozen=True)
class Prepared:
    directory: Path
    review: str  # the first pending review of the demo ledger
    run: str  # its run


def _write_v2(directory: Path) -> None:
    """``refunds.v2.yaml``: the refunds contract as version 2, big-refund lowered to $50."""
    text = (ROOT / "examples" / "refunds" / "refunds.yaml").read_text(encoding="utf-8")
    for old, new in (
        ("\nversion: 1\n", "\nversion: 2\n"),
        ("action.args.amount_cents > 50000", "action.args.amount_cents > 5000"),
        ("Refunds over $500 need", "Refunds over $50 need"),
    ):
        assert text.count(old) == 1, f"examples/refunds/refunds.yaml no longer has {old!r}"
        text = text.replace(old, new)
    (directory / "refunds.v2.yaml").write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    """The directory every block starts from, made once: the demo's ledger and payments."""
    directory = tmp_path_factory.mktemp("docs")
    (directory / "examples").symlink_to(ROOT / "examples")
    _write_v2(directory)
    shutil.copytree(FILES, directory, dirs_exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        _env_clean(mp)
        mp.chdir(directory)
        try:
            demo = invoke(["demo", "--tickets", "60", "--seed", "7"])
            assert demo.exit_code == 0, demo.output
            reviews = invoke(["review", "list", "--json"])
            assert reviews.exit_code == 0, reviews.output
        finally:
            _close_payments()
    first = json.loads(reviews.stdout)[0]
    yield Prepared(directory, first["review_id"], first["run_id"])


_LEDGER_FILES = shutil.ignore_patterns("charter.db*", "payments.db*")


def _workdir(block: Block, prepared: Prepared, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    no_ledger = block.directive("no ledger") is not None
    shutil.copytree(
        prepared.directory, work, symlinks=True, ignore=_LEDGER_FILES if no_ledger else None
    )
    return work


@dataclass
class Session:
    """What the commands of one block share: the directory, the environment, the ids."""

    block: Block
    work: Path
    mp: pytest.MonkeyPatch
    review: str
    run: str
    postgres: str | None = None

    def expand(self, text: str) -> str:
        text = text.replace("rv_…", self.review).replace("run_…", self.run)
        if self.postgres is not None:
            text = re.sub(r"postgresql://[^\s'\"]+", self.postgres, text)
        return text

    def run_command(self, command: Command, last: bool) -> None:
        words = shlex.split(self.expand(command.text), comments=True)
        where = f"{self.block.where} (line {command.line}): $ {command.text}"
        redirect: Path | None = None
        if ">" in words:
            k = words.index(">")
            redirect = self.work / words[k + 1]
            words = words[:k] + words[k + 2 :]
        if words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.mp.setenv(name, value)
            assert not command.expected, f"{where}: export prints nothing"
            return
        if words[0] == "cat":
            target = self.work / words[1]
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(command.expected) + "\n", encoding="utf-8")
            shown = target.read_text(encoding="utf-8").splitlines()
            code = 0
        else:
            assert words[0] == "charter", f"{where}: the docs test runs only charter commands"
            try:
                result = invoke(words[1:])
            finally:
                _close_payments()
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                assert result.exc_info is not None
                trace = "".join(traceback.format_exception(*result.exc_info))
                raise AssertionError(f"{where}: raised\n{trace}")
            if redirect is not None:
                redirect.write_text(result.stdout, encoding="utf-8")
                shown = result.stderr.splitlines()
            else:
                shown = result.output.splitlines()
            code = result.exit_code
        while shown and not shown[-1].strip():
            shown.pop()
        if not matches(command.expected, shown):
            raise AssertionError(
                f"{where}\n--- the docs show:\n"
                + "\n".join(command.expected)
                + "\n--- charter printed:\n"
                + "\n".join(shown)
            )
        wanted = self.block.directive("exit") if last else None
        if wanted is not None:
            assert code == int(wanted), f"{where}: exit status {code}, the docs say {wanted}"
        elif command.expected and command.expected[0].startswith("error:"):
            assert code != 0, f"{where}: exit status 0 after an error"
        else:
            assert code == 0, f"{where}: exit status {code}"
        output = "\n".join(shown)
        if m := _REVIEW_ID.search(output):
            self.review = m.group(0)
        if m := _RUN_ID.search(output):
            self.run = m.group(0)


@pytest.mark.parametrize("block", CONSOLE, ids=[b.where for b in CONSOLE])
def test_console_example(block: Block, prepared: Prepared, tmp_path: Path) -> None:
    for d in block.directives:
        assert _KNOWN_DIRECTIVE.fullmatch(d), f"{block.where}: unknown directive <!-- {d} -->"
    reason = block.directive("skip")
    if reason is not None:
        pytest.skip(f"{block.where}: {reason or 'no reason given'}")
    cmds = commands(block)
    assert cmds, f"{block.where}: a console block with no `$ ` command (use ```text)"
    work = _workdir(block, prepared, tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        _env_clean(mp)
        mp.chdir(work)
        session = Session(block, work, mp, prepared.review, prepared.run)
        if block.directive("postgres") is not None:
            if not os.environ.get(PG_ENV):
                pytest.skip(f"{block.where}: {PG_SKIP}")
            with pg_schema("docs") as url:
                session.postgres = url
                for i, c in enumerate(cmds):
                    session.run_command(c, i == len(cmds) - 1)
        else:
            for i, c in enumerate(cmds):
                session.run_command(c, i == len(cmds) - 1)


def test_the_harness_matches_as_documented() -> None:
    assert matches(["a … c"], ["a b b c"])
    assert matches(["a ... c"], ["a  c"])
    assert not matches(["a … c"], ["a b d"])
    assert matches(["x", "…", "y"], ["x", "y"])
    assert matches(["x", "…", "y"], ["x", "1", "2", "y"])
    assert not matches(["x", "…", "y"], ["x", "1", "2"])
    assert matches(["{", "  ...", "}"], ["{", '  "a": 1', '  "b": 2', "}"])
    assert not matches([], ["something"])
    assert matches(["trailing  "], ["trailing"])
    block = Block(
        ROOT / "README.md",
        1,
        "console",
        ["$ charter a \\", "    --b 'c", "d'", "out", "", "$ charter e", ""],
    )
    got = [(c.text, c.expected) for c in commands(block)]
    assert got == [("charter a     --b 'c\nd'", ["out"]), ("charter e", [])]


# -- the command reference -----------------------------------------------------------------
def _commands(
    command: click.Command = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands())
_NAMES = ["charter " + " ".join(p) if p else "charter" for p, _ in COMMANDS]


def documented_help() -> dict[tuple[str, ...], list[list[str]]]:
    """The help blocks of docs/cli.md by command path (a list: a command may appear twice)."""
    found: dict[tuple[str, ...], list[list[str]]] = {}

    def add(text: list[str]) -> None:
        words = text[0].split()[2:]  # after "Usage: charter"
        path = tuple(
            w
            for w in words[: next((k for k, w in enumerate(words) if not w.islower()), len(words))]
        )
        found.setdefault(path, []).append(text)

    for block in blocks(CLI_MD):
        if block.language == "text" and block.body and block.body[0].startswith("Usage: charter"):
            add(block.body)
        elif block.language == "console":
            for c in commands(block):
                words = c.text.split()
                if words[0] == "charter" and words[-1] in ("--help", "-h") and c.expected:
                    add(c.expected)
    return found


def current_help(path: tuple[str, ...]) -> list[str]:
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output.rstrip("\n").splitlines()


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=_NAMES)
def test_help_in_cli_md_is_current(path: tuple[str, ...], command: click.Command) -> None:
    name = " ".join(("charter", *path))
    documented = documented_help().get(path)
    assert documented, f"docs/cli.md has no help block for `{name}` (paste `{name} --help`)"
    now = current_help(path)
    for text in documented:
        assert [line.rstrip() for line in text] == [line.rstrip() for line in now], (
            f"docs/cli.md: the help of `{name}` is out of date; it is now:\n" + "\n".join(now)
        )


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=_NAMES)
def test_every_command_and_option_is_in_cli_md(
    path: tuple[str, ...], command: click.Command
) -> None:
    text = CLI_MD.read_text(encoding="utf-8")
    name = " ".join(("charter", *path))
    assert name in text, f"`{name}` is not in docs/cli.md"
    helps = "\n".join(line for block in documented_help().get(path, []) for line in block)
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in param.opts + param.secondary_opts:
                assert opt in helps, f"option {opt} of `{name}` is not documented in docs/cli.md"


def test_no_help_block_names_a_missing_command() -> None:
    known = {p for p, _ in COMMANDS}
    for path in documented_help():
        assert path in known, (
            f"docs/cli.md documents `charter {' '.join(path)}`, which does not exist"
        )


# -- docs/security.md ----------------------------------------------------------------------
_TEST_REF = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def test_every_test_security_md_names_exists() -> None:
    """The threat model's proofs are real: each named test file and test function exists."""
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    refs = _TEST_REF.findall(text)
    assert len(refs) > 30
    for path, name in refs:
        source = ROOT / path
        assert source.is_file(), f"docs/security.md names {path}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", source.read_text("utf-8"), re.M), (
                f"docs/security.md names {path}::{name}, which is not a test there"
            )


def test_security_md_lists_every_cap_with_its_default() -> None:
    from charter.caps import CAPS

    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    for cap in CAPS.values():
        assert f"| `{cap.name}` | {cap.default:,} |" in text, (
            f"docs/security.md: the caps table lacks `{cap.name}` with its default {cap.default:,}"
        )

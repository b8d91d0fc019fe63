"""Reading YAML documents while remembering where every value came from.

Errors must name a file, a line, a column and a field path; ruamel.yaml's round-trip
loader keeps positions on every mapping and sequence, so we load with it, keep the
positioned tree for error reporting and hand plain dicts/lists to everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from charter.errors import ContractError, Issue

PathPart = str | int


def format_path(parts: Sequence[PathPart]) -> str:
    """Render ``["policy", "rules", 3, "when"]`` as ``policy.rules[3].when``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class Document:
    """A parsed YAML file: plain data plus the positioned tree used to locate fields."""

    file: str
    data: Any
    tree: Any

    def locate(self, parts: Sequence[PathPart]) -> tuple[int, int]:
        """Return the 1-based (line, column) of the deepest node of ``parts`` that exists."""
        node = self.tree
        line, col = 1, 1
        for part in parts:
            lc = getattr(node, "lc", None)
            if lc is None:
                break
            try:
                if isinstance(part, int) and isinstance(node, list):
                    if part >= len(node):
                        break
                    ln, cl = lc.item(part)
                    node = node[part]
                elif isinstance(node, dict) and part in node:
                    ln, cl = lc.key(part)
                    node = node[part]
                else:
                    break
            except (KeyError, IndexError, TypeError):
                break
            line, col = ln + 1, cl + 1
        return line, col

    def issue(self, parts: Sequence[PathPart], message: str, hint: str = "") -> Issue:
        line, col = self.locate(parts)
        return Issue(self.file, line, col, format_path(parts), message, hint)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool | int | float | str) or node is None:
        # ruamel scalar subclasses (ScalarFloat, etc.) become builtins
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return str(node)
    # dates and timestamps: keep their ISO text, JSON Schema sees strings
    iso = getattr(node, "isoformat", None)
    if callable(iso):
        return str(iso())
    return str(node)


def _line_col(text: str, position: int | None) -> tuple[int, int]:
    """1-based line and column of a character offset (1:1 when unknown)."""
    if not isinstance(position, int) or position < 0:
        return 1, 1
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def parse_yaml(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors and duplicate keys raise ``ContractError`` with position."""
    yaml = YAML(typ="rt")
    try:
        tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        col = mark.column + 1 if mark is not None else 1
        problem = exc.problem or str(exc)
        start = exc.context_mark
        if exc.context and start is not None and start is not mark and "duplicate" not in problem:
            # e.g. an unclosed bracket: say where the construct that failed began
            problem += (
                f" ({exc.context} started at line {start.line + 1}, column {start.column + 1})"
            )
        hint = (
            "remove or rename the repeated key"
            if "duplicate" in problem
            else ("check indentation, quoting and brackets near this position")
        )
        raise ContractError(
            [Issue(file, line, col, "", f"YAML syntax error: {problem}", hint)]
        ) from None
    except YAMLError as exc:  # e.g. ReaderError: a control character the YAML reader refuses
        line, col = _line_col(text, getattr(exc, "position", None))
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ContractError(
            [Issue(file, line, col, "", f"YAML error: {problem}", "remove the control character")]
        ) from None
    return Document(file=file, data=_plain(tree), tree=tree)


def read_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file; a missing or unreadable file is a ``ContractError``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractError([Issue(str(p), 1, 1, "", "file not found", "check the path")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ContractError(
            [Issue(str(p), 1, 1, "", f"cannot read file: {exc}", "make it a readable UTF-8 file")]
        ) from None
    return parse_yaml(text, str(p))

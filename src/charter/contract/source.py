"""Reading YAML documents while remembering where every value came from.

Errors must name a file, a line, a column and a field path; ruamel.yaml's round-trip
loader keeps positions on every mapping and sequence, so we load with it, keep the
positioned tree for error reporting and hand plain dicts/lists to everything else.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import ScalarNode

from charter.caps import CAPS, Cap
from charter.errors import ContractError, Issue

if sys.platform != "win32":
    import fcntl

PathPart = str | int

#: Values nested deeper than the ``yaml_depth`` cap (:mod:`charter.caps`, 64 unless
#: overridden) are refused; the top-level mapping is level 1 and every value, a scalar too,
#: is one level below its parent (``a: [1]``: the 1 is at level 3). Real contracts need a
#: dozen levels at most; the cap keeps every recursive consumer (the YAML composer, JSON
#: Schema checks of ``input``/``args``, hashing) far from Python's recursion limit, and
#: holds for aliases too (``_plain`` counts the expanded data).
#:
#: The expanded size is capped too: an alias stands for a copy of the node it names, so a
#: few lines of aliases of aliases (a "billion laughs") stand for billions of values. The
#: composer counts the nodes (``yaml_nodes``) and scalar bytes (``document_bytes``) every
#: node stands for, aliases expanded, and stops at the alias that crosses a cap, before
#: anything expands it. The file itself is read only up to ``document_bytes``.
DEPTH_CAP = CAPS["yaml_depth"]
NODES_CAP = CAPS["yaml_nodes"]
BYTES_CAP = CAPS["document_bytes"]

#: Integers this large cannot be turned into text (Python refuses more than 4300 digits),
#: so hashing or reporting them would fail later.
_MAX_INT = 10**4000

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


def _too_deep_message() -> str:
    return f"nested too deeply (more than {DEPTH_CAP.limit} levels)"


def _depth_hint() -> str:
    return (
        f"flatten the structure: at most {DEPTH_CAP.limit} levels of nested mappings and lists "
        f"({DEPTH_CAP.name}; raise it with {DEPTH_CAP.env}=N if this input is expected)"
    )


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


class _InvalidValueError(Exception):
    """A value that loaded as YAML but cannot be used as contract data; ``path`` locates it."""

    def __init__(self, path: list[PathPart], message: str, hint: str) -> None:
        super().__init__(message)
        self.path, self.message, self.hint = path, message, hint


def _text(value: str, path: list[PathPart], key: str | None = None) -> str:
    """``value``, unless it holds a character no contract can (``key``: it is that key).

    Escapes in double-quoted scalars can produce what a UTF-8 file cannot hold: a lone
    surrogate (``"\\ud800"``) is not a character and cannot be encoded (hashing, storing and
    printing would fail), and NUL (``"\\0"``) is refused by PostgreSQL and by file paths.
    """
    found = _BAD_CHAR.search(value)
    if found is None:
        return value
    where = [*path, key] if key is not None else list(path)
    if found.group() == "\0":
        raise _InvalidValueError(
            where, "invalid text: a NUL character (\\0) is not allowed", "remove the \\0 escape"
        )
    raise _InvalidValueError(
        where,
        f"invalid text: a lone surrogate {ascii(found.group())[1:-1]} is not a character",
        "write the character itself, or escape one outside the BMP as \\UXXXXXXXX",
    )


def _plain(node: Any, path: list[PathPart], depth: int = 1) -> Any:
    """Plain builtins from ruamel's tree; ``path`` is the node's field path (extended in place)."""
    if depth > DEPTH_CAP.limit:  # reachable through aliases, which the composer's count skips
        raise _InvalidValueError(list(path), _too_deep_message(), _depth_hint())
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            key = str(k)
            path.append(_text(key, path, key))
            out[key] = _plain(v, path, depth + 1)
            path.pop()
        return out
    if isinstance(node, list):
        items = []
        for i, v in enumerate(node):
            path.append(i)
            items.append(_plain(v, path, depth + 1))
            path.pop()
        return items
    if isinstance(node, bool) or node is None:
        return node
    # ruamel scalar subclasses (ScalarFloat, etc.) become builtins
    if isinstance(node, int):
        if abs(node) >= _MAX_INT:  # only hex, octal or binary get here: see _Constructor
            raise _InvalidValueError(
                list(path), "integer is too large (more than 4000 digits)", "use a smaller number"
            )
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return _text(str(node), path)
    # dates and timestamps: keep their ISO text, JSON Schema sees strings
    iso = getattr(node, "isoformat", None)
    if callable(iso):
        return str(iso())
    return _text(str(node), path)  # e.g. a scalar with a custom tag (`!custom text`)


class _RecursiveAliasError(ComposerError):
    """An alias inside the node its anchor names."""

    hint = "an alias cannot refer to a node that contains it; copy the values instead"


class _TooLargeError(ComposerError):
    """The document stands for more nodes or scalar bytes than a cap allows, aliases expanded."""

    def __init__(self, message: str, hint: str, mark: Any) -> None:
        super().__init__(None, None, message, mark)
        self.hint = hint


class _Composer(Composer):
    """ruamel's composer, refusing recursive aliases and alias bombs; quiet about redefined anchors.

    An alias inside the node it names (``a: &a [*a]``) would be constructed as ``None``, or
    crash ruamel in a merge (``&a {<<: *a}``); no contract can mean one, so it is an error.
    Redefining an anchor is allowed by YAML: later aliases name the newer node.

    Every node is counted as often as it will be copied: a node once, an alias as many nodes
    (and scalar bytes) as the node it names stands for. The counts are what converting the
    tree to plain data visits (an upper bound: a merge key counts the whole merged mapping),
    so a document over a cap is refused here, at the node or alias that crossed it, before
    the constructor or :func:`_plain` can expand anything.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False
        self._nodes = self._bytes = 0  # so far, in document order, aliases expanded
        self._sizes: dict[int, tuple[int, int]] = {}  # id(anchored node) -> (nodes, bytes)
        self._node_limit, self._byte_limit = NODES_CAP.limit, BYTES_CAP.limit

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None and target.end_mark is None:  # still being composed
                raise _RecursiveAliasError(
                    None,
                    None,
                    f"found recursive alias {event.anchor!r}: it is inside the node it names",
                    event.start_mark,
                )
            node = super().compose_node(parent, index)  # raises for an undefined alias
            nodes, size = self._sizes.get(id(node), (1, 0))
            self._count(nodes, size, event.start_mark, alias=True)
            return node
        event = self.parser.peek_event()
        nodes, size = self._nodes, self._bytes
        self._count(1, _scalar_bytes(getattr(event, "value", None)), event.start_mark)
        node = super().compose_node(parent, index)
        if node.anchor is not None:
            self._sizes[id(node)] = (self._nodes - nodes, self._bytes - size)
        return node

    def _count(self, nodes: int, size: int, mark: Any, *, alias: bool = False) -> None:
        self._nodes += nodes
        self._bytes += size
        what = "an alias copies the whole node it names, each time it is used"
        if self._nodes > self._node_limit:
            hint = (
                f"{what}: use fewer aliases or smaller anchored nodes"
                if alias
                else "split the document, or list fewer values"
            )
            raise _TooLargeError(NODES_CAP.exceeded(self._nodes), hint, mark)
        if self._bytes > self._byte_limit:  # only aliases can get here: the file is smaller
            cap = BYTES_CAP
            raise _TooLargeError(
                f"the size of the text in bytes, aliases expanded, is {self._bytes:,}, over the "
                f"limit of {cap.limit:,} ({cap.name}); raise it with {cap.env}=N if this input "
                "is expected",
                f"{what}: do not repeat long text through aliases",
                mark,
            )


def _scalar_bytes(value: Any) -> int:
    """The UTF-8 size of a scalar's text (0 for a collection's start event)."""
    if not isinstance(value, str):
        return 0
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


class _BadScalarError(ConstructorError):
    """A value whose text its tag (explicit, or resolved like ``!!int``) cannot convert."""

    hint = "fix the value, or remove an explicit tag such as !!int"


def _cannot_read(node: Any, exc: Exception) -> _BadScalarError:
    name = str(node.tag).replace("tag:yaml.org,2002:", "!!")
    what = "this value"
    if isinstance(node, ScalarNode):
        text = str(node.value)
        what = repr(text if len(text) <= 40 else text[:37] + "...")
    if isinstance(exc, LookupError):  # KeyError (`!!bool maybe`), IndexError (`!!int ""`)
        reason = "not a recognised value"
    elif isinstance(exc, AttributeError):  # e.g. `!!set x`: a tag for another kind of node
        reason = f"the tag does not fit a {node.id}"
    else:
        reason = str(exc)[:200]
    return _BadScalarError(None, None, f"cannot read {what} as {name}: {reason}", node.start_mark)


#: what ruamel's constructors raise, without a position, for a value its tag cannot convert
_CONSTRUCTION_ERRORS = (ValueError, LookupError, OverflowError, TypeError, AttributeError)


class _BadKeyError(ConstructorError):
    """A complex mapping key with a list or mapping inside it: Python cannot hash it."""

    hint = "use a plain scalar as the key"


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that reports a scalar it cannot convert, with its position.

    An explicit tag can ask for a conversion the text does not allow (``!!int abc``,
    ``!!bool maybe``, ``!!timestamp 2026-13-45``, an integer of more than 4300 digits);
    ruamel then raises ``ValueError``/``KeyError``/``OverflowError`` without a position,
    ``IndexError`` for an empty or truncated number (``!!int``, ``!!float 1e``),
    ``AttributeError`` for a tag on the wrong kind of node (``!!set x``) and ``TypeError``
    for a set or ordered map whose key holds a list (``!!set {? [[1]]}``).
    Unknown tags, ``!!python/...`` included, construct no Python objects in round-trip mode.
    """

    def construct_non_recursive_object(self, node: Any, tag: str | None = None) -> Any:
        try:
            return super().construct_non_recursive_object(node, tag)
        except _CONSTRUCTION_ERRORS as exc:
            raise _cannot_read(node, exc) from None

    def construct_document(self, node: Any) -> Any:
        try:
            return super().construct_document(node)
        except _CONSTRUCTION_ERRORS as exc:  # a top-level value, built outside the above
            raise _cannot_read(node, exc) from None

    def check_mapping_key(
        self, node: Any, key_node: Any, mapping: Any, key: Any, value: Any
    ) -> Any:
        # ruamel turns a list key into a tuple, but leaves the lists and mappings inside it:
        # `? [[1]] : x` ended in "TypeError: unhashable type: 'CommentedSeq'"
        try:
            hash(key)
        except TypeError:
            raise _BadKeyError(
                None,
                None,
                "a mapping key cannot contain a list or mapping (only a flat list of scalars)",
                key_node.start_mark,
            ) from None
        return super().check_mapping_key(node, key_node, mapping, key, value)


def _line_col(text: str, position: int | None) -> tuple[int, int]:
    """1-based line and column of a character offset (1:1 when unknown)."""
    if not isinstance(position, int) or position < 0:
        return 1, 1
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _too_deep(file: str, line: int, col: int) -> ContractError:
    return ContractError([Issue(file, line, col, "", _too_deep_message(), _depth_hint())])


def _too_big(file: str, size: int | None) -> ContractError:
    """The file is over the ``document_bytes`` cap (``size`` None: a stream, size unknown)."""
    return ContractError(
        [Issue(file, 1, 1, "", _size_message(BYTES_CAP, size), "split the file, or shorten it")]
    )


def _size_message(cap: Cap, size: int | None) -> str:
    if size is not None:
        return cap.exceeded(size)
    return (
        f"{cap.what} is over the limit of {cap.limit:,} ({cap.name}); "
        f"raise it with {cap.env}=N if this input is expected"
    )


def parse_yaml(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors and duplicate keys raise ``ContractError`` with position.

    So does anything else no contract can hold: text over the ``document_bytes`` cap, nesting
    deeper than ``yaml_depth``, more than ``yaml_nodes`` nodes with aliases expanded, a lone
    surrogate (``"\\ud800"``), a tagged scalar that cannot be converted (``!!int x``).
    """
    if len(text) > BYTES_CAP.limit // 4:  # else it is under the cap whatever its characters
        size = _scalar_bytes(text)
        if size > BYTES_CAP.limit:
            raise _too_big(file, size)
    yaml = YAML(typ="rt")
    yaml.Composer = _Composer
    yaml.Constructor = _Constructor
    yaml.max_depth = DEPTH_CAP.limit
    try:
        tree = yaml.load(text)
    except MaxDepthExceededError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise _too_deep(file, line, col) from None
    except _TooLargeError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise ContractError([Issue(file, line, col, "", str(exc.problem), exc.hint)]) from None
    except (_BadScalarError, _BadKeyError, _RecursiveAliasError) as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise ContractError(
            [Issue(file, line, col, "", f"YAML error: {exc.problem}", exc.hint)]
        ) from None
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
    except RecursionError:
        # max_depth keeps the composer well inside the limit; this only happens when the
        # caller's own stack is already nearly exhausted, and then no position is known
        raise _too_deep(file, 1, 1) from None
    doc = Document(file=file, data=None, tree=tree)
    try:
        doc.data = _plain(tree, [])
    except RecursionError:  # only with yaml_depth raised far above its default
        raise _too_deep(file, 1, 1) from None
    except _InvalidValueError as exc:
        line, col = doc.locate(exc.path)
        raise ContractError(
            [Issue(file, line, col, _printable_path(exc.path), exc.message, exc.hint)]
        ) from None
    return doc


def _printable_path(parts: Sequence[PathPart]) -> str:
    # a key holding a lone surrogate cannot be encoded for printing: show it escaped
    return _BAD_CHAR.sub(lambda m: ascii(m.group())[1:-1], format_path(parts))


def _utf8_error(file: str, exc: UnicodeDecodeError) -> ContractError:
    """Locate the first byte that is not UTF-8: ``exc.object`` holds the whole file's bytes."""
    before = bytes(exc.object[: exc.start]).decode("utf-8")  # valid: the error is the first
    before = before.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it
    line, col = _line_col(before, len(before))
    raw = bytes(exc.object[exc.start : exc.end])[:4]
    bad = ("byte " if len(raw) == 1 else "bytes ") + " ".join(f"0x{b:02x}" for b in raw)
    return ContractError(
        [
            Issue(
                file,
                line,
                col,
                "",
                f"invalid UTF-8: {bad} at byte offset {exc.start} ({exc.reason})",
                "save the file as UTF-8 and replace the damaged character",
            )
        ]
    )


class FileTooLargeError(Exception):
    """A file (or stream) longer than the cap it is read under; ``size`` None: a stream."""

    def __init__(self, cap: Cap, size: int | None) -> None:
        super().__init__(_size_message(cap, size))
        self.cap, self.size = cap, size


def read_bounded(path: str | Path, cap: Cap) -> bytes:
    """The bytes of ``path``, refusing more than ``cap.limit`` of them without reading them.

    A regular file's size is checked before reading; anything else (a FIFO, ``/dev/zero``,
    ``/dev/stdin``) is read up to one byte past the cap. A FIFO is opened without waiting
    for a writer: with none, it reads as empty instead of hanging. Raises
    :class:`FileTooLargeError` or :class:`OSError`.
    """
    limit = cap.limit
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise FileTooLargeError(cap, info.st_size)
        if sys.platform != "win32" and not stat.S_ISREG(info.st_mode):
            # blocking reads from here: a writer that is slow is waited for, not spun on
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(limit + 1 - got, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    if got > limit:
        raise FileTooLargeError(cap, info.st_size if stat.S_ISREG(info.st_mode) else None)
    return b"".join(chunks)


def read_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file; a missing, unreadable or too large file is a ``ContractError``.

    Every YAML file Charter reads comes through here: contracts, packs, registries and
    policy test files. Files over the ``document_bytes`` cap are refused before parsing.
    """
    p = Path(path)
    try:
        data = read_bounded(p, BYTES_CAP)
        # as text mode reads it: universal newlines
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise ContractError([Issue(str(p), 1, 1, "", "file not found", "check the path")]) from None
    except FileTooLargeError as exc:
        raise _too_big(str(p), exc.size) from None
    except UnicodeDecodeError as exc:
        raise _utf8_error(str(p), exc) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the name, say
        raise ContractError(
            [Issue(str(p), 1, 1, "", f"cannot read file: {exc}", "make it a readable UTF-8 file")]
        ) from None
    return parse_yaml(text, str(p))

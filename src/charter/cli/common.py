"""Shared CLI plumbing: JSON arguments, output, progress, and turning errors into exit codes."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

import click

from charter import jsontext
from charter.caps import CAPS
from charter.contract.source import FileTooLargeError, read_bounded
from charter.errors import CharterError, ContractError, UsageError

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

P = ParamSpec("P")
R = TypeVar("R")


def parse_json_arg(value: str | None, option: str) -> Any:
    """Inline JSON, or ``@path`` to read JSON from a file; errors name the option and position.

    Either is refused over the ``input_bytes`` cap (a file is read no further than that) and
    nested deeper than ``json_depth``, even deeper than :func:`json.loads` can recurse.
    """
    if value is None:
        return None
    cap = CAPS["input_bytes"]
    source = f"option {option}"
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        # a name that is not UTF-8 or holds a control character is shown escaped (printable)
        shown = str(path) if str(path).isprintable() else repr(str(path))[1:-1]
        source = f"{shown} (from {option})"
        try:
            text = read_bounded(path, cap).decode("utf-8")
        except FileTooLargeError as exc:
            raise UsageError(f"{source}: {_too_large(exc.size)}") from None
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {shown}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise UsageError(
                f"{source}: not UTF-8 text (byte offset {exc.start}: {exc.reason}); "
                "save the file as UTF-8"
            ) from None
        except ValueError as exc:  # a NUL in the name, a surrogate the file system refuses
            raise UsageError(f"{option}: cannot read {shown}: {exc}") from None
    elif len(value) > cap.limit // 4 and (size := jsontext.utf8_size(value)) > cap.limit:
        raise UsageError(f"{source}: {_too_large(size)}")
    try:
        parsed = jsontext.loads(text)
    except RecursionError:
        raise UsageError(f"{source}: {jsontext.too_deep(text, option.lstrip('-'))}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
            "pass valid JSON inline (quote it for your shell) or @file.json"
        ) from None
    except ValueError as exc:  # NaN, Infinity, an integer of more than 4300 digits
        raise UsageError(f"{source}: {exc}") from None
    found = jsontext.problems(parsed, option.lstrip("-"))
    if found:
        raise UsageError(f"{source}: " + "; ".join(found))
    return parsed


def _too_large(size: int | None) -> str:
    cap = CAPS["input_bytes"]
    what = f"{size:,} bytes, over" if size is not None else "over"
    return (
        f"the JSON is {what} the limit of {cap.limit:,} ({cap.name}); "
        f"raise it with {cap.env}=N if this input is expected, or pass less data"
    )


def parse_json_object(value: str | None, option: str) -> dict[str, Any] | None:
    parsed = parse_json_arg(value, option)
    if parsed is not None and not isinstance(parsed, dict):
        raise UsageError(f"option {option}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


#: seconds between two frames of a progress bar: fast work is not slowed by the terminal
REDRAW_EVERY = 0.1


class Progress:
    """How far a long command is, told as ``(done, total)`` calls; drawn as a bar or not at all.

    One shape for every command: the work (``verify``, ``backtest``, the demo's ``run``)
    takes an optional ``(done, total)`` callback, and the command passes one of these. The
    bar is created at the first call, so a total learnt only once the work starts is fine.
    """

    def __init__(self, label: str, file: TextIO | None) -> None:
        self._label = label
        self._file = file  # None: draw nothing
        self._bar: ProgressBar[int] | None = None  # created at the first call
        self._started = self._drawn = time.perf_counter()
        self._done = self._total = 0

    def __call__(self, done: int, total: int) -> None:
        if self._file is None:
            return
        self._done, self._total = done, max(total, done)
        if self._bar is None:
            if not self._total:
                return  # nothing to do is not worth a bar
            self._started = time.perf_counter()
            self._bar = click.progressbar(
                length=self._total,
                label=self._label,
                file=self._file,
                show_pos=True,
                show_eta=True,
                item_show_func=self._rate,
            )
            self._bar.__enter__()  # draws the first frame
            self._drawn = time.perf_counter()
        elif done >= total or time.perf_counter() - self._drawn >= REDRAW_EVERY:
            self._draw()

    def _draw(self) -> None:
        assert self._bar is not None
        self._bar.length = self._total
        if self._done > self._bar.pos:
            self._bar.update(self._done - self._bar.pos)
        else:
            self._bar.render_progress()
        self._drawn = time.perf_counter()

    def _rate(self, _item: int | None) -> str | None:
        if not self._done:
            return None
        elapsed = max(time.perf_counter() - self._started, 1e-3)
        return f"{self._done / elapsed:,.1f} runs/s"

    def close(self) -> None:
        """Draw the last position, end the bar's line and show the cursor again."""
        if self._bar is not None:
            if self._done != self._bar.pos or self._total != self._bar.length:
                self._draw()
            self._bar.__exit__(None, None, None)
            self._bar = None


@contextmanager
def progress(
    label: str, *, enabled: bool, total: int | None = None, file: TextIO | None = None
) -> Iterator[Progress]:
    """A progress bar on stderr (or ``file``) while the block runs, fed by ``(done, total)``.

    Only on a terminal and only when ``enabled`` (commands pass ``not as_json``): anywhere
    else it prints nothing at all, not even click's one label line, so scripts and tests
    see exactly the output they always did. ``total`` draws the empty bar at once.
    """
    stream = sys.stderr if file is None else file
    shown = enabled and _isatty(stream)
    bar = Progress(label, stream if shown else None)
    try:
        if total is not None:
            bar(0, total)
        yield bar
    finally:
        bar.close()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Print Charter errors as messages (or the JSON envelope) and exit with their code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CharterError as exc:
            ctx = click.get_current_context(silent=True)
            as_json = bool(ctx and ctx.params.get("as_json"))
            if as_json:
                envelope: dict[str, Any] = {"error": {"code": exc.code, "message": str(exc)}}
                if isinstance(exc, ContractError):
                    envelope["error"]["issues"] = [i.to_dict() for i in exc.issues]
                click.echo(json.dumps(envelope, indent=2), err=False)
            else:
                click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper

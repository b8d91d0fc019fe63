"""Shared CLI plumbing: JSON arguments, output, and turning errors into exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from charter import jsontext
from charter.errors import CharterError, ContractError, UsageError

P = ParamSpec("P")
R = TypeVar("R")


def parse_json_arg(value: str | None, option: str) -> Any:
    """Inline JSON, or ``@path`` to read JSON from a file; errors name the option and position."""
    if value is None:
        return None
    source = f"option {option}"
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        source = f"{path} (from {option})"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        parsed = jsontext.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{source}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}; "
            "pass valid JSON inline (quote it for your shell) or @file.json"
        ) from None
    except ValueError as exc:  # NaN, Infinity
        raise UsageError(f"{source}: {exc}") from None
    found = jsontext.problems(parsed, option.lstrip("-"))
    if found:
        raise UsageError(f"{source}: " + "; ".join(found))
    return parsed


def parse_json_object(value: str | None, option: str) -> dict[str, Any] | None:
    parsed = parse_json_arg(value, option)
    if parsed is not None and not isinstance(parsed, dict):
        raise UsageError(f"option {option}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


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

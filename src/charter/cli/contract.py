"""``charter contract ...``: validate contracts and publish the contract format."""

from __future__ import annotations

import json
from pathlib import Path

import click

from charter.cli.common import echo_json, handle_errors
from charter.cli.options import packs_option
from charter.contract.model import Contract, PolicyPack
from charter.contract.registry import load_packs, yaml_files
from charter.contract.source import Document, PathPart, read_yaml
from charter.contract.validate import schema
from charter.errors import ConfigurationError, ContractError, Issue
from charter.models.prompt import template_issues
from charter.primitives import import_callable


@click.group("contract")
def contract_group() -> None:
    """Validate contracts and policy packs."""


@contract_group.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@packs_option
@click.option(
    "--check-imports",
    is_flag=True,
    help="Also import every executor, reader and model script the contracts name, as a "
    "worker would (this runs those modules' import-time code).",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@handle_errors
def validate(
    paths: tuple[Path, ...], pack_paths: tuple[Path, ...], check_imports: bool, as_json: bool
) -> None:
    """Check contract and pack files; print every problem with file:line:column and a fix."""
    packs = load_packs(list(pack_paths))
    issues: list[Issue] = []
    ok: list[dict[str, str]] = []
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(yaml_files(p))
        else:
            files.append(p)
    for f in files:
        try:
            doc = read_yaml(f)
            if isinstance(doc.data, dict) and "pack" in doc.data:
                pack = PolicyPack.from_document(doc)
                ok.append({"file": str(f), "pack": pack.name, "hash": pack.content_hash})
            else:
                c = Contract.from_document(doc, packs)
                # the prompt template the contract names: present and valid Jinja2
                template_problems = template_issues(c.path, c.model.prompt)
                if check_imports:
                    template_problems.extend(_import_issues(doc, c))
                if template_problems:
                    raise ContractError(template_problems)
                ok.append(
                    {
                        "file": str(f),
                        "contract": c.ref,
                        "hash": c.content_hash,
                        "policy_hash": c.policy_hash,
                    }
                )
        except ContractError as exc:
            issues.extend(exc.issues)
    if as_json:
        echo_json({"valid": ok, "issues": [i.to_dict() for i in issues]})
    else:
        for item in ok:
            name = item.get("contract") or f"pack {item.get('pack')}"
            click.echo(f"ok  {item['file']}  {name}  sha256:{item['hash'][:16]}")
        for issue in issues:
            click.echo(str(issue), err=True)
        if issues:
            click.echo(f"{len(issues)} problem(s) found", err=True)
    if issues:
        raise SystemExit(ContractError.exit_code)


def _import_issues(doc: Document, contract: Contract) -> list[Issue]:
    """Each import path of the contract that this environment cannot resolve, located."""
    paths: list[tuple[list[PathPart], str, str]] = [
        (["channels", name, "reader"], ch.reader, f"reader of channel {name}")
        for name, ch in contract.channels.items()
        if ch.reader
    ]
    paths += [
        (["actions", name, "executor"], spec.executor, f"executor of action {name}")
        for name, spec in contract.actions.items()
        if isinstance(spec.executor, str)
    ]
    if contract.model.script and contract.model.provider == "scripted":
        paths.append((["model", "script"], contract.model.script, "model script"))
    found: list[Issue] = []
    for where, target, what in paths:
        try:
            import_callable(target, what)
        except ConfigurationError as exc:
            found.append(
                doc.issue(
                    where,
                    str(exc),
                    "install the package that provides it, or run from the directory that "
                    "holds it (workers need the same)",
                )
            )
    return found


@contract_group.command("schema")
@click.option("--pack", is_flag=True, help="Print the policy pack schema instead.")
def print_schema(pack: bool) -> None:
    """Print the published JSON Schema of the contract (or pack) format."""
    click.echo(json.dumps(schema("pack" if pack else "contract"), indent=2))

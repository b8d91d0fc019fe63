"""``charter policy ...``: evaluate one decision and run policy test files."""

from __future__ import annotations

from pathlib import Path

import click

from charter.cli.common import echo_json, handle_errors, parse_json_arg, parse_json_object, progress
from charter.cli.options import (
    db_option,
    json_option,
    limit_option,
    load_contract,
    packs_option,
    parse_since,
    runtime_for,
    select_runs,
    since_option,
)
from charter.contract.model import Contract
from charter.contract.testing import discover, run_file
from charter.errors import UsageError
from charter.policy.decision import DECISION_POINTS
from charter.policy.history import ExecutedAction, InMemoryHistory
from charter.policy.provenance import Observation
from charter.primitives import parse_instant


@click.group("policy")
def policy_group() -> None:
    """Evaluate and test policies."""


def _observations(raw: object) -> list[Observation]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise UsageError(
            "option --observations: expected a JSON array of {channel, labels, content}"
        )
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "channel" not in item:
            raise UsageError(
                f"option --observations: item [{i}] needs at least a 'channel' and 'content'"
            )
        labels = item.get("labels")
        if labels is not None and not (
            isinstance(labels, list) and all(isinstance(x, str) for x in labels)
        ):
            raise UsageError(
                f"option --observations: item [{i}] 'labels' must be a list of strings, "
                'e.g. ["pii"]'
            )
        out.append(Observation.from_dict(item))
    return out


def _history(raw: object, contract: Contract) -> InMemoryHistory:
    if raw is None:
        return InMemoryHistory()
    if not isinstance(raw, list):
        raise UsageError("option --history: expected a JSON array of {action, args, at}")
    executed = []
    for i, item in enumerate(raw):
        try:
            executed.append(
                ExecutedAction(
                    str(item["action"]), dict(item.get("args") or {}), parse_instant(item["at"])
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UsageError(
                f"option --history: item [{i}] needs action and an ISO 8601 'at' ({exc})"
            ) from None
    return InMemoryHistory(executed, normalize=contract.normalizers)


@policy_group.command("eval")
@click.argument("contract", type=click.Path(path_type=Path))
@click.option(
    "--action",
    "action_json",
    help='The proposed action as JSON: {"name": ..., "args": {...}} or @file.json.',
)
@click.option("--input", "input_json", help="Task input as JSON or @file.json.")
@click.option(
    "--context", "context_json", help="Facts for the policy (context.*) as JSON or @file.json."
)
@click.option(
    "--observations", "observations_json", help="JSON array of {channel, labels, content}."
)
@click.option("--proposal", "proposal_json", help='{"confidence": ..., "rationale": ...} as JSON.')
@click.option("--run", "run_json", help="Run facts (step, model_calls, cost_usd, ...) as JSON.")
@click.option("--outcome", "outcome_json", help="Outcome facts for --at outcome, as JSON.")
@click.option(
    "--history", "history_json", help="Executed actions for count(): [{action, args, at}]."
)
@click.option("--at", type=click.Choice(DECISION_POINTS), default="action", show_default=True)
@click.option(
    "--now", help="The decision instant, ISO 8601 with timezone (default: the current time)."
)
@packs_option
@click.option("--timing/--no-timing", default=False, help="Include elapsed_us in the output.")
@handle_errors
def eval_cmd(
    contract: Path,
    action_json: str | None,
    input_json: str | None,
    context_json: str | None,
    observations_json: str | None,
    proposal_json: str | None,
    run_json: str | None,
    outcome_json: str | None,
    history_json: str | None,
    at: str,
    now: str | None,
    pack_paths: tuple[Path, ...],
    timing: bool,
) -> None:
    """Decide one request against CONTRACT and print the decision as JSON."""
    c = load_contract(contract, pack_paths)
    action = parse_json_object(action_json, "--action")
    if at == "action" and action is None:
        raise UsageError(
            '--action is required when --at is action, e.g. --action \'{"name": "issue_refund", "args": {}}\''
        )
    try:
        instant = parse_instant(now) if now else None
    except ValueError as exc:
        raise UsageError(f"option --now: {exc}") from None
    decision = c.decide(
        at=at,  # type: ignore[arg-type]
        action=action,
        input=parse_json_object(input_json, "--input"),
        context=parse_json_object(context_json, "--context"),
        observations=_observations(parse_json_arg(observations_json, "--observations")),
        proposal=parse_json_object(proposal_json, "--proposal"),
        run=parse_json_object(run_json, "--run"),
        outcome=parse_json_arg(outcome_json, "--outcome"),
        now=instant,
        history=_history(parse_json_arg(history_json, "--history"), c),
    )
    echo_json(decision.to_dict(timing=timing))


@policy_group.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--min-coverage",
    type=click.FloatRange(0, 100),
    default=None,
    help="Fail when the share of rules exercised is below PCT.",
)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List every case, not only failures.")
@handle_errors
def test_cmd(
    paths: tuple[Path, ...], min_coverage: float | None, as_json: bool, verbose: bool
) -> None:
    """Run policy test files (*.tests.yaml) and report pass/fail per case and rule coverage."""
    files = discover(paths)
    if not files:
        raise UsageError(f"no *.tests.yaml files found in {', '.join(map(str, paths))}")
    results = [run_file(f) for f in files]
    # A rule counts once per contract, however many files exercise that contract.
    all_rules = {(r.contract, rule) for r in results for rule in r.rules}
    covered = {(r.contract, rule) for r in results for rule in r.covered}
    pct = 100.0 * len(covered) / len(all_rules) if all_rules else 100.0
    failed = sum(r.failed for r in results)
    below = min_coverage is not None and pct < min_coverage
    if as_json:
        echo_json(
            {
                "files": [r.to_dict() for r in results],
                "coverage_pct": round(pct, 2),
                "failed": failed,
                "passed": sum(r.passed for r in results),
            }
        )
    else:
        for r in results:
            click.echo(f"{r.file} ({r.contract})")
            for case in r.cases:
                if verbose or not case.passed:
                    click.echo(f"  {'PASS' if case.passed else 'FAIL'}  {case.name}")
                for f in case.failures:
                    click.echo(f"        {f}")
            click.echo(
                f"  {r.passed} passed, {r.failed} failed; rule coverage {len(r.covered)}/{len(r.rules)}"
            )
            if r.uncovered:
                click.echo(f"  rules this file does not exercise: {', '.join(r.uncovered)}")
        click.echo(
            f"coverage: {pct:.1f}% of {len(all_rules)} rule(s), counted once per contract"
            + (f" (below --min-coverage {min_coverage:g}%)" if below else "")
        )
        click.echo(f"{sum(r.passed for r in results)} passed, {failed} failed")
    if failed or below:
        raise SystemExit(1)


@click.command("backtest")
@click.argument("contract", type=click.Path(path_type=Path))
@click.option(
    "--runs",
    "run_ids",
    multiple=True,
    help="Only these runs (repeatable); default: every run of the contract's name.",
)
@since_option
@limit_option
@packs_option
@db_option
@json_option
@handle_errors
def backtest_cmd(
    contract: Path,
    run_ids: tuple[str, ...],
    since: str | None,
    limit: int | None,
    pack_paths: tuple[Path, ...],
    db: str,
    as_json: bool,
) -> None:
    """Evaluate a new contract version against recorded runs and report which decisions change."""
    from charter.runs.replay import backtest

    if run_ids and (since is not None or limit is not None):
        raise UsageError(
            "--since and --limit choose runs from the ledger; pass --runs or bound the backtest, not both"
        )
    instant = parse_since(since)
    new = load_contract(contract, pack_paths)
    rt = runtime_for(db)
    bounds = None
    if run_ids:
        ids = [rt.store.find_run(r).run_id for r in run_ids]
    else:
        ids, bounds = select_runs(rt.store, instant, limit, contract_name=new.name)
    with progress("evaluating", enabled=not as_json, total=len(ids)) as bar:
        result = backtest(rt.store, new, ids, rt.contract_for, bar)
    if as_json:
        out = result.to_dict()
        if bounds is not None:
            out["bounds"] = bounds.to_dict()
        echo_json(out)
        return
    click.echo(
        f"backtest of {new.ref} against {result.runs} run(s) of {', '.join(result.old) or '-'}"
        f"{bounds.note() if bounds else ''}: {result.decisions} decisions, "
        f"{len(result.changes)} would change"
    )
    for line in result.summary():
        click.echo(f"  {line}")
    if result.changes:
        click.echo(
            f"  {'run':<26} {'event':>5}  {'at':<8} {'action':<14} {'before':<9} {'after':<9} rules"
        )
        for c in result.changes[:50]:
            click.echo(
                f"  {c.run_id:<26} {c.seq:>5}  {c.at:<8} {c.action or '-':<14} {c.before:<9} {c.after:<9} {', '.join(c.rules_after)}"
            )
        if len(result.changes) > 50:
            click.echo(f"  ... {len(result.changes) - 50} more (use --json for all)")
    if result.unreadable:
        click.echo(
            f"  {len(result.unreadable)} run(s) left out: their content is erased or sealed "
            "without a key here, so their decisions cannot be re-made"
        )
    for e in result.errors:
        click.echo(f"  error: {e}", err=True)

"""The ``charter`` command line, grouped by resource."""

from __future__ import annotations

import click

from charter import __version__
from charter.cli.contract import contract_group
from charter.cli.demo import demo_cmd
from charter.cli.keys import erase_cmd, keys_group
from charter.cli.ledger import anchor_cmd, migrate_cmd, replay_cmd, report_cmd, verify_cmd
from charter.cli.policy import backtest_cmd, policy_group
from charter.cli.review import review_group
from charter.cli.run import run_group
from charter.cli.worker import worker_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charter")
def cli() -> None:
    """Charter: govern what language models may do, and record everything they did."""


for command in (
    contract_group,
    policy_group,
    run_group,
    review_group,
    verify_cmd,
    anchor_cmd,
    replay_cmd,
    worker_cmd,
    report_cmd,
    demo_cmd,
    migrate_cmd,
    erase_cmd,
    keys_group,
):
    cli.add_command(command)

policy_group.add_command(backtest_cmd)


def main() -> None:
    # Code contracts name is imported from installed packages and $CHARTER_IMPORT_PATH only:
    # the working directory is never put on the import path (a `sqlite3.py` in the directory
    # where someone runs `charter verify` must not run).
    cli()

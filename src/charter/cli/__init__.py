"""The ``charter`` command line, grouped by resource."""

from __future__ import annotations

import click

from charter import __version__
from charter.cli.contract import contract_group
from charter.cli.policy import policy_group


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charter")
def cli() -> None:
    """Charter: govern what language models may do, and record everything they did."""


cli.add_command(contract_group)
cli.add_command(policy_group)


def main() -> None:
    cli()

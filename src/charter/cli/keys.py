"""``charter erase`` and ``charter keys ...``: erasure by crypto-shredding, key rotation.

Both act on the data keys of content sealed at rest (see docs/security.md): erasing a subject
destroys its keys, so its content is unreadable everywhere at once while every chain still
verifies; rotating the key-encryption key re-wraps the data keys without rewriting an event.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

import click

from charter.cli.common import echo_json, handle_errors
from charter.cli.options import db_option, json_option
from charter.errors import ConfigurationError, UsageError
from charter.ledger.sealing import read_kek
from charter.ledger.sqlbase import SqlStore
from charter.ledger.store import open_store
from charter.primitives import format_time
from charter.scrub import scrub


def _sealing_store(db: str) -> SqlStore:
    store = open_store(db, create=False)
    if not isinstance(store, SqlStore) or store.kek is None:
        raise ConfigurationError(
            "this needs the ledger's key-encryption key: set CHARTER_KEK or CHARTER_KEK_FILE"
        )
    return store


@click.command("erase")
@click.option(
    "--subject",
    required=True,
    help="Whose data to erase: the value of the input "
    "field the contract's privacy.subject names (a run id for contracts without one).",
)
@click.option("--by", help="Who erases (default: the OS user); recorded with the erased keys.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@db_option
@json_option
@handle_errors
def erase_cmd(subject: str, by: str | None, yes: bool, db: str, as_json: bool) -> None:
    """Erase a subject's sealed data by destroying its keys (crypto-shredding).

    Irreversible. Every run of the subject keeps its events and its chain (which still
    verifies), but their sealed content reads as erased from now on, everywhere.
    """
    if not subject.strip():
        raise UsageError("option --subject: name the subject to erase")
    if not yes:
        click.confirm(
            f"Erase every sealed datum of subject {subject!r}? This cannot be undone", abort=True
        )
    store = _sealing_store(db)
    runs = store.erase_subject(
        subject, by=by or getpass.getuser(), at=format_time(datetime.now(UTC))
    )
    store.close()
    if as_json:
        echo_json({"subject": subject, "runs": runs})
        return
    if not runs:
        click.echo(f"no sealed data of subject {subject!r} in {scrub(db)} (nothing erased)")
        return
    click.echo(f"erased subject {subject!r}: the sealed content of {len(runs)} run(s) is gone")
    for run_id in runs:
        click.echo(f"  {run_id}")


@click.group("keys")
def keys_group() -> None:
    """Manage the keys that seal content at rest."""


@keys_group.command("rotate")
@click.option(
    "--new-kek-file",
    "new_kek_file",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The new key-encryption key (base64 of 32 bytes, e.g. from openssl rand -base64 32).",
)
@db_option
@handle_errors
def rotate_cmd(new_kek_file: Path, db: str) -> None:
    """Re-wrap every data key under a new key-encryption key; no event is rewritten.

    The current key comes from CHARTER_KEK or CHARTER_KEK_FILE; afterwards, point those at
    the new key on every worker.
    """
    store = _sealing_store(db)
    new = read_kek(new_kek_file.read_text("utf-8"), str(new_kek_file))
    count = store.rotate_kek(new)
    store.close()
    click.echo(f"re-wrapped {count} data key(s) under {new.key_id}")

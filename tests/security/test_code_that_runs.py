"""Code that runs is code someone chose: not the working directory's, not the stdlib's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from charter import ConfigurationError, ContractError, Runtime
from charter.primitives import import_callable
from tests.runs.domain import EFFECTS_ENV, Effects, contract

ROOT = Path(__file__).resolve().parents[2]
CHARTER = Path(sys.executable).with_name("charter")


def test_a_module_in_the_working_directory_is_never_imported(tmp_path: Path) -> None:
    """A read-only command in a directory holding a `sqlite3.py` runs only Charter's code."""
    marker = tmp_path / "PWNED"
    for name in ("sqlite3", "psycopg", "charter_plugin"):
        (tmp_path / f"{name}.py").write_text(
            f"open({str(marker)!r}, 'a').write('{name} ran\\n')\n", encoding="utf-8"
        )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARTER_IMPORT_PATH")}
    for command in (["run", "list"], ["verify"], ["--version"]):
        result = subprocess.run(
            [str(CHARTER), *command, "--db", "ledger.db"]
            if command[0] != "--version"
            else [str(CHARTER), *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Traceback" not in result.stderr, result.stderr
    assert not marker.exists(), marker.read_text()


@pytest.mark.parametrize(
    "path", ["os:system", "builtins:eval", "subprocess:run", "tests.runs.domain:__init__"]
)
def test_a_contract_may_not_name_the_standard_library_or_dunders(path: str) -> None:
    with pytest.raises(ContractError) as caught:
        contract(actions={"write": {"executor": path}})
    [issue] = caught.value.issues
    assert issue.path == "actions.write.executor" and issue.line > 1
    with pytest.raises(ConfigurationError):
        import_callable(path)


def test_a_deployment_narrows_what_contracts_may_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_EXECUTOR_PREFIXES", "examples.,acme.")
    with pytest.raises(ContractError) as caught:
        contract()  # every reader and executor of the ops contract is in tests.runs.domain
    paths = sorted(i.path for i in caught.value.issues)
    assert "actions.write.executor" in paths and "channels.profile.reader" in paths
    assert "outside the import prefixes this deployment allows" in str(caught.value)
    monkeypatch.setenv("CHARTER_EXECUTOR_PREFIXES", "tests.runs.")
    contract()  # loads


def test_a_worker_refuses_a_stored_contract_the_deployment_no_longer_allows(
    tmp_path: Path, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle already in the ledger is checked again when its code is imported."""
    rt = Runtime(str(tmp_path / "l.db"))
    run_id = rt.submit(contract(), {"item": "bolt"})
    rt.store.close()
    monkeypatch.setenv("CHARTER_EXECUTOR_PREFIXES", "acme.")
    import charter.primitives as primitives

    monkeypatch.setattr(primitives, "_callables", {})
    worker = Runtime(str(tmp_path / "l.db"))
    with pytest.raises(ConfigurationError, match="outside the import prefixes"):
        worker.work_once()
    assert worker.store.get_run(run_id).status == "queued"


def test_the_demo_finds_its_checkout_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARTER_IMPORT_PATH")}
    env[EFFECTS_ENV] = str(tmp_path / "fx.db")
    result = subprocess.run(
        [str(CHARTER), "demo", "--tickets", "5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Refunds demo: 5 tickets" in result.stdout


def test_code_named_by_contracts_is_found_on_the_explicit_import_path(
    tmp_path: Path, effects: Effects
) -> None:
    """Outside a checkout, `CHARTER_IMPORT_PATH` names where contracts' code lives."""
    ops = tmp_path / "ops.yaml"
    contract(ops)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CHARTER_IMPORT_PATH")}
    env[EFFECTS_ENV] = str(effects.path)
    start = [str(CHARTER), "run", "start", str(ops), "--input", '{"item": "bolt"}', "--wait"]
    without = subprocess.run(start, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert without.returncode == 6, without.stderr  # not even from the repository root
    assert "cannot import module 'tests.runs.domain'" in without.stderr
    env["CHARTER_IMPORT_PATH"] = str(ROOT)
    with_path = subprocess.run(
        start, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert with_path.returncode == 0, with_path.stderr
    assert "completed" in with_path.stdout

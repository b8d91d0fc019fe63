"""The packages layer as docs/architecture.md says: no module imports from a layer above it.

Each package may import only the packages listed for it (and itself); the check reads every
module's imports with ``ast``, top-level and inside functions alike, so a lazy import
cannot cross a layer unnoticed either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "charter"

BASE = {"errors", "primitives", "caps", "jsontext", "scrub"}
#: what each part of charter may import, besides itself (docs/architecture.md)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "primitives": {"errors"},
    "caps": set(),
    "jsontext": {"caps"},
    "scrub": set(),
    "policy": BASE,
    "ledger": BASE,
    "execution": BASE,
    "contract": BASE | {"policy"},
    "models": BASE | {"policy", "contract", "ledger"},
    "runs": BASE | {"policy", "contract", "ledger", "execution", "models"},
    "access": BASE | {"ledger"},
    "server": BASE | {"policy", "contract", "ledger", "execution", "models", "runs", "access"},
    "cli": BASE
    | {"policy", "contract", "ledger", "execution", "models", "runs", "access", "server"}
    | {"__init__"},
    "__init__": BASE | {"policy", "contract", "ledger", "execution", "models", "runs"},
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "charter":  # a subpackage, or a name of the package root
                found.extend(
                    (node.lineno, f"charter.{a.name}" if a.name in PARTS else "charter")
                    for a in node.names
                )
            elif node.module.startswith("charter."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("charter."))
    return found


MODULES = sorted(SRC.rglob("*.py"))
PARTS = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_imports_from_a_layer_above_it(path: Path) -> None:
    rel = path.relative_to(SRC)
    own = (
        rel.parts[0].removesuffix(".py")
        if len(rel.parts) > 1 or rel.stem != "__init__"
        else "__init__"
    )
    allowed = ALLOWED[own] | {own}
    wrong = [
        f"{rel}:{line} imports {module}"
        for line, module in _imports(path)
        if _part(module) not in allowed
    ]
    assert wrong == [], "\n".join(wrong)


def test_every_part_of_the_package_has_a_place_in_the_layers() -> None:
    assert set(PARTS) <= set(ALLOWED)

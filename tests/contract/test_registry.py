"""A directory of contracts: several versions side by side, packs merged, lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import ContractError, NotFoundError, Registry
from tests.helpers import NOW, document, to_yaml

PACK = """\
pack: guard
applies_to: {domains: [sales]}
rules:
  - {id: no-big, when: 'has(action.args.amount) && action.args.amount > 1000', effect: deny}
"""


def write(root: Path, name: str, **overrides: object) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(document(**overrides)), encoding="utf-8")
    return path


@pytest.fixture
def registry_dir(tmp_path: Path) -> Path:
    write(tmp_path, "shop.v1.yaml", version=1)
    write(tmp_path, "shop.v9.yaml", version=9)
    write(tmp_path, "shop.v10.yaml", version=10)
    write(tmp_path, "old/shop.v2.yaml", version=2)
    write(tmp_path, "billing.yaml", contract="billing", version="1.10")
    write(tmp_path, "billing-1.9.yml", contract="billing", version="1.9")
    (tmp_path / "guard.yaml").write_text(PACK, encoding="utf-8")
    (tmp_path / "shop.tests.yaml").write_text("cases: {broken", encoding="utf-8")  # skipped
    (tmp_path / "notes.txt").write_text("not yaml: [", encoding="utf-8")
    return tmp_path


def test_lookup_by_name_is_the_numerically_latest(registry_dir: Path) -> None:
    reg = Registry.from_directory(registry_dir)
    assert reg.get("shop").ref == "shop@10"
    assert reg.get("billing").ref == "billing@1.10"
    assert [c.version for c in reg.versions("shop")] == ["1", "2", "9", "10"]


def test_lookup_by_exact_version(registry_dir: Path) -> None:
    reg = Registry.from_directory(registry_dir)
    assert reg.get("shop@9").version == "9"
    assert reg.get("shop@9").path.endswith("shop.v9.yaml")
    assert reg.get("billing@1.9").ref == "billing@1.9"


def test_names_len_and_iteration(registry_dir: Path) -> None:
    reg = Registry.from_directory(registry_dir)
    assert reg.names() == ["billing", "shop"]
    assert len(reg) == 6
    assert [c.ref for c in reg] == [
        "billing@1.9",
        "billing@1.10",
        "shop@1",
        "shop@2",
        "shop@9",
        "shop@10",
    ]


def test_not_found_messages(registry_dir: Path) -> None:
    reg = Registry.from_directory(registry_dir)
    with pytest.raises(NotFoundError) as info:
        reg.get("shop@11")
    assert str(info.value) == "no contract shop@11; versions of 'shop' available: 1, 2, 9, 10"
    assert info.value.exit_code == 5
    with pytest.raises(NotFoundError) as info:
        reg.get("shipping")
    assert str(info.value) == "no contract named 'shipping'; known: billing, shop"
    with pytest.raises(NotFoundError, match="versions of 'nope' available: none"):
        reg.get("nope@1")


def test_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        Registry.from_directory(tmp_path / "absent")


def test_packs_in_the_directory_are_applied(registry_dir: Path) -> None:
    reg = Registry.from_directory(registry_dir)
    assert [p.name for p in reg.packs] == ["guard"]
    shop = reg.get("shop")
    assert [p.name for p in shop.packs] == ["guard"]
    d = shop.decide(action={"name": "refund", "args": {"order_id": "o", "amount": 5000}}, now=NOW)
    assert (d.effect, d.rules) == ("deny", ("guard/no-big",))


def test_two_files_claiming_the_same_version_differently_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", version=3)
    write(tmp_path, "b.yaml", version=3, description="changed after publishing")
    with pytest.raises(ContractError) as info:
        Registry.from_directory(tmp_path)
    (issue,) = info.value.issues
    assert issue.path == "version"
    assert "shop@3 is also defined differently in" in issue.message
    assert {issue.file, issue.message.rsplit(" ", 1)[-1]} == {
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    }
    assert "new version" in issue.hint


def test_an_identical_copy_is_listed_once(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", version=3)
    write(tmp_path, "copy/a.yaml", version=3)
    reg = Registry.from_directory(tmp_path)
    assert len(reg) == 1
    assert [c.ref for c in reg.versions("shop")] == ["shop@3"]


def test_every_broken_file_is_reported_together(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml")
    write(tmp_path, "bad1.yaml", version="v1", contract="one")
    write(tmp_path, "bad2.yaml", contract="two", domain="Sales Team")
    with pytest.raises(ContractError) as info:
        Registry.from_directory(tmp_path)
    assert sorted(Path(i.file).name for i in info.value.issues) == ["bad1.yaml", "bad2.yaml"]

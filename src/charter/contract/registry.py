"""A directory of contracts and policy packs, looked up by name or ``name@version``.

Published contracts are immutable, so a registry holds several versions of one contract
side by side (``refunds.v3.yaml``, ``refunds.v4.yaml``); ``get("refunds")`` is the latest,
``get("refunds@3")`` an exact one. Every ``*.yaml`` file with a top-level ``pack`` key is a
policy pack and is merged into the contracts it applies to. Files ending ``.tests.yaml``
are policy tests and are skipped.
"""

from __future__ import annotations

from pathlib import Path

from charter.contract.model import Contract, PolicyPack, version_key
from charter.contract.source import Document, read_yaml
from charter.errors import ContractError, Issue, NotFoundError


def yaml_files(root: Path) -> list[Path]:
    """Contract and pack files under ``root``: ``*.yaml``/``*.yml``, policy tests excluded."""
    files = sorted({*root.rglob("*.yaml"), *root.rglob("*.yml")})
    return [f for f in files if not f.name.endswith((".tests.yaml", ".tests.yml"))]


def load_packs(paths: list[Path]) -> list[PolicyPack]:
    """Load packs from files and directories (every YAML file with a ``pack`` key)."""
    docs: list[Document] = []
    for p in paths:
        for f in yaml_files(p) if p.is_dir() else [p]:
            doc = read_yaml(f)
            if isinstance(doc.data, dict) and "pack" in doc.data:
                docs.append(doc)
            elif not p.is_dir():
                raise ContractError(
                    [
                        Issue(
                            str(f),
                            1,
                            1,
                            "",
                            "not a policy pack (no `pack` key)",
                            "pass a pack file",
                        )
                    ]
                )
    issues: list[Issue] = []
    packs: list[PolicyPack] = []
    for doc in docs:
        try:
            packs.append(PolicyPack.from_document(doc))
        except ContractError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ContractError(issues)
    return packs


class Registry:
    """Every contract version found under a directory, with packs applied."""

    def __init__(self, contracts: list[Contract], packs: list[PolicyPack]) -> None:
        self.packs = packs
        self._by_ref: dict[str, Contract] = {}
        self._by_name: dict[str, list[Contract]] = {}
        for c in contracts:
            if c.ref in self._by_ref and self._by_ref[c.ref].content_hash != c.content_hash:
                raise ContractError(
                    [
                        Issue(
                            c.path,
                            1,
                            1,
                            "version",
                            f"{c.ref} is also defined differently in {self._by_ref[c.ref].path}",
                            "published contracts are immutable: give the changed one a new version",
                        )
                    ]
                )
            if c.ref in self._by_ref:
                continue  # the same contract in two files (a copy): list it once
            self._by_ref[c.ref] = c
            self._by_name.setdefault(c.name, []).append(c)
        for versions in self._by_name.values():
            versions.sort(key=lambda c: version_key(c.version))

    @classmethod
    def from_directory(cls, root: str | Path) -> Registry:
        """Load every contract and pack under ``root``; report all broken files together."""
        base = Path(root)
        if not base.is_dir():
            raise NotFoundError(f"contract directory {base} does not exist")
        files = yaml_files(base)
        packs = load_packs([base])
        contracts: list[Contract] = []
        issues: list[Issue] = []
        for f in files:
            doc = read_yaml(f)
            if not (isinstance(doc.data, dict) and "contract" in doc.data):
                continue
            try:
                contracts.append(Contract.from_document(doc, packs))
            except ContractError as exc:
                issues.extend(exc.issues)
        if issues:
            raise ContractError(issues)
        return cls(contracts, packs)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def versions(self, name: str) -> list[Contract]:
        return list(self._by_name.get(name, ()))

    def get(self, ref: str) -> Contract:
        """``name`` → the latest version; ``name@version`` → exactly that version."""
        name, _, version = ref.partition("@")
        if version:
            found = self._by_ref.get(f"{name}@{version}")
            if found is None:
                have = ", ".join(c.version for c in self.versions(name)) or "none"
                raise NotFoundError(f"no contract {ref}; versions of {name!r} available: {have}")
            return found
        versions = self._by_name.get(name)
        if not versions:
            raise NotFoundError(
                f"no contract named {name!r}; known: {', '.join(self.names()) or 'none'}"
            )
        return versions[-1]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._by_ref.values(), key=lambda c: (c.name, version_key(c.version))))

    def __len__(self) -> int:
        return len(self._by_ref)

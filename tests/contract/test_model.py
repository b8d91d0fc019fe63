"""Contract identity (name@version, content hash) and the loaded object."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import Contract, ContractError
from charter.contract.model import version_key
from charter.contract.source import parse_yaml
from charter.primitives import digest
from tests.helpers import NOW, REFUNDS, build, document, to_yaml

BLOCK = """\
contract: shop
version: 2
domain: sales
input:
  type: object
actions:
  send:
    executor: pkg.mod:send
    effect: write
    args:
      type: object
policy:
  default: deny
  rules:
    - id: ok
      when: 'action.name == "send"'
      effect: allow
      reason: fine
"""

# The same contract: flow style, other key order, comments, other quoting.
REFORMATTED = """\
# a comment at the top
policy: {rules: [{effect: allow, reason: "fine", when: "action.name == \\"send\\"", id: ok}], default: deny}
actions:   # another comment
  send: {args: {type: object}, effect: write, executor: "pkg.mod:send"}
input: {type: object}
domain: "sales"
version: 2
contract: shop
"""


def load(text: str) -> Contract:
    return Contract.from_document(parse_yaml(text, "c.yaml"))


def test_ref_is_name_at_version() -> None:
    c = load(BLOCK)
    assert (c.name, c.version, c.ref) == ("shop", "2", "shop@2")
    dotted = load(BLOCK.replace("version: 2", "version: '1.2.0'"))
    assert dotted.ref == "shop@1.2.0"


def test_content_hash_is_sha256_hex() -> None:
    h = load(BLOCK).content_hash
    assert len(h) == 64
    assert int(h, 16) >= 0


def test_formatting_key_order_and_comments_do_not_change_the_hash() -> None:
    a, b = load(BLOCK), load(REFORMATTED)
    assert a.data == b.data
    assert a.content_hash == b.content_hash
    assert a.policy_hash == b.policy_hash


def test_hash_is_the_canonical_hash_of_the_document() -> None:
    c = load(BLOCK)
    assert c.content_hash == digest(c.data)
    assert digest({"b": 1, "a": [1, 2]}) == digest({"a": [1, 2], "b": 1})
    assert digest({"a": [1, 2]}) != digest({"a": [2, 1]})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("effect: allow", "effect: review"),
        ("reason: fine", "reason: finer"),
        ("version: 2", "version: 3"),
        ("default: deny", "default: review"),
        ("effect: write", "effect: irreversible"),
        ("'action.name == \"send\"'", "'action.name != \"send\"'"),
    ],
)
def test_a_semantic_change_changes_the_hash(old: str, new: str) -> None:
    assert old in BLOCK
    assert load(BLOCK).content_hash != load(BLOCK.replace(old, new)).content_hash


def test_version_key_orders_numerically() -> None:
    versions = ["10", "9", "1.10", "1.9", "2", "1.2.0"]
    assert sorted(versions, key=version_key) == ["1.2.0", "1.9", "1.10", "2", "9", "10"]


def test_load_the_refunds_example() -> None:
    c = Contract.load(REFUNDS)
    assert c.ref == "refunds@1"
    assert c.domain == "customer-ops"
    assert c.path == str(REFUNDS)
    assert set(c.actions) == {"issue_refund", "reverse_refund", "send_email"}
    assert c.actions["send_email"].egress == "external"
    assert c.actions["issue_refund"].compensate == "reverse_refund"
    assert c.channels["orders"].max_age is not None
    assert c.channels["orders"].max_age.total_seconds() == 300
    assert c.channels["crm.customer"].labels == ("pii",)
    assert len(c.engine.rules) >= 10
    assert {r.effect for r in c.engine.rules} >= {"allow", "review", "escalate", "deny"}
    assert c.packs == ()


def test_contract_load_is_the_same_as_from_document(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(BLOCK, encoding="utf-8")
    assert Contract.load(path).content_hash == load(BLOCK).content_hash


def test_action_args_validator_is_the_declared_schema() -> None:
    c = build(document())
    spec = c.actions["refund"]
    assert spec.validator.is_valid({"order_id": "o-1", "amount": 3})
    assert not spec.validator.is_valid({"order_id": "o-1"})


def test_decide_without_now_uses_the_current_time_but_records_it() -> None:
    c = build(document())
    d = c.decide(action={"name": "note"})
    assert d.now.endswith("Z")
    assert d.now[:4].isdigit()


def test_decide_accepts_observation_dicts() -> None:
    data = document()
    data["policy"]["rules"] = [
        {"id": "tainted", "when": '"pii" in provenance(action.args.q).labels', "effect": "review"}
    ]
    c = build(data)
    d = c.decide(
        action={"name": "note", "args": {"q": "X1234567"}},
        observations=[{"channel": "crm.customer", "labels": ["pii"], "content": {"p": "X1234567"}}],
        now=NOW,
    )
    assert d.effect == "review"


def test_a_contract_file_that_is_not_yaml_text(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(["not", "a", "mapping"]), encoding="utf-8")
    with pytest.raises(ContractError, match="a contract must be a YAML mapping"):
        Contract.load(path)

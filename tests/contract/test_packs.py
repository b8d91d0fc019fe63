"""Policy packs: selection by domain or contract, prefixed ids, deny wins across packs."""

from __future__ import annotations

import pytest

from charter import ContractError, PolicyPack
from charter.contract.registry import load_packs
from tests.helpers import BASELINE, NOW, REFUNDS, contract_with, pack, refund, rule

DENY_BIG = """\
pack: guard
version: 2
applies_to: {domains: [sales]}
rules:
  - id: no-big
    when: 'action.name == "refund" && action.args.amount > 1000'
    effect: deny
    reason: Too big for anyone
"""

BY_NAME = """\
pack: named
applies_to: {contracts: [shop]}
rules:
  - {id: watch, when: 'action.name == "note"', effect: review, reviewers: [auditors]}
"""

OTHER_DOMAIN = """\
pack: elsewhere
applies_to: {domains: [hr], contracts: [payroll]}
rules:
  - {id: all, when: 'true', effect: deny}
"""

ALLOW_ALL = [rule("routine", "true", "allow")]


def test_pack_fields() -> None:
    p = pack(DENY_BIG)
    assert (p.name, p.version, p.domains, p.contracts) == ("guard", "2", ("sales",), ())
    assert [r.id for r in p.rules] == ["guard/no-big"]
    assert p.rules[0].source == "guard"
    assert len(p.content_hash) == 64


def test_pack_applies_by_domain_and_rule_ids_are_prefixed() -> None:
    c = contract_with(ALLOW_ALL, packs=[pack(DENY_BIG)])
    assert [p.name for p in c.packs] == ["guard"]
    d = c.decide(action=refund(amount=5000), now=NOW)
    assert d.effect == "deny"
    assert d.rules == ("guard/no-big",)
    assert d.matched == ("guard/no-big", "routine")
    assert d.reasons == ("Too big for anyone",)


def test_pack_deny_wins_over_contract_allow_only_when_it_matches() -> None:
    c = contract_with(ALLOW_ALL, packs=[pack(DENY_BIG)])
    assert c.decide(action=refund(amount=10), now=NOW).effect == "allow"


def test_pack_applies_by_contract_name() -> None:
    c = contract_with(ALLOW_ALL, packs=[pack(BY_NAME)])
    d = c.decide(action={"name": "note"}, now=NOW)
    assert (d.effect, d.rules, d.reviewers) == ("review", ("named/watch",), ("auditors",))


def test_pack_does_not_apply_to_other_domains_or_contracts() -> None:
    c = contract_with(ALLOW_ALL, packs=[pack(OTHER_DOMAIN)])
    assert c.packs == ()
    assert c.decide(action=refund(), now=NOW).effect == "allow"


def test_wildcard_domain_applies_everywhere() -> None:
    everywhere = OTHER_DOMAIN.replace("domains: [hr], contracts: [payroll]", "domains: ['*']")
    c = contract_with(ALLOW_ALL, packs=[pack(everywhere)])
    assert c.decide(action=refund(), now=NOW).rules == ("elsewhere/all",)


def test_deny_wins_across_several_packs() -> None:
    review_all = BY_NAME.replace('action.name == "note"', "true")
    c = contract_with(ALLOW_ALL, packs=[pack(review_all), pack(DENY_BIG)])
    assert [p.name for p in c.packs] == ["guard", "named"]  # sorted by name
    assert c.decide(action=refund(amount=5000), now=NOW).effect == "deny"
    assert c.decide(action=refund(amount=5), now=NOW).effect == "review"


def test_packs_change_the_policy_hash_not_the_content_hash() -> None:
    plain = contract_with(ALLOW_ALL)
    guarded = contract_with(ALLOW_ALL, packs=[pack(DENY_BIG)])
    assert plain.content_hash == guarded.content_hash
    assert plain.policy_hash != guarded.policy_hash
    changed = contract_with(ALLOW_ALL, packs=[pack(DENY_BIG.replace("1000", "2000"))])
    assert changed.policy_hash != guarded.policy_hash


def test_a_pack_rule_id_may_repeat_a_contract_rule_id() -> None:
    same_id = DENY_BIG.replace("id: no-big", "id: routine")
    c = contract_with(ALLOW_ALL, packs=[pack(same_id)])
    d = c.decide(action=refund(amount=5000), now=NOW)
    assert d.matched == ("guard/routine", "routine")


def test_the_example_baseline_pack_applies_to_refunds() -> None:
    from charter import Contract

    (baseline,) = load_packs([BASELINE])
    c = Contract.load(REFUNDS, [baseline])
    assert [p.name for p in c.packs] == ["baseline"]
    assert "baseline/kill-switch" in [r.id for r in c.engine.rules]
    reverse = {"name": "reverse_refund", "args": {"refund_id": "r"}}
    sure = {"confidence": 0.9}
    d = c.decide(action=reverse, proposal=sure, context={"kill_switch": True}, now=NOW)
    assert (d.effect, d.rules) == ("deny", ("baseline/kill-switch",))
    assert c.decide(action=reverse, proposal=sure, now=NOW).effect == "allow"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pack: p\nrules: []\n", [("applies_to", 1, 1), ("rules", 2, 1)]),
        (
            "pack: p\napplies_to: {}\nrules:\n  - {id: a, when: 'x >', effect: deny}\n"
            "  - {id: a, when: 'true', effect: nope}\n",
            [
                ("applies_to", 2, 1),
                ("rules[0].when", 4, 13),
                ("rules[1].id", 5, 6),
                ("rules[1].effect", 5, 27),
            ],
        ),
        (
            "pack: P\napplies_to: {teams: [x]}\nrules: [{id: a, when: 'true', effect: deny}]\n",
            [("pack", 1, 1), ("applies_to.teams", 2, 14)],
        ),
        ("[]\n", [("", 1, 1)]),
        (
            "pack: p\napplies_to: {domains: [x]}\nrules: [{id: a, when: 'nope()', effect: deny}]\n",
            [("rules[0].when", 3, 17)],
        ),
    ],
)
def test_broken_packs_report_every_issue(text: str, expected: list[tuple[str, int, int]]) -> None:
    with pytest.raises(ContractError) as info:
        pack(text)
    assert [(i.path, i.line, i.column) for i in info.value.issues] == expected
    assert all(i.file == "pack.yaml" and i.message and i.hint for i in info.value.issues)


def test_load_packs_rejects_a_file_that_is_not_a_pack(tmp_path: object) -> None:
    with pytest.raises(ContractError, match="not a policy pack"):
        load_packs([REFUNDS])


def test_load_packs_from_a_directory_skips_contracts(tmp_path: object) -> None:
    packs = load_packs([BASELINE.parent, REFUNDS.parent])
    assert [p.name for p in packs] == ["baseline"]
    assert isinstance(packs[0], PolicyPack)


def test_admit_rules_of_a_pack_count_as_admit_rules_of_the_contract() -> None:
    """No admit rules anywhere admits; a pack's admit rule makes the default apply."""
    admit_pack = pack(
        "pack: gate\napplies_to: {domains: [sales]}\n"
        "rules: [{id: blocked, at: admit, when: 'has(context.blocked)', effect: deny}]\n"
    )
    open_contract = contract_with(ALLOW_ALL)
    assert open_contract.decide(at="admit", now=NOW).effect == "allow"
    gated = contract_with(ALLOW_ALL, packs=[admit_pack])
    d = gated.decide(at="admit", now=NOW)
    assert (d.effect, d.rules) == ("deny", ())
    assert d.reasons == ("no rule matched; policy default is deny",)
    d = gated.decide(at="admit", context={"blocked": True}, now=NOW)
    assert (d.effect, d.rules) == ("deny", ("gate/blocked",))

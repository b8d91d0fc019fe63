"""Who may do what: roles, the permissions each grants, and the principal a request acts as.

Every caller of the HTTP API and the console acts as a :class:`Principal` — an identity
with one role, and for reviewers the reviewer groups and domains they serve. The table
:data:`GRANTS` is the whole authorisation model: an endpoint names the permission it needs,
and a principal either has it or gets a 403. What a reviewer or agent may *see* is narrowed
further by :meth:`Principal.may_review` and :meth:`Principal.sees_run`, so a reviewer of
one group never learns another group's queue exists.

Roles, from most to least power:

* ``admin``: everything, including tokens and contract registration;
* ``operator``: runs the service: submits and cancels runs, reads everything, decides
  nothing a reviewer must decide unless also in the group;
* ``reviewer``: the review queue of their groups (and domains, if narrowed), and the runs
  behind those reviews;
* ``auditor``: reads everything — runs, reviews, reports, the ledger — and changes nothing;
* ``agent``: a system that submits work: submits runs and reads its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Permission(StrEnum):
    CONTRACTS_READ = "contracts:read"
    CONTRACTS_REGISTER = "contracts:register"
    RUNS_SUBMIT = "runs:submit"
    RUNS_READ = "runs:read"  # every run; agents read their own with RUNS_READ_OWN
    RUNS_READ_OWN = "runs:read-own"
    RUNS_CANCEL = "runs:cancel"
    DECIDE = "decide"  # POST /v1/decide: a policy decision without a run
    REVIEWS_READ = "reviews:read"
    REVIEWS_DECIDE = "reviews:decide"
    REPORTS_READ = "reports:read"
    LEDGER_READ = "ledger:read"  # the raw event stream, verification, anchors
    TOKENS_MANAGE = "tokens:manage"
    WEBHOOKS_MANAGE = "webhooks:manage"


ROLES = ("admin", "operator", "reviewer", "auditor", "agent")

_READ_ALL = {
    Permission.CONTRACTS_READ,
    Permission.RUNS_READ,
    Permission.RUNS_READ_OWN,
    Permission.REVIEWS_READ,
    Permission.REPORTS_READ,
    Permission.LEDGER_READ,
}

#: the permissions of each role; anything not listed is denied
GRANTS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "operator": frozenset(
        _READ_ALL
        | {
            Permission.RUNS_SUBMIT,
            Permission.RUNS_CANCEL,
            Permission.DECIDE,
            Permission.WEBHOOKS_MANAGE,
        }
    ),
    "reviewer": frozenset(
        {
            Permission.CONTRACTS_READ,
            Permission.RUNS_READ_OWN,  # the runs behind the reviews they may see
            Permission.REVIEWS_READ,
            Permission.REVIEWS_DECIDE,
        }
    ),
    "auditor": frozenset(_READ_ALL),
    "agent": frozenset(
        {
            Permission.CONTRACTS_READ,
            Permission.RUNS_SUBMIT,
            Permission.RUNS_READ_OWN,
            Permission.DECIDE,
        }
    ),
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. ``groups``: the reviewer groups a reviewer serves (empty: none);
    ``domains``: the contract domains they are limited to (empty: every domain);
    ``token_id``: the API token used (``None`` for the local CLI)."""

    identity: str
    role: str
    groups: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    token_id: str | None = None

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS.get(self.role, frozenset())

    def in_domain(self, domain: str) -> bool:
        return not self.domains or domain in self.domains

    def may_review(self, reviewers: Iterable[str], domain: str) -> bool:
        """Whether this principal may see and decide a review addressed to ``reviewers``
        for a contract of ``domain``: admins always; reviewers when they serve one of the
        groups, within their domains."""
        if self.role == "admin":
            return True
        if not self.may(Permission.REVIEWS_DECIDE) or not self.in_domain(domain):
            return False
        return bool(set(self.groups) & set(reviewers))

    def sees_run(self, submitted_by: str | None, reviewers: Iterable[str], domain: str) -> bool:
        """Whether this principal may read a run: roles that read every run do; an agent
        its own runs; a reviewer the runs that await (or awaited) a group they serve."""
        if self.may(Permission.RUNS_READ):
            return True
        if self.role == "agent":
            return submitted_by is not None and submitted_by == self.identity
        if self.role == "reviewer":
            return self.may_review(reviewers, domain)
        return False

"""Who may do what in the privacy services: operators of the tenant, or the local CLI
(``None``, which has the machine's trust). Another tenant's object is "not found"."""

from __future__ import annotations

from cloudphone.accounts.credentials import Principal
from cloudphone.core.problems import Forbidden, NotFound


def require_operator(who: Principal | None) -> None:
    if who is not None and not who.is_operator:
        raise Forbidden("an operator token is required")


def require_tenant(who: Principal | None, tenant_id: str) -> None:
    if who is not None and not who.may_administer(tenant_id):
        raise NotFound("no such tenant")


def actor_of(who: Principal | None) -> str:
    """The audit trail's actor: a role, never a person."""
    if who is None:
        return "cli"
    return "operator" if who.is_operator else "subject"

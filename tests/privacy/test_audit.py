"""The audit trail: entries commit with the caller's change; append-only on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from cloudphone.privacy.audit import PURGE_SETTING, AuditEvent, audit_trail, record_audit
from cloudphone.runtime import Runtime
from tests.accounts.helpers import global_operator, make_world


async def test_entry_commits_with_the_callers_transaction(runtime: Runtime) -> None:
    now = runtime.clock.now()
    async with runtime.db.transaction() as s:
        await record_audit(
            s,
            action="push_instance.erased",
            actor="gateway",
            tenant_id="t1",
            object_type="push_instance",
            object_id="i1",
            reason="expired",
            at=now,
        )
    with pytest.raises(RuntimeError):
        async with runtime.db.transaction() as s:
            await record_audit(
                s,
                action="account.read",
                actor="operator",
                tenant_id="t1",
                object_type="account",
                object_id="a1",
                at=now,
            )
            raise RuntimeError("the change failed, so its audit entry must not stay")
    async with runtime.db.transaction() as s:
        trail = await audit_trail(s, tenant_id="t1")
    assert [(e.action, e.object_id, e.reason) for e in trail] == [
        ("push_instance.erased", "i1", "expired")
    ]
    assert trail[0].at == now


@pytest.mark.only_backend("postgresql")  # the append-only trigger; SQLite has only the API
async def test_postgresql_refuses_update_and_delete_except_the_purge(runtime: Runtime) -> None:
    old = runtime.clock.now()
    async with runtime.db.transaction() as s:
        for at, object_id in ((old, "old"), (old + timedelta(days=400), "new")):
            await record_audit(
                s,
                action="x",
                actor="t",
                tenant_id=None,
                object_type="o",
                object_id=object_id,
                at=at,
            )
    for statement in (update(AuditEvent).values(reason="tampered"), delete(AuditEvent)):
        with pytest.raises(DBAPIError, match="append-only"):
            async with runtime.db.transaction() as s:
                await s.execute(statement)
    cutoff = old + timedelta(days=35)
    async with runtime.db.transaction() as s:
        await s.execute(text(f"SET LOCAL {PURGE_SETTING} = '{cutoff.isoformat()}'"))
        await s.execute(delete(AuditEvent).where(AuditEvent.at < cutoff))
    with pytest.raises(DBAPIError):
        async with runtime.db.transaction() as s:
            await s.execute(text(f"SET LOCAL {PURGE_SETTING} = '{cutoff.isoformat()}'"))
            await s.execute(delete(AuditEvent).where(AuditEvent.object_id == "new"))
    async with runtime.db.transaction() as s:
        left = (await s.scalars(select(AuditEvent.object_id))).all()
    assert left == ["new"]


async def test_operator_reads_of_personal_data_are_audited_the_users_own_are_not(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    assert (await api.get("/v1/provisioning", headers=world.device)).status_code == 200
    async with runtime.db.transaction() as s:
        assert await audit_trail(s, object_id=world.account_id) == []
    await api.get(f"/v1/accounts/{world.account_id}", headers=world.operator)
    await api.get(f"/v1/tenants/{world.tenant_id}/accounts", headers=world.operator)
    async with runtime.db.transaction() as s:
        trail = await audit_trail(s, tenant_id=world.tenant_id)
    reads = sorted((e.action, e.actor, e.object_type) for e in trail)
    assert reads == [
        ("personal_data.read", "operator", "account"),
        ("personal_data.read", "operator", "tenant_accounts"),
    ]

"""Personal fields are sealed under the subject's key; lookups go through blind indexes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import delete, select, text

from cloudphone.accounts.models import Account, Device
from cloudphone.privacy.sealing import SubjectKey
from cloudphone.runtime import Runtime
from tests.accounts.helpers import global_operator, make_world


@pytest.mark.promise("P19")
async def test_personal_fields_are_ciphertext_at_rest_and_plain_to_the_code(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", user="alice")
    r = await api.put(
        "/v1/device/push-tokens", headers=world.device, json={"call_push_token": "tok-alice-1"}
    )
    assert r.status_code == 200, r.text
    async with runtime.db.transaction() as s:
        raw = (await s.execute(text("SELECT address_of_record, display_name FROM accounts"))).one()
        token = (await s.execute(text("SELECT call_push_token FROM devices"))).scalar_one()
        found = await s.scalar(
            select(Account).where(Account.address_of_record == "sip:alice@acme.test")
        )
        holder = await s.scalar(select(Device).where(Device.call_push_token == "tok-alice-1"))
    for value in (*raw, token):
        assert value.startswith("sk1.") and "alice" not in value.lower()
    assert found is not None and found.display_name == "Alice"
    assert holder is not None and holder.call_push_token == "tok-alice-1"


@pytest.mark.promise("P19")
async def test_the_address_of_record_stays_unique_per_tenant(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", user="alice")
    body = {"address_of_record": "sip:alice@acme.test"}
    r = await api.post(f"/v1/tenants/{world.tenant_id}/accounts", headers=world.operator, json=body)
    assert r.status_code == 409
    other = await make_world(api, root, "globex", user="bob")
    r = await api.post(
        f"/v1/tenants/{other.tenant_id}/accounts",
        headers=other.operator,
        json={"address_of_record": "sip:alice@globex.test"},
    )
    assert r.status_code == 201


@pytest.mark.promise("P19")
async def test_shredding_the_subject_key_leaves_only_unreadable_ciphertext(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", user="alice")
    async with runtime.db.transaction() as s:
        await s.execute(delete(SubjectKey))
    async with runtime.db.transaction() as s:
        account = await s.get(Account, world.account_id)
        assert account is not None
        assert account.address_of_record is None and account.display_name is None

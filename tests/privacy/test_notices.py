"""Policy versions and notices (P18) and the disclosure log (P17): notices reach every affected
user in the app and by e-mail through the operator's relay before the effective date, each
delivery and acknowledgement recorded."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from cloudphone.core.clock import FakeClock
from cloudphone.runtime import Runtime
from tests.accounts.helpers import global_operator, make_world
from tests.privacy.conftest import Inbox


async def _policy(
    api: httpx.AsyncClient,
    world_op: dict[str, str],
    tenant_id: str,
    clock: FakeClock,
    days: int = 30,
) -> str:
    r = await api.post(
        f"/v1/tenants/{tenant_id}/policy-versions",
        headers=world_op,
        json={
            "version": "2026-02",
            "summary": "Location now also used for registration.",
            "effective_at": (clock.now() + timedelta(days=days)).isoformat(),
        },
    )
    assert r.status_code == 201, r.text
    version_id: str = r.json()["id"]
    return version_id


@pytest.mark.promise("P18")
async def test_notices_reach_every_user_in_app_and_by_mail_before_the_effective_date(
    api: httpx.AsyncClient, mailing_runtime: Runtime, smtp: Inbox, clock: FakeClock
) -> None:
    runtime = mailing_runtime
    world = await make_world(api, await global_operator(runtime), "acme", user="alice")
    op = world.operator
    await api.patch(
        f"/v1/accounts/{world.account_id}", headers=op, json={"notice_email": "alice@example.org"}
    )
    r = await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=op,
        json={"address_of_record": "sip:bob@acme.test"},
    )
    assert r.status_code == 201
    version_id = await _policy(api, op, world.tenant_id, clock)
    effective = clock.now() + timedelta(days=30)

    r = await api.post(f"/v1/policy-versions/{version_id}/publish", headers=op)
    assert r.json() == {"version_id": version_id, "in_app": 2, "emailed": 1, "email_failures": 0}
    (mail,) = smtp.to("alice@example.org")
    assert "2026-02" in mail["Subject"]

    clock.advance(timedelta(days=1))
    (notice,) = (await api.get("/v1/privacy/notices", headers=world.device)).json()
    assert notice["topic"] == "policy" and notice["ref_id"] == version_id
    r = await api.post(f"/v1/privacy/notices/{notice['id']}/acknowledge", headers=world.device)
    assert r.json()["acknowledged_at"] is not None

    record = (await api.get(f"/v1/policy-versions/{version_id}/notices", headers=op)).json()
    assert sorted(n["channel"] for n in record) == ["email", "in_app", "in_app"]
    delivered = [n for n in record if n["delivered_at"]]
    assert len(delivered) == 2  # alice's mail and her in-app notice; bob has not fetched yet
    for n in delivered:
        assert n["delivered_at"] < effective.isoformat()
    # Publishing again only adds what is missing.
    r = await api.post(f"/v1/policy-versions/{version_id}/publish", headers=op)
    assert r.json()["in_app"] == 0 and r.json()["emailed"] == 0


@pytest.mark.promise("P18")
async def test_announcing_after_the_effective_date_is_refused(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    version_id = await _policy(api, world.operator, world.tenant_id, clock, days=10)
    clock.advance(timedelta(days=10))
    r = await api.post(f"/v1/policy-versions/{version_id}/publish", headers=world.operator)
    assert r.status_code == 422 and "before the effective date" in r.json()["detail"]
    assert (await api.get("/v1/privacy/notices", headers=world.device)).json() == []


@pytest.mark.promise("P18")
async def test_accounts_created_after_publication_are_told_until_the_version_takes_effect(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    version_id = await _policy(api, op, world.tenant_id, clock, days=5)
    await api.post(f"/v1/policy-versions/{version_id}/publish", headers=op)
    await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=op,
        json={"address_of_record": "sip:late@acme.test"},
    )
    await runtime.privacy.housekeeping()
    record = (await api.get(f"/v1/policy-versions/{version_id}/notices", headers=op)).json()
    assert len(record) == 2
    clock.advance(timedelta(days=6))
    await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=op,
        json={"address_of_record": "sip:later@acme.test"},
    )
    await runtime.privacy.housekeeping()
    record = (await api.get(f"/v1/policy-versions/{version_id}/notices", headers=op)).json()
    assert len(record) == 2  # in effect: new users simply get the current policy


@pytest.mark.promise("P17")
async def test_disclosures_are_logged_audited_and_the_affected_users_notified(
    api: httpx.AsyncClient, mailing_runtime: Runtime, smtp: Inbox
) -> None:
    runtime = mailing_runtime
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    await api.patch(
        f"/v1/accounts/{world.account_id}", headers=op, json={"notice_email": "alice@example.org"}
    )
    other = await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=op,
        json={"address_of_record": "sip:bob@acme.test"},
    )
    r = await api.post(
        f"/v1/tenants/{world.tenant_id}/disclosures",
        headers=op,
        json={
            "authority": "District Court",
            "legal_basis": "subpoena 26-1234",
            "scope": "registration times, March 2026",
            "account_ids": [world.account_id],
        },
    )
    assert r.status_code == 201, r.text
    disclosure = r.json()
    assert disclosure["notified_at"] is None
    log = (await api.get(f"/v1/tenants/{world.tenant_id}/disclosures", headers=op)).json()
    assert [d["legal_basis"] for d in log] == ["subpoena 26-1234"]
    audit = (await api.get(f"/v1/tenants/{world.tenant_id}/audit", headers=op)).json()
    assert any(
        e["action"] == "disclosure.recorded" and e["object_id"] == world.account_id for e in audit
    )

    r = await api.post(f"/v1/disclosures/{disclosure['id']}/notify", headers=op)
    assert r.json()["in_app"] == 1 and r.json()["emailed"] == 1
    (notice,) = (await api.get("/v1/privacy/notices", headers=world.device)).json()
    assert notice["topic"] == "disclosure" and "District Court" in notice["title"]
    assert len(smtp.to("alice@example.org")) == 1
    r = await api.get(f"/v1/disclosures/{disclosure['id']}", headers=op)
    assert r.status_code in (404, 405)  # no such route: the log is listed per tenant
    assert other.status_code == 201


@pytest.mark.promise("P17")
async def test_a_disclosure_naming_no_one_notifies_the_whole_tenant(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=op,
        json={"address_of_record": "sip:bob@acme.test"},
    )
    r = await api.post(
        f"/v1/tenants/{world.tenant_id}/disclosures",
        headers=op,
        json={"authority": "Acquirer Inc.", "legal_basis": "merger", "scope": "all accounts"},
    )
    r = await api.post(f"/v1/disclosures/{r.json()['id']}/notify", headers=op)
    assert r.json()["in_app"] == 2

"""Data-subject requests (P19, P20): intake from the app or an operator, identity verification,
the state table, due dates and the overdue-soon list, access/confirm/rectify, post-mortem."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from cloudphone.core.clock import FakeClock
from cloudphone.runtime import Runtime
from tests.accounts.helpers import global_operator, make_world
from tests.privacy.conftest import Inbox, make_subject


@pytest.mark.promise("P20")
async def test_due_in_30_days_and_overdue_soon_from_day_20(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    r = await api.post(
        f"/v1/accounts/{world.account_id}/privacy-requests", headers=op, json={"kind": "confirm"}
    )
    assert r.status_code == 201
    request = r.json()
    assert request["state"] == "unverified" and request["source"] == "operator"
    received = clock.now()
    assert request["due_at"].startswith((received + timedelta(days=30)).date().isoformat())

    clock.advance(timedelta(days=19, hours=23))
    assert (await api.get("/v1/privacy-requests/overdue-soon", headers=op)).json() == []
    clock.advance(timedelta(hours=1))
    soon = (await api.get("/v1/privacy-requests/overdue-soon", headers=op)).json()
    assert [s["id"] for s in soon] == [request["id"]]
    assert soon[0]["overdue_soon"] and not soon[0]["overdue"]
    clock.advance(timedelta(days=10, seconds=1))
    r = await api.get(f"/v1/privacy-requests/{request['id']}", headers=op)
    assert r.json()["overdue"]

    await api.post(f"/v1/privacy-requests/{request['id']}/verify", headers=op)
    r = await api.post(f"/v1/privacy-requests/{request['id']}/process", headers=op, json={})
    assert r.json()["state"] == "done"
    assert (await api.get("/v1/privacy-requests/overdue-soon", headers=op)).json() == []


@pytest.mark.promise("P20")
async def test_the_state_table_is_enforced(api: httpx.AsyncClient, runtime: Runtime) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    r = await api.post(
        f"/v1/accounts/{world.account_id}/privacy-requests", headers=op, json={"kind": "erase"}
    )
    request_id = r.json()["id"]
    # Unverified: nothing is carried out.
    r = await api.post(f"/v1/privacy-requests/{request_id}/process", headers=op, json={})
    assert r.status_code == 409 and r.json()["type"].endswith("/invalid-transition")
    r = await api.post(
        f"/v1/privacy-requests/{request_id}/refuse",
        headers=op,
        json={"reason": "identity not confirmed"},
    )
    assert r.json()["state"] == "refused"
    assert r.json()["refusal_reason"] == "identity not confirmed"
    assert r.json()["closed_at"] is not None
    r = await api.post(f"/v1/privacy-requests/{request_id}/verify", headers=op)
    assert r.status_code == 409
    assert (await api.get(f"/v1/accounts/{world.account_id}", headers=op)).status_code == 200
    # The device cannot carry out requests, even its own.
    r = await api.post(f"/v1/privacy-requests/{request_id}/verify", headers=world.device)
    assert r.status_code == 403


@pytest.mark.promise("P19")
async def test_the_app_user_confirms_rectifies_and_gets_an_expiring_export(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme", user="alice")
    device = world.device
    r = await api.post("/v1/privacy/requests", headers=device, json={"kind": "confirm"})
    assert r.status_code == 201 and r.json()["state"] == "done"
    assert r.json()["result"]["processing"] is True
    assert "user.account.username" in r.json()["result"]["categories"]

    r = await api.post(
        "/v1/privacy/requests",
        headers=device,
        json={"kind": "rectify", "changes": {"display_name": "Alice Liddell"}},
    )
    assert r.json()["state"] == "done" and r.json()["result"] == {"fields": ["display_name"]}
    r = await api.get(f"/v1/accounts/{world.account_id}", headers=world.operator)
    assert r.json()["display_name"] == "Alice Liddell"

    r = await api.post("/v1/privacy/requests", headers=device, json={"kind": "access"})
    link = r.json()["download_url"].removeprefix("https://cloudphone.test")
    assert r.json()["result"]["export_id"] in link
    export = (await api.get(link)).json()
    assert export["tables"]["accounts"]["rows"][0]["display_name"] == "Alice Liddell"
    r = await api.get(link.split("?")[0] + "?token=wrong")
    assert r.status_code == 404
    clock.advance(timedelta(hours=73))
    assert (await api.get(link)).status_code == 404  # the link expired
    report = await runtime.privacy.housekeeping()
    assert report.exports_removed == 1

    mine = (await api.get("/v1/privacy/requests", headers=device)).json()
    assert sorted(m["kind"] for m in mine) == ["access", "confirm", "rectify"]
    assert all(m["source"] == "app" and m["verified_at"] for m in mine)
    # An erasure asked from the app waits for the operator (irreversible).
    r = await api.post("/v1/privacy/requests", headers=device, json={"kind": "erase"})
    assert r.json()["state"] == "verified"


@pytest.mark.promise("P19")
async def test_death_with_an_export_directive_mails_the_designated_person(
    api: httpx.AsyncClient, mailing_runtime: Runtime, smtp: Inbox
) -> None:
    subject = await make_subject(api, mailing_runtime)
    r = await api.post(
        f"/v1/accounts/{subject.world.account_id}/death", headers=subject.world.device
    )
    assert r.status_code == 403  # only an operator records a death
    r = await api.post(
        f"/v1/accounts/{subject.world.account_id}/death", headers=subject.world.operator
    )
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "post_mortem" and r.json()["state"] == "done"
    assert r.json()["result"]["sent"] is True
    (mail,) = smtp.to(subject.heir)
    text = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
    link = next(line for line in text.splitlines() if "/download?token=" in line)
    export = (await api.get(link.strip().removeprefix("https://cloudphone.test"))).json()
    assert export["tables"]["accounts"]["rows"][0]["address_of_record"] == subject.aor
    # The account stays (export, not erase).
    r = await api.get(f"/v1/accounts/{subject.world.account_id}", headers=subject.world.operator)
    assert r.status_code == 200


@pytest.mark.promise("P19")
async def test_death_with_an_erase_directive_erases_the_account(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    r = await api.put(
        f"/v1/accounts/{world.account_id}/post-mortem",
        headers=world.device,
        json={"action": "erase"},
    )
    assert r.json()["action"] == "erase" and not r.json()["has_designated_contact"]
    r = await api.post(f"/v1/accounts/{world.account_id}/death", headers=world.operator)
    assert "accounts" in r.json()["result"]["tables"]
    r = await api.get(f"/v1/accounts/{world.account_id}", headers=world.operator)
    assert r.status_code == 404
    r = await api.get(f"/v1/tenants/{world.tenant_id}/privacy-requests", headers=world.operator)
    assert [x["kind"] for x in r.json()] == ["post_mortem"]  # the record of it stays


@pytest.mark.promise("P19")
async def test_an_export_directive_needs_the_designated_person(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    r = await api.put(
        f"/v1/accounts/{world.account_id}/post-mortem",
        headers=world.device,
        json={"action": "export"},
    )
    assert r.status_code == 422


@pytest.mark.promise("P20")
async def test_a_request_blocked_by_a_hold_stays_open_and_can_be_retried(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    op = world.operator
    r = await api.post("/v1/privacy/requests", headers=world.device, json={"kind": "rectify"})
    assert r.status_code == 422  # nothing to correct: refused before anything is recorded
    assert (await api.get("/v1/privacy/requests", headers=world.device)).json() == []
    r = await api.post(
        f"/v1/accounts/{world.account_id}/legal-holds", headers=op, json={"reason": "case 9"}
    )
    hold_id = r.json()["id"]
    r = await api.post("/v1/privacy/requests", headers=world.device, json={"kind": "erase"})
    request_id = r.json()["id"]
    r = await api.post(f"/v1/privacy-requests/{request_id}/process", headers=op, json={})
    assert r.status_code == 409
    r = await api.get(f"/v1/privacy-requests/{request_id}", headers=op)
    assert r.json()["state"] == "in_progress"
    await api.post(f"/v1/legal-holds/{hold_id}/release", headers=op)
    r = await api.post(f"/v1/privacy-requests/{request_id}/process", headers=op, json={})
    assert r.status_code == 200 and r.json()["state"] == "done"

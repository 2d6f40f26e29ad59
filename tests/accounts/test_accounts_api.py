"""Tenants, accounts, devices, enrollment and provisioning through the HTTP API."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from cloudphone.accounts.models import Device, OperatorToken
from cloudphone.core.clock import FakeClock
from cloudphone.runtime import Runtime
from tests.accounts.helpers import bearer, global_operator, make_world


async def test_walkthrough_tenant_account_device_provisioning(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", features={"blf": True})

    r = await api.get("/v1/provisioning", headers=world.device)
    assert r.status_code == 200
    doc = r.json()
    assert doc["address_of_record"] == "sip:alice@acme.test"
    assert doc["features"]["blf"] is True
    assert doc["features"]["incoming_call_mode"] == "push"
    assert doc["sip_domains"] == ["acme.test"]
    assert doc["device_id"] == world.device_id


async def test_account_overrides_inherit_tenant_defaults(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme", features={"analytics": True})
    r = await api.patch(
        f"/v1/accounts/{world.account_id}",
        headers=world.operator,
        json={"feature_overrides": {"push_instance_lifetime_days": 6, "analytics": False}},
    )
    assert r.status_code == 200, r.text
    features = r.json()["features"]
    assert features["push_instance_lifetime_days"] == 6
    assert features["analytics"] is False

    # A tenant default changed later reaches accounts that did not override it.
    r = await api.patch(
        f"/v1/tenants/{world.tenant_id}",
        headers=root,
        json={"feature_defaults": {"smart_contacts": True, "analytics": True}},
    )
    assert r.status_code == 200
    r = await api.get(f"/v1/accounts/{world.account_id}", headers=world.operator)
    assert r.json()["features"]["smart_contacts"] is True
    assert r.json()["features"]["analytics"] is False


@pytest.mark.parametrize("days", [2, 7])
async def test_push_lifetime_outside_three_to_six_days_is_refused(
    api: httpx.AsyncClient, runtime: Runtime, days: int
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.patch(
        f"/v1/accounts/{world.account_id}",
        headers=world.operator,
        json={"feature_overrides": {"push_instance_lifetime_days": days}},
    )
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert "push_instance_lifetime_days" in r.json()["detail"]


async def test_account_outside_tenant_domains_is_refused(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=world.operator,
        json={"address_of_record": "sip:mallory@elsewhere.test"},
    )
    assert r.status_code == 403
    assert "elsewhere.test" in r.json()["detail"]


async def test_duplicate_account_is_a_conflict(api: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.post(
        f"/v1/tenants/{world.tenant_id}/accounts",
        headers=world.operator,
        json={"address_of_record": "sip:alice@acme.test"},
    )
    assert r.status_code == 409
    assert r.json()["type"].endswith("/conflict")


async def test_enrollment_code_is_single_use_and_expires(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.post(f"/v1/accounts/{world.account_id}/enrollments", headers=world.operator)
    assert r.status_code == 201
    code = r.json()["code"]
    assert r.json()["qr_payload"].startswith("cloudphone://provision?server=https%3A%2F%2F")

    claim = {"code": code, "platform": "android", "app_id": "com.example.phone"}
    r = await api.post("/v1/provisioning/claim", json=claim)
    assert r.status_code == 201, r.text
    device_auth = bearer(r.json()["credential"])
    assert (await api.get("/v1/provisioning", headers=device_auth)).status_code == 200

    r = await api.post("/v1/provisioning/claim", json=claim)
    assert r.status_code == 401

    r = await api.post(f"/v1/accounts/{world.account_id}/enrollments", headers=world.operator)
    clock.advance(timedelta(hours=24, seconds=1))
    r = await api.post("/v1/provisioning/claim", json={**claim, "code": r.json()["code"]})
    assert r.status_code == 401


async def test_credentials_are_stored_only_as_hashes(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    device_secret = world.device["Authorization"].split(".")[-1]
    operator_secret = world.operator["Authorization"].split(".")[-1]
    async with runtime.db.transaction() as s:
        stored = [d.credential_hash for d in (await s.scalars(select(Device))).all()]
        stored += [t.secret_hash for t in (await s.scalars(select(OperatorToken))).all()]
    assert stored and all(len(h) == 64 for h in stored)
    assert device_secret not in stored and operator_secret not in stored


async def test_wrong_or_missing_credentials_are_401_problems(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/tenants")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = await api.get("/v1/tenants", headers=bearer("cpo.nothere.secret"))
    assert r.status_code == 401
    assert r.json()["status"] == 401


async def test_device_cannot_use_operator_routes(api: httpx.AsyncClient, runtime: Runtime) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.get("/v1/tenants", headers=world.device)
    assert r.status_code == 403
    r = await api.get(f"/v1/accounts/{world.account_id}", headers=world.device)
    assert r.status_code == 200  # its own account
    r = await api.get("/v1/provisioning", headers=world.operator)
    assert r.status_code == 403


async def test_tenant_operator_cannot_create_tenants(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.post("/v1/tenants", headers=world.operator, json={"name": "evil"})
    assert r.status_code == 403


async def test_dead_push_token_is_cleared_from_devices(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    r = await api.put(
        "/v1/device/push-tokens",
        headers=world.device,
        json={"call_push_token": "aa" * 32, "notice_push_token": "bb" * 32},
    )
    assert r.json()["has_call_push_token"] is True
    holders = await runtime.accounts.devices_holding_push_token("aa" * 32)
    assert [(h.device_id, h.as_call_token) for h in holders] == [(world.device_id, True)]
    assert await runtime.accounts.clear_push_token("aa" * 32, [world.device_id]) == 1
    r = await api.get(f"/v1/devices/{world.device_id}", headers=world.device)
    assert r.json()["has_call_push_token"] is False
    assert r.json()["has_notice_push_token"] is True

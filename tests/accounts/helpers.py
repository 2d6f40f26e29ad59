"""Building tenants, accounts and devices through the API, as an operator would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from cloudphone.runtime import Runtime


@dataclass
class World:
    """One tenant with an operator token, an account and an enrolled device."""

    tenant_id: str
    operator: dict[str, str]  # Authorization header of the tenant's operator
    account_id: str
    device_id: str
    device: dict[str, str]  # Authorization header of the device


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def global_operator(runtime: Runtime) -> dict[str, str]:
    issued = await runtime.accounts.issue_operator_token(None, None, "tests")
    return bearer(issued.token)


async def make_world(
    api: httpx.AsyncClient,
    root: dict[str, str],
    name: str,
    features: dict[str, Any] | None = None,
    user: str = "alice",
) -> World:
    r = await api.post(
        "/v1/tenants",
        headers=root,
        json={
            "name": name,
            "sip_domains": [f"{name}.test"],
            "registrar_hosts": ["127.0.0.1:5070"],
            "feature_defaults": features or {},
        },
    )
    assert r.status_code == 201, r.text
    tenant_id = r.json()["id"]
    r = await api.post(f"/v1/tenants/{tenant_id}/operator-tokens", headers=root, json={})
    assert r.status_code == 201, r.text
    operator = bearer(r.json()["token"])
    r = await api.post(
        f"/v1/tenants/{tenant_id}/accounts",
        headers=operator,
        json={"address_of_record": f"sip:{user}@{name}.test", "display_name": user.title()},
    )
    assert r.status_code == 201, r.text
    account_id = r.json()["id"]
    r = await api.post(
        f"/v1/accounts/{account_id}/devices",
        headers=operator,
        json={"platform": "ios", "app_id": "com.example.phone"},
    )
    assert r.status_code == 201, r.text
    return World(
        tenant_id=tenant_id,
        operator=operator,
        account_id=account_id,
        device_id=r.json()["device"]["id"],
        device=bearer(r.json()["credential"]),
    )

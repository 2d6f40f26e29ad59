"""Tenant isolation over every route of the OpenAPI document.

For each operation, A's tenant operator and A's device call it aimed at tenant B's objects;
B's rows must be unchanged and none of B's identifiers may appear in any answer. A route whose
path names B's object must answer 403 or 404 (not 2xx, and not 422: the probe bodies are valid,
so a refusal is the authorisation check and not input validation). A new path parameter that
this test does not know fails it, so new routes cannot slip past.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloudphone.accounts.models import Account, Device, Enrollment, OperatorToken, Tenant
from cloudphone.gateway.models import PushInstance
from cloudphone.privacy.models import (
    Disclosure,
    LegalHold,
    Notice,
    PolicyVersion,
    PostMortemDirective,
    SubjectExport,
    SubjectRequest,
)
from cloudphone.privacy.requests import PostMortemAction, RequestKind
from cloudphone.privacy.schemas import (
    DirectiveIn,
    DisclosureCreate,
    HoldCreate,
    PolicyCreate,
    RequestCreate,
    RequestProcess,
)
from cloudphone.runtime import Runtime
from tests.accounts.helpers import World, global_operator, make_world
from tests.gateway.conftest import RecordingUpstream
from tests.gateway.test_instances import hand_over


@pytest.fixture
def upstream() -> RecordingUpstream:
    return RecordingUpstream()


_PARAM = re.compile(r"\{(\w+)\}")


def _probe_value(name: str, schema: dict[str, Any], spec: dict[str, Any], b_domain: str) -> Any:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        return _probe_value(name, schema, spec, b_domain)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            prop: _probe_value(prop, sub, spec, b_domain)
            for prop, sub in schema.get("properties", {}).items()
            if prop in schema.get("required", [])
        }
    if kind == "array":
        return []
    if kind == "boolean":
        return True
    if kind == "integer":
        return max(schema.get("minimum", 3), 3)
    if schema.get("format") == "date-time":
        return "2030-01-01T00:00:00Z"
    if name == "address_of_record":
        return f"sip:probe@{b_domain}"
    if name == "code":
        return "cpe.0123456789abcdef.probe"
    return "probe"


async def _b_state(runtime: Runtime, b: World) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    async with runtime.db.transaction() as s:
        for model in (
            Tenant,
            Account,
            Device,
            OperatorToken,
            Enrollment,
            PushInstance,
            SubjectRequest,
            SubjectExport,
            LegalHold,
            PostMortemDirective,
            PolicyVersion,
            Notice,
            Disclosure,
        ):
            column = model.id if model is Tenant else model.tenant_id  # type: ignore[union-attr]
            for row in (await s.scalars(select(model).where(column == b.tenant_id))).all():
                rows.append(
                    tuple(
                        sorted((c.key, str(getattr(row, c.key))) for c in model.__table__.columns)
                    )
                )
    return sorted(rows)


async def _b_privacy_objects(runtime: Runtime, b: World) -> dict[str, str]:
    """One of each privacy object of tenant B, made as the local CLI would."""
    p = runtime.privacy
    filed = await p.file_request(None, b.account_id, RequestCreate(kind=RequestKind.ACCESS))
    await p.verify_request(None, filed.id)
    done = await p.process_request(None, filed.id, RequestProcess())
    request = await p.file_request(None, b.account_id, RequestCreate(kind=RequestKind.CONFIRM))
    await p.set_directive(None, b.account_id, DirectiveIn(action=PostMortemAction.KEEP))
    hold = await p.place_hold(None, b.account_id, HoldCreate(reason="order-b"))
    effective = runtime.clock.now().replace(year=runtime.clock.now().year + 1)
    version = await p.notices.create_policy(
        None, b.tenant_id, PolicyCreate(version="v2", summary="s", effective_at=effective)
    )
    await p.notices.publish_policy(None, version.id)
    (notice,) = await p.notices.notices_for(None, version.id)
    disclosure = await p.notices.record_disclosure(
        None,
        b.tenant_id,
        DisclosureCreate(authority="a", legal_basis="l", scope="s", account_ids=[b.account_id]),
    )
    return {
        "request_id": request.id,
        "export_id": str(done.result["export_id"]),
        "hold_id": hold.id,
        "version_id": version.id,
        "notice_id": notice.id,
        "disclosure_id": disclosure.id,
    }


async def test_no_route_lets_tenant_a_read_or_change_tenant_b(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    a = await make_world(api, root, "tenant-a", user="anna")
    b = await make_world(api, root, "tenant-b", user="bruno")
    body = hand_over("tenant-b")
    body["sip"]["address_of_record"] = "sip:bruno@tenant-b.test"
    r = await api.put("/v1/device/push-instance", headers=b.device, json=body)
    assert r.status_code == 201, r.text
    b_instance = r.json()["instance"]["id"]
    b_secrets = [b.tenant_id, b.account_id, b.device_id, b_instance, "bruno", "tenant-b"]
    privacy = await _b_privacy_objects(runtime, b)
    b_secrets += list(privacy.values())
    path_ids = {
        "tenant_id": b.tenant_id,
        "account_id": b.account_id,
        "device_id": b.device_id,
        "instance_id": b_instance,
        **privacy,
    }

    spec = (await api.get("/openapi.json")).json()
    before = await _b_state(runtime, b)
    assert before, "tenant B must own rows for the test to mean anything"
    checked = 0
    for path, operations in spec["paths"].items():
        params = _PARAM.findall(path)
        unknown = set(params) - set(path_ids)
        assert not unknown, f"teach the isolation test about {unknown} in {path}"
        url = path.format(**{p: path_ids[p] for p in params})
        for method, operation in operations.items():
            probe: Any = None
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                probe = _probe_value(
                    "", content["application/json"]["schema"], spec, "tenant-b.test"
                )
            for who, headers in (("operator", a.operator), ("device", a.device)):
                r = await api.request(method.upper(), url, headers=headers, json=probe)
                checked += 1
                where = f"{who} {method.upper()} {path} -> {r.status_code} {r.text[:200]}"
                # The problem's "instance" echoes the caller's own URL; that is not a leak.
                answer = r.text.replace(url, "")
                for secret in b_secrets:
                    assert secret not in answer, f"B's data leaked: {where}"
                if params:
                    assert r.status_code in (403, 404), where
                assert await _b_state(runtime, b) == before, f"B's data changed: {where}"
    assert checked >= 2 * 17, f"only {checked} calls: did the walk find the routes?"


async def test_the_isolation_walk_would_notice_a_leak(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    """The probe is only worth something if B's data shows up when access is allowed."""
    root = await global_operator(runtime)
    b = await make_world(api, root, "tenant-b", user="bruno")
    r = await api.get(f"/v1/accounts/{b.account_id}", headers=root)
    assert r.status_code == 200 and "bruno" in r.text
    assert await _b_state(runtime, b)

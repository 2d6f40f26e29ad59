"""Push instances: hand-over over HTTPS, allow-list, lifetime, warnings and erasure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cloudphone.accounts.models import Device
from cloudphone.api.app import create_app
from cloudphone.core.clock import FakeClock
from cloudphone.gateway.gateway import Gateway
from cloudphone.gateway.models import PushInstance
from cloudphone.gateway.upstream import RegistrationTarget
from cloudphone.push import AppPushConfig, FcmConfig, PushConfig, PushToken, TokenDead
from cloudphone.runtime import Runtime
from cloudphone.store.migrate import upgrade
from cloudphone.testing.fcm import LocalFcm, make_service_account
from cloudphone.testing.tls import TestCertificates
from tests.accounts.helpers import World, global_operator, make_world
from tests.conftest import empty_database, make_settings
from tests.gateway.conftest import RecordingUpstream

PASSWORD = "alice-Secret-9f1c"
AUTH_USER = "alice-auth-7731"


def hand_over(world_name: str = "acme", **sip: Any) -> dict[str, Any]:
    return {
        "sip": {
            "address_of_record": f"sip:alice@{world_name}.test",
            "auth_username": AUTH_USER,
            "password": PASSWORD,
            "registrar": "127.0.0.1:5070",
            "transport": "udp",
            **sip,
        },
        "push": {
            "platform": "android",
            "app_id": "com.example.phone",
            "call_push_token": "call-token-" + "c" * 40,
            "notice_push_token": "notice-token-" + "n" * 40,
        },
    }


async def _world(api: httpx.AsyncClient, rt: Runtime, **features: Any) -> World:
    return await make_world(api, await global_operator(rt), "acme", features=features)


async def test_create_returns_edge_credentials_and_registers(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream, clock: FakeClock
) -> None:
    world = await _world(api, runtime)
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    assert r.status_code == 201, r.text
    issued = r.json()
    edge = issued["edge"]
    assert edge["password"] != PASSWORD and len(edge["password"]) >= 24
    assert issued["instance"]["state"] == "registering"
    assert edge["outbound_proxies"] == [
        f"sip:127.0.0.1:{runtime.settings.gateway.edge_tcp_port};transport=tcp"
    ]
    ends = issued["instance"]["expires_at"]
    assert ends.startswith((clock.now() + timedelta(days=3)).date().isoformat())
    target = upstream.live[issued["instance"]["id"]]
    assert bytes(target.password) == PASSWORD.encode()
    assert target.registrar == "127.0.0.1:5070"
    r = await api.get("/v1/device/push-instance", headers=world.device)
    assert r.json()["id"] == issued["instance"]["id"]


async def test_credentials_are_sealed_at_rest(api: httpx.AsyncClient, runtime: Runtime) -> None:
    world = await _world(api, runtime)
    await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    async with runtime.db.transaction() as s:
        row = (await s.scalars(select(PushInstance))).one()
    assert PASSWORD not in row.password_sealed and AUTH_USER not in row.auth_username_sealed
    assert row.password_sealed.startswith("v1.")


@pytest.mark.promise("P5")
async def test_non_push_account_is_refused_and_nothing_stored(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream
) -> None:
    for mode in ("background", "rfc8599", "off"):
        world = await make_world(
            api,
            await global_operator(runtime),
            f"t-{mode}",
            features={"incoming_call_mode": mode},
        )
        r = await api.put(
            "/v1/device/push-instance", headers=world.device, json=hand_over(f"t-{mode}")
        )
        assert r.status_code == 403, r.text
        assert r.json()["feature"] == "push_instance"
    async with runtime.db.transaction() as s:
        assert (await s.scalars(select(PushInstance))).all() == []
        assert all(d.call_push_token is None for d in (await s.scalars(select(Device))).all())
    assert upstream.calls == []


@pytest.mark.promise("P3")
async def test_hand_over_over_plain_http_is_refused(runtime: Runtime) -> None:
    from cloudphone.api.app import create_app

    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://cp.test") as secure:
        world = await _world(secure, runtime)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp.test") as plain:
        r = await plain.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    assert r.status_code == 403 and r.json()["type"].endswith("/https-required")
    async with runtime.db.transaction() as s:
        assert (await s.scalars(select(PushInstance))).all() == []


@pytest.mark.parametrize(
    ("sip", "needle"),
    [
        ({"registrar": "evil.example:5060"}, "evil.example"),
        ({"registrar": "127.0.0.1:5999"}, "127.0.0.1:5999"),
        ({"outbound_proxy": "10.9.9.9"}, "10.9.9.9"),
        ({"address_of_record": "sip:alice@other.test"}, "account"),
    ],
)
async def test_destinations_off_the_allow_list_are_refused_without_a_packet(
    api: httpx.AsyncClient,
    runtime: Runtime,
    upstream: RecordingUpstream,
    sip: dict[str, str],
    needle: str,
) -> None:
    world = await _world(api, runtime)
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over(**sip))
    assert r.status_code == 403, r.text
    assert r.json()["type"].endswith("/destination-not-allowed")
    assert needle in r.json()["detail"]
    assert upstream.calls == []  # the engine was never asked to send anything


async def test_refresh_extends_but_never_past_the_configured_maximum(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await _world(api, runtime, push_instance_lifetime_days=4)
    body = {**hand_over(), "lifetime_days": 6}
    r = await api.put("/v1/device/push-instance", headers=world.device, json=body)
    start = clock.now()
    assert r.json()["instance"]["expires_at"].startswith(
        (start + timedelta(days=4)).date().isoformat()
    )
    clock.advance(timedelta(days=2))
    r = await api.post(
        "/v1/device/push-instance/refresh", headers=world.device, json={"lifetime_days": 6}
    )
    assert r.status_code == 200
    assert r.json()["expires_at"].startswith((start + timedelta(days=6)).date().isoformat())


async def test_replace_ends_the_previous_instance_first(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream
) -> None:
    world = await _world(api, runtime)
    first = (
        await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    ).json()
    second = (
        await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    ).json()
    one, two = first["instance"]["id"], second["instance"]["id"]
    assert upstream.calls == [("register", one), ("unregister", one), ("register", two)]
    assert list(upstream.live) == [two]


async def test_expiry_warnings_then_expiry_with_erasure(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream, clock: FakeClock
) -> None:
    world = await _world(api, runtime)
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    instance_id = r.json()["instance"]["id"]
    service = runtime.gateway.instances

    clock.advance(timedelta(days=2))  # 24 h left
    assert (await service.sweep()).warned == [instance_id]
    assert (await service.sweep()).warned == []  # once per threshold
    clock.advance(timedelta(hours=12))  # 12 h left
    assert (await service.sweep()).warned == [instance_id]
    kinds = [p.kind for p in runtime.push.recent_pushes("com.example.phone")]
    assert kinds.count("instance_expiring") == 2

    clock.advance(timedelta(hours=12))
    report = await service.sweep()
    assert report.ended == {instance_id: "expired"}
    assert upstream.calls[-1] == ("unregister", instance_id)
    assert upstream.wiped and bytes(upstream.wiped[0].password) == b""
    r = await api.get("/v1/device/push-instance", headers=world.device)
    assert r.status_code == 404


async def test_instance_failing_for_twelve_hours_ends_early(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await _world(api, runtime)
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    instance_id = r.json()["instance"]["id"]
    service = runtime.gateway.instances
    await service.registration_states({instance_id: (False, 403, None)})
    r = await api.get("/v1/device/push-instance", headers=world.device)
    assert r.json()["state"] == "failing" and r.json()["last_sip_status"] == 403
    clock.advance(timedelta(hours=11, minutes=59))
    assert (await service.sweep()).ended == {}
    clock.advance(timedelta(minutes=1))
    assert (await service.sweep()).ended == {instance_id: "registration_failing"}


async def test_recovery_clears_the_failing_clock(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await _world(api, runtime)
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    instance_id = r.json()["instance"]["id"]
    service = runtime.gateway.instances
    await service.registration_states({instance_id: (False, 503, None)})
    clock.advance(timedelta(hours=6))
    await service.registration_states({instance_id: (True, 200, 600)})
    clock.advance(timedelta(hours=7))
    assert (await service.sweep()).ended == {}
    r = await api.get("/v1/device/push-instance", headers=world.device)
    assert r.json()["state"] == "registered"


async def test_dead_call_token_ends_the_instance_unless_re_registered_since(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream, clock: FakeClock
) -> None:
    world = await _world(api, runtime)
    body = hand_over()
    r = await api.put("/v1/device/push-instance", headers=world.device, json=body)
    instance_id = r.json()["instance"]["id"]
    token = PushToken(body["push"]["call_push_token"])
    hook = runtime.push._hook  # the hook the runtime wired into the dispatcher
    assert hook is not None

    # The service learned of the death before the token was registered: it stays alive.
    await hook.on_token_dead(
        "com.example.phone",
        "fcm",
        token,
        TokenDead("Unregistered", clock.now() - timedelta(hours=1)),
    )
    assert instance_id in upstream.live
    await hook.on_token_dead(
        "com.example.phone", "fcm", token, TokenDead("Unregistered", clock.now())
    )
    assert instance_id not in upstream.live
    r = await api.get(f"/v1/devices/{world.device_id}", headers=world.device)
    assert r.json()["has_call_push_token"] is False
    assert r.json()["has_notice_push_token"] is True


async def test_operator_sees_instance_state_only_in_own_tenant(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    root = await global_operator(runtime)
    world = await make_world(api, root, "acme")
    other = await make_world(api, root, "other", user="olga")
    r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over())
    instance_id = r.json()["instance"]["id"]
    r = await api.get(f"/v1/tenants/{world.tenant_id}/push-instances", headers=world.operator)
    assert [i["id"] for i in r.json()] == [instance_id]
    r = await api.get(f"/v1/push-instances/{instance_id}", headers=other.operator)
    assert r.status_code == 404
    r = await api.get(f"/v1/tenants/{world.tenant_id}/push-instances", headers=other.operator)
    assert r.status_code == 404


async def test_expiry_warnings_reach_the_local_fcm_server(
    database_url: str, tmp_path: Path, upstream: RecordingUpstream
) -> None:
    """The warning is a real FCM HTTP v1 request (OAuth, TLS, HTTP/2), not a log line. The
    clock stays at the real time (the OAuth assertion must be fresh); the instance is brought
    near its end by shortening its lifetime in the database instead."""
    clock = FakeClock(datetime.now(UTC))
    certs = TestCertificates(tmp_path)
    async with LocalFcm(certs) as fcm:
        account = make_service_account(tmp_path, "cloudphone-test")
        fcm.trust(account, "cloudphone-test")
        push = PushConfig(
            apps={
                "com.example.phone": AppPushConfig(
                    sender="services",
                    fcm=FcmConfig(
                        project_id="cloudphone-test",
                        service_account_file=account.path,
                        endpoint=fcm.base_url,
                        token_uri=fcm.token_uri,
                        ca_file=certs.ca_file,
                    ),
                )
            },
            default_app=None,
        )
        rt = Runtime.build(
            make_settings(database_url, tmp_path / "data", push=push),
            clock=clock,
            upstream=upstream,
        )
        await upgrade(rt.db)
        transport = httpx.ASGITransport(app=create_app(rt))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="https://cp.test") as api:
                world = await _world(api, rt)
                body = hand_over()
                r = await api.put("/v1/device/push-instance", headers=world.device, json=body)
                assert r.status_code == 201
            async with rt.db.transaction() as s:
                instance = (await s.scalars(select(PushInstance))).one()
                instance.expires_at = clock.now() + timedelta(hours=23)
            assert len((await rt.gateway.instances.sweep()).warned) == 1
            [received] = fcm.received
            assert received.token == body["push"]["notice_push_token"]
            assert received.message["data"]["type"] == "instance_expiring"
        finally:
            await empty_database(rt)
            await rt.close()


async def test_start_up_resumes_every_instance_at_a_bounded_rate(
    api: httpx.AsyncClient, runtime: Runtime, upstream: RecordingUpstream
) -> None:
    """After a restart every live instance registers again, but paced (no storm)."""
    root = await global_operator(runtime)
    for n in range(6):
        world = await make_world(api, root, f"t{n}")
        r = await api.put("/v1/device/push-instance", headers=world.device, json=hand_over(f"t{n}"))
        assert r.status_code == 201
    upstream.calls.clear()
    stamps: list[float] = []
    original = upstream.register

    async def timed(target: RegistrationTarget) -> None:
        stamps.append(asyncio.get_running_loop().time())
        await original(target)

    upstream.register = timed  # type: ignore[method-assign]
    gateway = Gateway(runtime.gateway.instances, upstream, sweep_interval_s=3600, startup_rate=50)
    await gateway.start()
    try:
        for _ in range(100):
            if len(stamps) == 6:
                break
            await asyncio.sleep(0.02)
    finally:
        await gateway.stop()
    assert len(stamps) == 6
    assert stamps[-1] - stamps[0] >= 5 / 50 * 0.9  # 6 registrations at 50/s span >= 0.1 s

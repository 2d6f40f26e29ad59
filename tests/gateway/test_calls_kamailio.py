"""Waking the phone, end to end: Kamailio is the provider, SIPp the caller, the local FCM
server receives the pushes, and the app is a SIPp scenario started when the push arrives,
which REGISTERs at the gateway's edge with its per-instance login."""

from __future__ import annotations

import asyncio
import io
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text as text_sql

from cloudphone.core.clock import FakeClock
from cloudphone.core.logging import configure_logging
from cloudphone.gateway.calls import CallRelay
from cloudphone.gateway.messages import IS_COMPOSING
from cloudphone.push import AppPushConfig, FcmConfig, PushConfig
from cloudphone.runtime import Runtime
from cloudphone.schema import metadata
from cloudphone.store.migrate import upgrade
from cloudphone.testing.fcm import LocalFcm, ReceivedMessage, make_service_account
from cloudphone.testing.kamailio import KamailioInstance, free_port, run_kamailio
from cloudphone.testing.peers import require_binary
from cloudphone.testing.sipp import Sipp, SippRun
from cloudphone.testing.tls import TestCertificates
from tests.accounts.helpers import World, global_operator, make_world
from tests.conftest import empty_database, make_settings

pytestmark = pytest.mark.integration

PEERS = Path(__file__).resolve().parents[1] / "peers"
APP_ID = "com.example.phone"
PROJECT = "example-phone"
HOLD_S = 4.0


@pytest.fixture
def upstream() -> None:
    return None  # the real registration engine


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioInstance]:
    with run_kamailio(
        tmp_path_factory.mktemp("calls-kamailio"),
        binary=require_binary("kamailio"),
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=PEERS / "kamailio" / "dbtext",
    ) as instance:
        yield instance


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates(tmp_path_factory.mktemp("calls-tls"))


@pytest.fixture
async def fcm(certs: TestCertificates) -> AsyncIterator[LocalFcm]:
    async with LocalFcm(certs) as server:
        yield server


@pytest.fixture
async def runtime(
    database_url: str, tmp_path: Path, fcm: LocalFcm, certs: TestCertificates
) -> AsyncIterator[Runtime]:
    account = make_service_account(tmp_path, PROJECT)
    fcm.trust(account, PROJECT)
    push = PushConfig(
        apps={
            APP_ID: AppPushConfig(
                sender="services",
                fcm=FcmConfig(
                    project_id=PROJECT,
                    service_account_file=account.path,
                    endpoint=fcm.base_url,
                    token_uri=fcm.token_uri,
                    ca_file=certs.ca_file,
                ),
            )
        }
    )
    settings = make_settings(
        database_url,
        tmp_path / "data",
        push=push,
        gateway={
            "sip_port": 0,
            "edge_udp_port": 0,
            "edge_tcp_port": 0,
            "call_hold_s": HOLD_S,
            "edge_digest_algorithms": ["MD5"],  # SIPp answers only the first challenge
        },
    )
    # The push JWTs are checked against the real time: a clock standing at "now".
    rt = Runtime.build(settings, clock=FakeClock(datetime.now(UTC)))
    await upgrade(rt.db)
    await rt.gateway.start()
    try:
        yield rt
    finally:
        await empty_database(rt)
        await rt.close()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    runner = Sipp(require_binary("sipp"), scenarios=PEERS / "sipp", workdir=tmp_path)
    yield runner
    runner.stop_all()


@dataclass
class Phone:
    """One device of alice's with a push instance: its edge login and push token."""

    device: dict[str, str]
    instance_id: str
    username: str
    password: str
    token: str

    def app_line(self) -> str:
        return f"{self.username};[authentication username={self.username} password={self.password}];sip.test"


def _relay(rt: Runtime) -> CallRelay:
    assert rt.gateway.calls is not None
    return rt.gateway.calls


def _edge(rt: Runtime) -> tuple[str, int]:
    address = _relay(rt).endpoint.local_address("UDP")
    assert address is not None
    return address


@pytest.fixture(autouse=True)
def _fresh_location(kamailio: KamailioInstance) -> None:
    """Each test's runtime leaves its binding behind (a stop keeps bindings, on purpose):
    without this the provider would fork the next call to dead contacts and wait for them."""
    kamailio.kamcmd("ul.rm", "location", "alice")


async def _world(api: httpx.AsyncClient, rt: Runtime) -> World:
    root = await global_operator(rt)
    world = await make_world(api, root, "sip", user="alice")
    r = await api.patch(
        f"/v1/tenants/{world.tenant_id}", headers=root, json={"registrar_hosts": ["127.0.0.1"]}
    )
    assert r.status_code == 200
    return world


async def _phone(
    api: httpx.AsyncClient, kam: KamailioInstance, device: dict[str, str], upstream: str = "udp"
) -> Phone:
    token = "fcm-call-" + secrets.token_hex(20)
    body: dict[str, Any] = {
        "sip": {
            "address_of_record": "sip:alice@sip.test",
            "auth_username": "alice",
            "password": "alice-secret",
            "registrar": f"127.0.0.1:{kam.port}",
            "transport": upstream,
            "expiry": 300,
        },
        "push": {"platform": "android", "app_id": APP_ID, "call_push_token": token},
    }
    r = await api.put("/v1/device/push-instance", headers=device, json=body)
    assert r.status_code == 201, r.text
    edge, instance_id = r.json()["edge"], r.json()["instance"]["id"]
    for _ in range(100):
        r = await api.get("/v1/device/push-instance", headers=device)
        if r.json().get("state") == "registered":
            return Phone(device, instance_id, edge["username"], edge["password"], token)
        await asyncio.sleep(0.05)
    raise AssertionError(f"never registered upstream: {r.json()}")


async def _second_device(api: httpx.AsyncClient, world: World) -> dict[str, str]:
    r = await api.post(
        f"/v1/accounts/{world.account_id}/devices",
        headers=world.operator,
        json={"platform": "android", "app_id": APP_ID},
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['credential']}"}


async def _pushes(
    fcm: LocalFcm, kind: str, count: int = 1, within: float = 10.0
) -> list[dict[str, Any]]:
    for _ in range(int(within / 0.02)):
        found = [m.message for m in fcm.received if _kind(m) == kind]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} push: {[_kind(m) for m in fcm.received]}")


def _kind(message: ReceivedMessage) -> str:
    data = message.message.get("data") or {}
    return str(data.get("type", ""))


def _caller(sipp: Sipp, kam: KamailioInstance, scenario: str, *extra: str) -> SippRun:
    return sipp.start(
        scenario,
        local_port=free_port(),
        remote=(kam.host, kam.port),
        service="alice",
        injection=["bob;;sip.test"],
        extra=extra,
    )


async def _app(sipp: Sipp, rt: Runtime, phone: Phone, scenario: str, *extra: str) -> SippRun:
    """The woken app: REGISTER at the edge, then take the call on the same port (two SIPp
    runs: SIPp cannot take a new Call-ID in a scenario that began by sending)."""
    port = await _registered_app(sipp, rt, phone)
    return sipp.start(scenario, local_port=port, name=f"{scenario}-{port}", extra=extra)


async def _registered_app(sipp: Sipp, rt: Runtime, phone: Phone) -> int:
    """REGISTER at the gateway's edge with the instance's digest login; returns the port."""
    port = free_port()
    line = f"{phone.app_line()};127.0.0.1:{port};300"
    register = sipp.start("reg_auth.xml", local_port=port, remote=_edge(rt), injection=[line])
    await _finished(register, within=10)
    return port


async def _finished(run: SippRun, within: float = 20.0) -> None:
    code = await asyncio.to_thread(run.wait, within)
    assert code == 0, run.diagnostics()


def _count(screen: str, message: str) -> int:
    """How many ``message`` SIPp's final screen counted (first row naming it)."""
    for line in screen.splitlines():
        parts = line.split()
        if parts and parts[0] == message and len(parts) > 2 and parts[2].isdigit():
            return int(parts[2])
    return 0


def _events(rt: Runtime) -> list[str]:
    return [event for event, _ in _relay(rt).events]


@pytest.mark.parametrize("upstream", ["udp", "tcp"])
async def test_wake_and_answer(
    upstream: str,
    api: httpx.AsyncClient,
    runtime: Runtime,
    kamailio: KamailioInstance,
    fcm: LocalFcm,
    sipp: Sipp,
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device, upstream)
    caller = _caller(sipp, kamailio, "uac_call.xml", "-d", "300")

    (push,) = await _pushes(fcm, "incoming_call")
    assert push["token"] == phone.token
    assert push["data"]["caller_uri"] == "sip:bob@sip.test"
    assert int(push["data"]["ring_until"]) > int(push["data"]["sent_at"])
    app = await _app(sipp, runtime, phone, "app_answer.xml")

    await _finished(caller)
    await _finished(app)
    assert _events(runtime)[:4] == ["invite", "push", "forked", "answered"]
    assert len([m for m in fcm.received if _kind(m) == "incoming_call"]) == 1


async def test_no_device_in_time_gets_480_with_reason_and_a_missed_call_alert(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    caller = _caller(sipp, kamailio, "uac_unanswered.xml")
    await _pushes(fcm, "incoming_call")
    await _finished(caller, within=HOLD_S + 10)
    await _pushes(fcm, "call_missed")
    assert "final-480" in _events(runtime)
    # Woken too late, the app is still shown the call it was pushed for, then its end.
    app = await _app(sipp, runtime, phone, "app_cancelled.xml")
    await _finished(app)
    assert len([m for m in fcm.received if _kind(m) == "incoming_call"]) == 1


async def test_caller_cancels_while_the_woken_app_rings(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    caller = _caller(sipp, kamailio, "uac_cancel.xml")
    await _pushes(fcm, "incoming_call")
    app = await _app(sipp, runtime, phone, "app_cancelled.xml")
    await _finished(caller)
    await _finished(app)
    events = _events(runtime)
    assert events.index("forked") < events.index("cancelled")


async def test_caller_cancels_after_the_voip_push_then_the_app_still_sees_invite_and_cancel(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    caller = _caller(sipp, kamailio, "uac_cancel.xml")
    await _pushes(fcm, "incoming_call")
    await _finished(caller)
    await _pushes(fcm, "call_missed")
    # The app wakes up late: CallKit must still be shown the call it was promised.
    app = await _app(sipp, runtime, phone, "app_cancelled.xml")
    await _finished(app)
    events = _events(runtime)
    assert events.index("cancelled") < events.index("forked")
    assert len([m for m in fcm.received if _kind(m) == "incoming_call"]) == 1


async def test_two_devices_both_woken_first_answer_wins_other_cancelled(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    first = await _phone(api, kamailio, world.device)
    second = await _phone(api, kamailio, await _second_device(api, world))
    caller = _caller(sipp, kamailio, "uac_call.xml", "-d", "300")
    pushes = await _pushes(fcm, "incoming_call", count=2)
    assert {p["token"] for p in pushes} == {first.token, second.token}
    loser = await _app(sipp, runtime, second, "app_cancelled.xml")
    await asyncio.sleep(0.5)
    winner = await _app(sipp, runtime, first, "app_answer.xml")
    await _finished(caller)
    await _finished(winner)
    await _finished(loser)
    await _pushes(fcm, "call_answered_elsewhere")
    assert len([m for m in fcm.received if _kind(m) == "incoming_call"]) == 2


@pytest.fixture
def kamailio_callauth(tmp_path: Path) -> Iterator[KamailioInstance]:
    dbtext = tmp_path / "dbtext"
    shutil.copytree(PEERS / "kamailio" / "dbtext", dbtext)
    with run_kamailio(
        tmp_path / "kamailio",
        binary=require_binary("kamailio"),
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=dbtext,
        defines=("WITH_CALLAUTH",),
    ) as instance:
        yield instance


async def test_call_from_the_app_goes_upstream_and_the_gateway_answers_the_407(
    api: httpx.AsyncClient,
    runtime: Runtime,
    kamailio_callauth: KamailioInstance,
    fcm: LocalFcm,
    sipp: Sipp,
) -> None:
    kam = kamailio_callauth
    world = await _world(api, runtime)
    phone = await _phone(api, kam, world.device)
    # bob: a SIPp UAS registered at the provider
    bob_port = free_port()
    bob_reg = sipp.start(
        "reg_auth.xml",
        local_port=free_port(),
        remote=(kam.host, kam.port),
        injection=[
            f"bob;[authentication username=bob password=bob-secret];sip.test;127.0.0.1:{bob_port};300"
        ],
    )
    await _finished(bob_reg, within=10)
    bob = sipp.start("uas_call_fast.xml", local_port=bob_port)
    sipp.wait_listening(bob_port)
    # the app: registered at the edge, then calls bob through the gateway; it never sees
    # the provider's 407, nor holds the provider password
    app = await _registered_app(sipp, runtime, phone)
    caller = sipp.start(
        "uac_call.xml",
        local_port=app,
        remote=_edge(runtime),
        service="bob",
        injection=["alice;;sip.test"],
        extra=["-d", "200"],
        name=f"app-call-{app}",
    )
    await _finished(caller)
    await _finished(bob)
    screen = (caller.workdir / f"app-call-{app}.out").read_text()
    assert _count(screen, "407") == 0, screen  # the gateway answered the challenge
    assert not fcm.received  # nothing was pushed for an outgoing call


async def test_message_for_a_sleeping_app_is_stored_announced_then_delivered(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    store = _relay(runtime).messages
    assert store is not None
    instance_id = phone.instance_id
    typing = _caller(
        sipp, kamailio, "uac_message.xml", "-key", "ctype", IS_COMPOSING, "-key", "text", "<x/>"
    )
    await _finished(typing)
    assert await store.count(instance_id) == 0  # is-composing: accepted and dropped
    text = "see you at 8"
    sender = _caller(
        sipp, kamailio, "uac_message.xml", "-key", "ctype", "text/plain", "-key", "text", text
    )
    await _finished(sender)  # 200 upstream although the app sleeps (RFC 3428 §7)
    (alert,) = await _pushes(fcm, "message")
    assert text not in str(alert)  # only the id travels through the push service
    assert await store.count(instance_id) == 1
    async with runtime.db.transaction() as s:
        raw = (await s.execute(text_sql("SELECT body, sender FROM gateway_stored_messages"))).all()
    assert text.encode() not in repr(raw).encode() and "bob" not in repr(raw)  # sealed

    app = await _app(sipp, runtime, phone, "app_message.xml", "-key", "text", text)
    await _finished(app)
    for _ in range(50):
        if await store.count(instance_id) == 0:
            break
        await asyncio.sleep(0.05)
    assert await store.count(instance_id) == 0  # erased on delivery

    _relay(runtime).max_message_bytes = 8  # the size limit (message_max_bytes)
    await _phone(api, kamailio, world.device)  # a fresh instance, its app asleep again
    large = _caller(
        sipp,
        kamailio,
        "uac_message_too_large.xml",
        "-key",
        "ctype",
        "text/plain",
        "-key",
        "text",
        text,
    )
    await _finished(large)
    assert len([m for m in fcm.received if _kind(m) == "message"]) == 1


@pytest.mark.promise("P7")
async def test_blf_subscription_relays_both_ways_and_leaves_no_trace_of_the_watched_uri(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, sipp: Sipp
) -> None:
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    watched = "bob"
    bob_port = free_port()
    bob_reg = sipp.start(
        "reg_auth.xml",
        local_port=free_port(),
        remote=(kamailio.host, kamailio.port),
        injection=[
            f"{watched};[authentication username=bob password=bob-secret];sip.test;"
            f"127.0.0.1:{bob_port};300"
        ],
    )
    await _finished(bob_reg, within=10)
    notifier = sipp.start("uas_blf_notifier.xml", local_port=bob_port)
    sipp.wait_listening(bob_port)
    port = await _registered_app(sipp, runtime, phone)
    app = sipp.start(
        "app_blf.xml",
        local_port=port,
        remote=_edge(runtime),
        service=watched,
        injection=["alice;;sip.test"],
        name=f"blf-{port}",
    )
    await _finished(app)
    await _finished(notifier)

    # P7: the subscription is over; the watched URI is in no table, no log, no relay state.
    stored = await _dump(runtime)
    assert f"{watched}@sip.test" not in stored
    assert f"{watched}@sip.test" not in logs.getvalue()
    relay = _relay(runtime)
    assert not relay.calls and all(watched not in str(e) for e in relay.events)
    kamailio.kamcmd("ul.rm", "location", "bob")


async def _dump(rt: Runtime) -> str:
    rows = []
    async with rt.db.transaction() as s:
        for table in metadata().sorted_tables:
            rows.append(repr((await s.execute(text_sql(f'SELECT * FROM "{table.name}"'))).all()))
    return "\n".join(rows)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_started_by_the_push_registers_at_the_edge_and_answers(
    transport: str,
    api: httpx.AsyncClient,
    runtime: Runtime,
    kamailio: KamailioInstance,
    fcm: LocalFcm,
    sipp: Sipp,
    tmp_path: Path,
) -> None:
    binary = require_binary("baresip")
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    caller = _caller(sipp, kamailio, "uac_call.xml", "-d", "500")
    await _pushes(fcm, "incoming_call")

    # The push arrived: the "app" starts, as a real softphone would when woken.
    home = tmp_path / "baresip"
    home.mkdir()
    edge = _relay(runtime).endpoint.local_address(transport)
    assert edge is not None
    edge_host, edge_port = edge
    rtp = free_port()
    (home / "config").write_text(
        (PEERS / "baresip" / "config")
        .read_text()
        .format(sip_port=_free_port_and_next(), rtp_low=rtp, rtp_high=rtp + 10)
    )
    (home / "accounts").write_text(
        (PEERS / "baresip" / "accounts")
        .read_text()
        .format(
            user="alice",
            edge_user=phone.username,
            edge_password=phone.password,
            edge_host=edge_host,
            edge_port=edge_port,
            transport=transport,
        )
    )
    (home / "contacts").write_text("")
    log_path = tmp_path / "baresip.log"
    with log_path.open("wb") as out:
        app = await asyncio.create_subprocess_exec(
            binary, "-f", str(home), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        code = await asyncio.to_thread(caller.wait, 20)
        assert code == 0, caller.diagnostics() + "\n--- baresip\n" + log_path.read_text()[-3000:]
    finally:
        app.terminate()
        await asyncio.wait_for(app.wait(), 5)
    assert _events(runtime)[:4] == ["invite", "push", "forked", "answered"]


async def test_rfc8599_app_registers_through_the_gateway_and_is_pushed_for_the_call(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    root = await global_operator(runtime)
    world = await make_world(
        api, root, "sip", features={"incoming_call_mode": "rfc8599"}, user="alice"
    )
    r = await api.patch(
        f"/v1/tenants/{world.tenant_id}",
        headers=root,
        json={"registrar_hosts": [f"127.0.0.1:{kamailio.port}"]},
    )
    assert r.status_code == 200, r.text
    prid = "fcm-pn-" + secrets.token_hex(16)
    auth = "[authentication username=alice password=alice-secret]"
    keys = ["-key", "pnparam", PROJECT, "-key", "expires", "600"]

    async def register(provider: str, scenario: str = "app_register_pn.xml") -> int:
        port = free_port()
        run = sipp.start(
            scenario,
            local_port=port,
            remote=_edge(runtime),
            injection=[f"alice;{auth};sip.test;127.0.0.1:{port};{prid}"],
            extra=["-key", "provider", provider, *keys],
            name=f"pn-{scenario}-{port}",
        )
        await _finished(run, within=10)
        return port

    await register("pushy", "app_register_pn_refused.xml")  # 555: not a service we push to
    await register("fcm")
    engine_port = str(_relay(runtime).engine.udp_address[1])
    assert engine_port in kamailio.kamcmd("ul.lookup", "location", "alice")  # our Contact

    caller = _caller(sipp, kamailio, "uac_call.xml", "-d", "300")
    (push,) = await _pushes(fcm, "incoming_call")
    assert push["token"] == prid
    # the push wakes the app; its REGISTER (through the gateway) releases the held INVITE
    port = await register("fcm")
    app = sipp.start("app_answer.xml", local_port=port, name=f"pn-answer-{port}")
    await _finished(caller)
    await _finished(app)
    assert _events(runtime)[:4] == ["invite", "push", "forked", "answered"]

    # §6.1 +sip.pnsreg: before the binding lapses the app is pushed to refresh it.
    pns = _relay(runtime).pns
    assert pns is not None
    pns.pnsreg_s = 19
    keys[-1] = "20"  # Expires: 20 -> the refresh push one second after the 200
    await register("fcm")
    (wake,) = await _pushes(fcm, "registration_wake_up", within=5)
    assert wake["token"] == prid


async def test_a_stale_udp_binding_falls_back_to_the_push(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, fcm: LocalFcm, sipp: Sipp
) -> None:
    world = await _world(api, runtime)
    phone = await _phone(api, kamailio, world.device)
    await _registered_app(sipp, runtime, phone)  # registered, then suspended: nobody listens
    caller = _caller(sipp, kamailio, "uac_call.xml", "-d", "300")
    await _pushes(fcm, "incoming_call", within=10)  # after the silent flow
    app = await _app(sipp, runtime, phone, "app_answer.xml")
    await _finished(caller)
    await _finished(app)
    events = _events(runtime)
    assert events.index("silent-flow") < events.index("push") < events.index("answered")


def _free_port_and_next() -> int:
    """A port whose successor is free too: baresip also binds TLS on sip_listen's port + 1."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")

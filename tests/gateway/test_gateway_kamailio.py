"""The push gateway end to end against Kamailio: hand-over over the API, the binding in the
provider's location table, disable, and erasure that leaves no trace (promise P4)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from cloudphone.core.logging import configure_logging
from cloudphone.gateway.models import PushInstance
from cloudphone.privacy.audit import AuditEvent
from cloudphone.runtime import Runtime
from cloudphone.schema import metadata
from cloudphone.testing.kamailio import KamailioInstance, free_port, run_kamailio
from cloudphone.testing.peers import require_binary
from tests.accounts.helpers import World, global_operator, make_world

PEERS = Path(__file__).resolve().parents[1] / "peers"
HANDSET_USER = "alice-handset-7f3a"
HANDSET_PASSWORD = "handset-Secret-4411-q"


@pytest.fixture
def upstream() -> None:
    """The real registration engine (the directory's default records instead)."""
    return None


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioInstance]:
    """Kamailio whose subscriber table has a handset login distinct from the AoR's user."""
    dbtext = tmp_path_factory.mktemp("gw-dbtext") / "dbtext"
    shutil.copytree(PEERS / "kamailio" / "dbtext", dbtext)
    with (dbtext / "subscriber").open("a") as rows:
        rows.write(f"99:{HANDSET_USER}:sip.test:{HANDSET_PASSWORD}::\n")
    with run_kamailio(
        tmp_path_factory.mktemp("gw-kamailio"),
        binary=require_binary("kamailio"),
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=dbtext,
        defines=("AUTH_USER_DIFFERS",),
    ) as instance:
        yield instance


async def _alice(api: httpx.AsyncClient, rt: Runtime, kam: KamailioInstance) -> World:
    root = await global_operator(rt)
    world = await make_world(api, root, "sip", user="alice")  # sip:alice@sip.test
    r = await api.patch(
        f"/v1/tenants/{world.tenant_id}", headers=root, json={"registrar_hosts": ["127.0.0.1"]}
    )
    assert r.status_code == 200
    return world


def _hand_over(kam: KamailioInstance, transport: str = "udp") -> dict[str, object]:
    return {
        "sip": {
            "address_of_record": "sip:alice@sip.test",
            "auth_username": HANDSET_USER,
            "password": HANDSET_PASSWORD,
            "registrar": f"127.0.0.1:{kam.port_for(transport)}",
            "transport": transport,
            "expiry": 300,
        },
        "push": {
            "platform": "android",
            "app_id": "com.example.phone",
            "call_push_token": "fcm-call-token-" + "x" * 30,
        },
    }


async def _state(api: httpx.AsyncClient, world: World, wanted: str) -> dict[str, object]:
    for _ in range(100):
        r = await api.get("/v1/device/push-instance", headers=world.device)
        if r.json().get("state") == wanted:
            return dict(r.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"instance never became {wanted}: {r.json()}")


async def _everything_stored(rt: Runtime, db_dir: Path) -> bytes:
    """Every byte the database holds: the SQLite files, or every row of every table."""
    if rt.db.dialect == "sqlite":
        await rt.db.scrub_freed_pages()
        files = sorted(db_dir.glob("*.db*"))  # noqa: ASYNC240 - a test's temp dir
        return b"".join([await asyncio.to_thread(p.read_bytes) for p in files])
    dump = []
    async with rt.db.transaction() as s:
        for table in metadata().sorted_tables:
            rows = (await s.execute(text(f'SELECT * FROM "{table.name}"'))).all()
            dump.append(repr(rows))
    return "\n".join(dump).encode()


@pytest.mark.integration
@pytest.mark.promise("P4")
async def test_hand_over_registers_upstream_and_disable_erases_everything(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance, database_url: str
) -> None:
    logs = io.StringIO()
    configure_logging("debug", "json", stream=logs)
    world = await _alice(api, runtime, kamailio)

    r = await api.put("/v1/device/push-instance", headers=world.device, json=_hand_over(kamailio))
    assert r.status_code == 201, r.text
    instance_id = r.json()["instance"]["id"]
    state = await _state(api, world, "registered")
    assert state["last_sip_status"] == 200
    async with runtime.db.transaction() as s:
        row = await s.get(PushInstance, instance_id)
        assert row is not None
        contact_key, sealed = row.contact_key, row.password_sealed
    assert contact_key in kamailio.kamcmd("ul.lookup", "location", "alice")

    r = await api.delete("/v1/device/push-instance", headers=world.device)
    assert r.status_code == 204
    assert contact_key not in kamailio.kamcmd("ul.lookup", "location", "alice")

    stored = await _everything_stored(runtime, Path(database_url.split("///")[-1]).parent)
    for secret in (HANDSET_PASSWORD, HANDSET_USER, sealed, sealed.split(".")[-1][:40]):
        assert secret.encode() not in stored, f"{secret[:12]}… survived erasure"
        assert secret not in logs.getvalue()
    async with runtime.db.transaction() as s:
        audit = (
            await s.scalars(select(AuditEvent).where(AuditEvent.object_id == instance_id))
        ).all()
    assert [(a.action, a.reason) for a in audit] == [("push_instance.erased", "disabled")]
    assert HANDSET_USER not in repr(audit[0].__dict__)


@pytest.mark.integration
async def test_wrong_password_shows_as_failing_with_the_sip_status(
    api: httpx.AsyncClient, runtime: Runtime, kamailio: KamailioInstance
) -> None:
    world = await _alice(api, runtime, kamailio)
    body = _hand_over(kamailio)
    body["sip"]["password"] = "wrong"  # type: ignore[index]
    r = await api.put("/v1/device/push-instance", headers=world.device, json=body)
    assert r.status_code == 201
    state = await _state(api, world, "failing")
    assert state["last_sip_status"] in (401, 403)
    r = await api.get(f"/v1/tenants/{world.tenant_id}/push-instances", headers=world.operator)
    assert r.json()[0]["state"] == "failing"


def _serve(tmp_path: Path, sip_port: int, http_port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CLOUDPHONE_DATA_DIR": str(tmp_path / "data"),
        "CLOUDPHONE_HTTP_PORT": str(http_port),
        "CLOUDPHONE_GATEWAY__SIP_PORT": str(sip_port),
        "CLOUDPHONE_GATEWAY__STARTUP_REGISTRATIONS_PER_S": "50",
    }
    env.pop("CLOUDPHONE_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cloudphone.cli", "serve", "--development"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _poll(fetch: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            if fetch():
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


@pytest.mark.integration
def test_kill_9_loses_nothing_and_restart_resumes_the_registration(
    tmp_path: Path, kamailio: KamailioInstance
) -> None:
    sip_port, http_port = free_port(), free_port(udp_too=False)
    base = f"http://127.0.0.1:{http_port}"
    env = {**os.environ, "CLOUDPHONE_DATA_DIR": str(tmp_path / "data")}
    env.pop("CLOUDPHONE_DATABASE_URL", None)
    token = json.loads(
        subprocess.run(
            [sys.executable, "-m", "cloudphone.cli", "token", "create"],
            env=env,
            cwd=tmp_path,
            check=True,
            capture_output=True,
        ).stdout
    )["token"]
    root = {"Authorization": f"Bearer {token}"}
    server = _serve(tmp_path, sip_port, http_port)
    try:
        _poll(lambda: httpx.get(f"{base}/healthz").status_code == 200)
        tenant = httpx.post(
            f"{base}/v1/tenants",
            headers=root,
            json={
                "name": "sip",
                "sip_domains": ["sip.test"],
                "registrar_hosts": ["127.0.0.1"],
            },
        ).json()["id"]
        account = httpx.post(
            f"{base}/v1/tenants/{tenant}/accounts",
            headers=root,
            json={"address_of_record": "sip:alice@sip.test"},
        ).json()["id"]
        device = httpx.post(
            f"{base}/v1/accounts/{account}/devices",
            headers=root,
            json={"platform": "android", "app_id": "com.example.phone"},
        ).json()
        dev = {"Authorization": f"Bearer {device['credential']}"}
        r = httpx.put(f"{base}/v1/device/push-instance", headers=dev, json=_hand_over(kamailio))
        assert r.status_code == 201, r.text

        def registered() -> bool:
            r = httpx.get(f"{base}/v1/device/push-instance", headers=dev)
            return bool(r.json()["state"] == "registered")

        _poll(registered)
        before = kamailio.kamcmd("ul.lookup", "location", "alice")
        assert f"127.0.0.1:{sip_port}" in before

        server.send_signal(signal.SIGKILL)
        server.wait(10)
        server = _serve(tmp_path, sip_port, http_port)
        _poll(lambda: httpx.get(f"{base}/healthz").status_code == 200)

        def re_registered() -> bool:
            after = kamailio.kamcmd("ul.lookup", "location", "alice")
            return _call_id(after) not in (None, _call_id(before))

        _poll(re_registered)
        after = kamailio.kamcmd("ul.lookup", "location", "alice")
        assert after.count("Contact: {") == 1  # same contact replaced, not a second binding
        assert registered()

        assert httpx.delete(f"{base}/v1/device/push-instance", headers=dev).status_code == 204
        assert f"127.0.0.1:{sip_port}" not in kamailio.kamcmd("ul.lookup", "location", "alice")
    finally:
        server.terminate()
        server.wait(10)


def _call_id(ul_lookup: str) -> str | None:
    for line in ul_lookup.splitlines():
        if line.strip().startswith("Call-ID:"):
            return line.split(":", 1)[1].strip()
    return None

"""The registration engine against a real provider: Kamailio with digest users, over UDP, TCP
and TLS. The gateway's binding must appear in Kamailio's location table and disappear on
unregister; a wrong password must fail cleanly without a challenge loop."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudphone.core.clock import SystemClock
from cloudphone.gateway.engine import EngineTuning, RegistrationEngine
from cloudphone.gateway.upstream import RegistrationTarget
from cloudphone.sipnet import client_ssl_context
from cloudphone.testing.kamailio import KamailioInstance, run_kamailio
from cloudphone.testing.peers import require_binary
from cloudphone.testing.tls import TestCertificates

PEERS = Path(__file__).resolve().parents[1] / "peers"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return TestCertificates(tmp_path_factory.mktemp("gw-tls"))


@pytest.fixture(scope="module")
def kamailio(
    tmp_path_factory: pytest.TempPathFactory, certificates: TestCertificates
) -> Iterator[KamailioInstance]:
    with run_kamailio(
        tmp_path_factory.mktemp("gw-kamailio"),
        binary=require_binary("kamailio"),
        config=PEERS / "kamailio" / "kamailio.cfg",
        dbtext=PEERS / "kamailio" / "dbtext",
        certificate=(certificates.server_cert_file, certificates.server_key_file),
    ) as instance:
        yield instance


class StateLog:
    def __init__(self) -> None:
        self.states: dict[str, tuple[bool, int | None, int | None]] = {}
        self.changed = asyncio.Event()

    async def registration_states(
        self, states: dict[str, tuple[bool, int | None, int | None]]
    ) -> None:
        self.states.update(states)
        self.changed.set()


def target(
    kam: KamailioInstance, transport: str, user: str = "alice", **kw: str
) -> RegistrationTarget:
    password = kw.get("password", kam.users[user])
    return RegistrationTarget(
        instance_id=f"inst-{user}-{transport}",
        contact_key=f"ck{user}{transport}0123456789abcdef"[:32],
        address_of_record=f"sip:{user}@sip.test",
        registrar=f"127.0.0.1:{kam.port_for(transport)}",
        outbound_proxy=None,
        transport=transport,
        expiry=120,
        auth_username=bytearray(user.encode()),
        password=bytearray(password.encode()),
    )


def engine(certificates: TestCertificates, sink: StateLog) -> RegistrationEngine:
    tls: ssl.SSLContext = client_ssl_context(cafile=str(certificates.ca_file))
    return RegistrationEngine(
        clock=SystemClock(),
        sink=sink,
        tls_context=tls,
        tuning=EngineTuning(state_flush_interval_s=0.01, backoff_base_s=30.0),
    )


async def _until(predicate: object, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


@pytest.mark.integration
@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_register_appears_in_location_and_unregister_removes_it(
    kamailio: KamailioInstance, certificates: TestCertificates, transport: str
) -> None:
    sink = StateLog()
    eng = engine(certificates, sink)
    t = target(kamailio, transport)
    try:
        await eng.register(t)
        await _until(lambda: eng.is_registered(t.instance_id))
        await _until(lambda: t.instance_id in sink.states)
        registered, status, expires = sink.states[t.instance_id]
        assert registered and status == 200 and expires and 0 < expires <= 120
        location = kamailio.kamcmd("ul.lookup", "location", "alice")
        assert t.contact_key in location, location
        assert eng.instance_for_contact(t.contact_key) == t.instance_id

        await eng.unregister(t.instance_id)
        assert t.contact_key not in kamailio.kamcmd("ul.lookup", "location", "alice")
        assert bytes(t.password) == b"" and bytes(t.auth_username) == b""  # wiped (P4)
        assert eng.instance_for_contact(t.contact_key) is None
    finally:
        await eng.close()


@pytest.mark.integration
async def test_wrong_password_fails_once_without_a_challenge_loop(
    kamailio: KamailioInstance, certificates: TestCertificates
) -> None:
    sink = StateLog()
    eng = engine(certificates, sink)
    t = target(kamailio, "udp", user="bob", password="not-bobs-password")
    try:
        await eng.register(t)
        await _until(lambda: t.instance_id in sink.states)
        registered, status, _ = sink.states[t.instance_id]
        assert not registered and status in (401, 403)
        await asyncio.sleep(0.3)
        assert not eng.is_registered(t.instance_id)
        assert t.contact_key not in kamailio.kamcmd("ul.lookup", "location", "bob")
    finally:
        await eng.close()


@pytest.mark.integration
async def test_refresh_keeps_the_binding_and_call_id(
    kamailio: KamailioInstance, certificates: TestCertificates
) -> None:
    """With a short grant the engine refreshes before the binding lapses, on the same Call-ID
    with a growing CSeq (RFC 3261 §10.2.4)."""
    sink = StateLog()
    eng = RegistrationEngine(
        clock=SystemClock(),
        sink=sink,
        tuning=EngineTuning(refresh_fraction=(0.01, 0.02), state_flush_interval_s=0.01),
    )
    t = target(kamailio, "tcp", user="carol")
    try:
        await eng.register(t)
        await _until(lambda: eng.is_registered(t.instance_id))
        binding = eng._bindings[t.instance_id]
        call_id, first_cseq = binding.call_id, binding.cseq
        await _until(lambda: binding.cseq >= first_cseq + 2, within=8)
        assert binding.call_id == call_id
        assert eng.is_registered(t.instance_id)
        assert t.contact_key in kamailio.kamcmd("ul.lookup", "location", "carol")
    finally:
        await eng.unregister(t.instance_id)
        await eng.close()

"""The asyncio registration runner against an in-process registrar built on DigestServer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from cloudphone.sip import SipURI, parse_uri
from cloudphone.sip.digest import AuthOutcome, Credentials, DigestServer
from cloudphone.sip.registration import (
    Registered,
    RegistrationClient,
    RegistrationConfig,
    RegistrationFailed,
    Unregistered,
)
from cloudphone.sip.transaction import Timers
from cloudphone.sipnet import Endpoint, IncomingRequest, RegistrationRunner, Target


def uri(text: str) -> SipURI:
    u = parse_uri(text)
    assert isinstance(u, SipURI)
    return u


class Registrar:
    """Digest-protected registrar keeping bindings in a dict; asks for Min-Expires 120."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.digest = DigestServer("sip.test", b"registrar-test-key-0123456789abcdef")
        self.bindings: dict[str, int] = {}
        self.requests = 0
        endpoint.on_request = self.handle

    def handle(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        self.requests += 1
        result = self.digest.verify(request, self.endpoint.now(), {"alice": "pw"}.get)
        if not result.ok:
            stale = result.outcome is AuthOutcome.STALE
            incoming.respond(
                401, headers=self.digest.challenge_headers(self.endpoint.now(), stale=stale)
            )
            return
        expires = request.headers.delta_seconds("expires") or 0
        contact = request.headers.get("contact") or ""
        if 0 < expires < 120:
            incoming.respond(423, headers=[("Min-Expires", "120")])
            return
        if expires == 0:
            self.bindings.pop(contact, None)
            incoming.respond(200)
            return
        self.bindings[contact] = expires
        incoming.respond(200, headers=[("Contact", f"{contact};expires={expires}")])


@pytest.fixture
async def registrar() -> AsyncIterator[tuple[Registrar, Target]]:
    endpoint = Endpoint()
    host, port = await endpoint.listen("UDP")
    yield Registrar(endpoint), Target("UDP", host, port)
    await endpoint.close()


async def test_challenge_423_refresh_and_unregister(registrar: tuple[Registrar, Target]) -> None:
    server, target = registrar
    endpoint = Endpoint()
    await endpoint.listen("UDP")
    config = RegistrationConfig(
        aor=uri("sip:alice@sip.test"),
        registrar=uri("sip:sip.test"),
        contact=endpoint.contact_uri("UDP", "alice"),
        credentials=Credentials("alice", "pw"),
        expires=60,  # below the registrar's minimum: expect 423 and a retry with 120
        refresh_window=(0.005, 0.005),  # refresh after 0.6 s
    )
    runner = RegistrationRunner(
        endpoint, RegistrationClient(config, random=lambda: 0.5), target=target
    )
    try:
        first = await runner.start()
        assert isinstance(first, Registered) and first.expires == 120
        assert list(server.bindings.values()) == [120]
        assert await runner.events.get() == first
        refreshed = await asyncio.wait_for(runner.events.get(), 5)
        assert isinstance(refreshed, Registered)
        assert isinstance(await runner.stop(), Unregistered)
        assert server.bindings == {}
    finally:
        await endpoint.close()


async def test_unreachable_registrar_schedules_a_backoff_retry() -> None:
    endpoint = Endpoint(timers=Timers(t1=0.005, t2=0.02, t4=0.02))
    await endpoint.listen("UDP")
    silent, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = silent.get_extra_info("sockname")[1]
    config = RegistrationConfig(
        aor=uri("sip:alice@sip.test"),
        registrar=uri("sip:sip.test"),
        contact=endpoint.contact_uri("UDP", "alice"),
        retry_base=0.2,
        retry_max=1.0,
    )
    runner = RegistrationRunner(
        endpoint,
        RegistrationClient(config, random=lambda: 1.0),
        target=Target("UDP", "127.0.0.1", port),
    )
    try:
        outcome = await runner.start()
        assert isinstance(outcome, RegistrationFailed) and outcome.status_code == 408
        assert outcome.retry_at is not None
        assert outcome.retry_at - endpoint.now() <= 0.2
        await runner.events.get()
        retried = await asyncio.wait_for(runner.events.get(), 5)  # the retry fails as well
        assert isinstance(retried, RegistrationFailed) and runner.client.failures == 2
        await runner.stop(unregister=False)
    finally:
        silent.close()
        await endpoint.close()


async def test_lost_tcp_flow_triggers_an_immediate_new_registration() -> None:
    """RFC 5626 §4.4.1: when the registration's connection dies, register again at once."""
    registrar_endpoint = Endpoint()
    host, port = await registrar_endpoint.listen("TCP")
    server = Registrar(registrar_endpoint)
    endpoint = Endpoint()
    await endpoint.listen("TCP")
    config = RegistrationConfig(
        aor=uri("sip:alice@sip.test"),
        registrar=uri("sip:sip.test"),
        contact=endpoint.contact_uri("TCP", "alice"),
        credentials=Credentials("alice", "pw"),
        expires=3600,
    )
    runner = RegistrationRunner(
        endpoint,
        RegistrationClient(config, random=lambda: 0.5),
        target=Target("TCP", host, port),
        keep_alive=30.0,
    )
    try:
        first = await runner.start()
        assert isinstance(first, Registered)
        await runner.events.get()
        before = server.requests
        registrar_endpoint.flows.close_all()  # the registrar drops the connection
        again = await asyncio.wait_for(runner.events.get(), 5)
        assert isinstance(again, Registered)
        assert server.requests > before
        assert runner.client.cseq > 2  # same binding, next CSeq (§10.2.4)
        assert isinstance(await runner.stop(), Unregistered)
    finally:
        await endpoint.close()
        await registrar_endpoint.close()

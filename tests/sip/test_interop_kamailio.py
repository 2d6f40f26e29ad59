"""Interop with a real Kamailio (and SIPp) on 127.0.0.1 over UDP, TCP and TLS.

Kamailio is the registrar/proxy with digest users (tests/peers/kamailio); SIPp plays the
other party of calls (tests/peers/sipp).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest

from cloudphone.sip import Request, SipURI, parse_uri
from cloudphone.sip.dialog import Dialog
from cloudphone.sip.digest import Credentials, DigestClient
from cloudphone.sip.registration import (
    Registered,
    RegistrationClient,
    RegistrationConfig,
    Unregistered,
)
from cloudphone.sipnet import Endpoint, IncomingRequest, RegistrationRunner, Target
from cloudphone.sipnet.transport import StreamFlow
from cloudphone.testing.kamailio import KamailioInstance, free_port
from cloudphone.testing.sipp import Sipp

pytestmark = pytest.mark.integration

# A 2xx retransmitted before our ACK arrived is answered with the ACK again (§13.2.2.4); a
# scripted SIPp UAS would abort on that second ACK: -nd makes it ignore unexpected messages.
TOLERATE_RETRANSMISSIONS = ["-nd"]

TRANSPORTS = ["UDP", "TCP", "TLS"]


def sip_uri(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


@pytest.fixture
async def endpoint(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> AsyncIterator[Endpoint]:
    ep = Endpoint(tls_client=client_tls)
    yield ep
    await ep.close()


def kamailio_target(kamailio: KamailioInstance, transport: str) -> Target:
    # the test certificate names 127.0.0.1 and localhost: verification stays on
    return Target(transport, kamailio.host, kamailio.port_for(transport), "localhost")


def registration(
    endpoint: Endpoint,
    kamailio: KamailioInstance,
    transport: str,
    *,
    user: str = "alice",
    contact: SipURI | None = None,
    expires: int = 60,
    refresh_window: tuple[float, float] = (0.5, 0.8),
) -> RegistrationRunner:
    config = RegistrationConfig(
        aor=sip_uri(f"sip:{user}@{kamailio.domain}"),
        registrar=sip_uri(f"sip:{kamailio.domain}"),
        contact=contact or endpoint.contact_uri(transport, user),
        credentials=Credentials(user, kamailio.users[user]),
        expires=expires,
        refresh_window=refresh_window,
    )
    client = RegistrationClient(config, random=lambda: 0.5)
    return RegistrationRunner(endpoint, client, target=kamailio_target(kamailio, transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_register_refresh_unregister(
    kamailio: KamailioInstance, endpoint: Endpoint, server_tls: ssl.SSLContext, transport: str
) -> None:
    await endpoint.listen(transport, ssl_context=server_tls)
    # refresh after 2 % of the 60 s Kamailio grants: about 1.2 s
    runner = registration(endpoint, kamailio, transport, refresh_window=(0.02, 0.02))
    first = await runner.start()
    assert isinstance(first, Registered), first
    assert first.expires == 60
    contact = str(endpoint.contact_uri(transport, "alice"))
    assert contact.split("@")[1] in kamailio.kamcmd("ul.lookup", "location", "alice")
    assert await runner.events.get() == first

    if transport != "UDP":
        # RFC 5626 §4.4.1: Kamailio answers our CRLFCRLF ping on the registration's flow
        target = kamailio_target(kamailio, transport)
        flow = endpoint.flows.get((transport, target.host, target.port))
        assert isinstance(flow, StreamFlow)
        flow.ping()
        for _ in range(50):
            if flow.pongs:
                break
            await asyncio.sleep(0.02)
        assert flow.pongs == 1

    refreshed = await asyncio.wait_for(runner.events.get(), 10)
    assert isinstance(refreshed, Registered) and refreshed.expires == 60
    assert runner.client.cseq >= 3  # same Call-ID, CSeq went on (1-2 first, 3+ refresh)

    gone = await runner.stop()
    assert isinstance(gone, Unregistered)
    assert contact.split("@")[1] not in kamailio.kamcmd("ul.lookup", "location", "alice")


async def test_wrong_password_is_reported_not_retried_at_once(
    kamailio: KamailioInstance, endpoint: Endpoint
) -> None:
    await endpoint.listen("UDP")
    config = RegistrationConfig(
        aor=sip_uri(f"sip:carol@{kamailio.domain}"),
        registrar=sip_uri(f"sip:{kamailio.domain}"),
        contact=endpoint.contact_uri("UDP", "carol"),
        credentials=Credentials("carol", "not-carols-password"),
    )
    runner = RegistrationRunner(
        endpoint,
        RegistrationClient(config, random=lambda: 0.0),
        target=kamailio_target(kamailio, "UDP"),
    )
    outcome = await runner.start()
    assert not isinstance(outcome, Registered)
    assert getattr(outcome, "status_code", None) in (401, 403)
    await runner.stop(unregister=False)


def answer_calls(endpoint: Endpoint, transport: str, seen: list[str]) -> None:
    contact = endpoint.contact_uri(transport, "bob")

    def uas(incoming: IncomingRequest) -> None:
        method = incoming.request.method
        seen.append(method)
        if method == "INVITE":
            incoming.respond(180, headers=[("Contact", f"<{contact}>")])
            incoming.respond(
                200,
                headers=[("Contact", f"<{contact}>"), ("Content-Type", "application/sdp")],
                body=b"v=0\r\no=bob 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                b"t=0 0\r\nm=audio 40000 RTP/AVP 0\r\n",
            )
        elif method in ("BYE", "OPTIONS"):
            incoming.respond(200)

    endpoint.on_request = uas


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cloudphone_as_uas_for_a_sipp_caller(
    kamailio: KamailioInstance,
    endpoint: Endpoint,
    server_tls: ssl.SSLContext,
    sipp: Sipp,
    transport: str,
) -> None:
    """SIPp (UDP) → Kamailio → cloudphone registered as bob over ``transport``."""
    await endpoint.listen(transport, ssl_context=server_tls)
    seen: list[str] = []
    answer_calls(endpoint, transport, seen)
    runner = registration(endpoint, kamailio, transport, user="bob")
    assert isinstance(await runner.start(), Registered)
    caller = sipp.start(
        "uac_call.xml",
        remote=(kamailio.host, kamailio.port),
        local_port=free_port(),
        service="bob",
        injection=["alice;[authentication username=alice password=alice-secret];sip.test"],
        extra=["-d", "100"],
    )
    code = await asyncio.to_thread(caller.wait, 30)
    await runner.stop()
    assert code == 0, caller.diagnostics() + kamailio.log_tail()
    assert seen[:1] == ["INVITE"] and "ACK" in seen and "BYE" in seen


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cloudphone_as_uac_towards_a_sipp_uas(
    kamailio: KamailioInstance,
    endpoint: Endpoint,
    server_tls: ssl.SSLContext,
    sipp: Sipp,
    transport: str,
) -> None:
    """cloudphone → Kamailio over ``transport`` → SIPp UAS (UDP), following Record-Route."""
    await endpoint.listen(transport, ssl_context=server_tls)
    uas_port = free_port()
    callee = sipp.start("uas_call_fast.xml", local_port=uas_port, extra=TOLERATE_RETRANSMISSIONS)
    sipp.wait_listening(uas_port)
    # bind bob's AOR to the SIPp UAS (a third-party registration, allowed with bob's credentials)
    runner = registration(
        endpoint, kamailio, transport, user="bob", contact=sip_uri(f"sip:bob@127.0.0.1:{uas_port}")
    )
    assert isinstance(await runner.start(), Registered)

    invite = Request(
        "INVITE",
        f"sip:bob@{kamailio.domain}",
        [
            ("Route", f"<{_kamailio_route(kamailio, transport)}>"),
            ("From", f"<sip:alice@{kamailio.domain}>;tag=cp-uac"),
            ("To", f"<sip:bob@{kamailio.domain}>"),
            ("Call-ID", f"uac-{transport}-{uas_port}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{endpoint.contact_uri(transport, 'alice')}>"),
            ("Content-Type", "application/sdp"),
        ],
        body=b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 40002 RTP/AVP 0\r\n",
    )
    ok = await endpoint.request(invite, kamailio_target(kamailio, transport))
    assert ok.status_code == 200, ok
    dialog = Dialog.from_uac_response(invite, ok)
    assert dialog.route_set, "Kamailio record-routes INVITEs"
    await endpoint.send_stateless(dialog.ack(invite.cseq.seq))
    await asyncio.sleep(0.1)
    bye = await endpoint.request(dialog.request("BYE"))
    assert bye.status_code == 200
    code = await asyncio.to_thread(callee.wait, 15)
    await runner.stop()
    assert code == 0, callee.diagnostics() + kamailio.log_tail()


def _kamailio_route(kamailio: KamailioInstance, transport: str) -> str:
    params = "" if transport == "UDP" else f";transport={transport.lower()}"
    return f"sip:{kamailio.host}:{kamailio.port_for(transport)}{params};lr"


async def test_uac_answers_a_407_proxy_challenge(
    kamailio_callauth: KamailioInstance, endpoint: Endpoint, sipp: Sipp
) -> None:
    """INVITE → 407 (the transaction ACKs it) → INVITE with Proxy-Authorization → 200."""
    kamailio = kamailio_callauth
    await endpoint.listen("UDP")
    uas_port = free_port()
    callee = sipp.start("uas_call_fast.xml", local_port=uas_port, extra=TOLERATE_RETRANSMISSIONS)
    sipp.wait_listening(uas_port)
    runner = registration(
        endpoint, kamailio, "UDP", user="bob", contact=sip_uri(f"sip:bob@127.0.0.1:{uas_port}")
    )
    assert isinstance(await runner.start(), Registered)
    target = kamailio_target(kamailio, "UDP")

    def invite(seq: int) -> Request:
        return Request(
            "INVITE",
            f"sip:bob@{kamailio.domain}",
            [
                ("From", f"<sip:alice@{kamailio.domain}>;tag=cp-auth"),
                ("To", f"<sip:bob@{kamailio.domain}>"),
                ("Call-ID", f"auth-{uas_port}"),
                ("CSeq", f"{seq} INVITE"),
                ("Contact", f"<{endpoint.contact_uri('UDP', 'alice')}>"),
            ],
        )

    first = invite(1)
    challenge = await endpoint.request(first, target)
    assert challenge.status_code == 407
    second = invite(2)
    digest = DigestClient(Credentials("alice", kamailio.users["alice"]))
    assert digest.authorize(second, challenge)
    assert "proxy-authorization" in second.headers
    ok = await endpoint.request(second, target)
    assert ok.status_code == 200, ok
    dialog = Dialog.from_uac_response(second, ok)
    await endpoint.send_stateless(dialog.ack(second.cseq.seq))
    bye = await endpoint.request(dialog.request("BYE"))
    assert bye.status_code == 200
    code = await asyncio.to_thread(callee.wait, 15)
    await runner.stop()
    assert code == 0, callee.diagnostics() + kamailio.log_tail()

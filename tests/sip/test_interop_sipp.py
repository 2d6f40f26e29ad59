"""Interop with SIPp alone: the stateful proxy (§16 blocks) in the middle of a SIPp call, and
our DigestServer against SIPp's digest client."""

from __future__ import annotations

import asyncio

import pytest

from cloudphone.sip import Request, SipURI, parse_uri
from cloudphone.sip.digest import DigestServer
from cloudphone.sip.uri import URI
from cloudphone.sipnet import Endpoint, IncomingRequest
from cloudphone.sipnet.proxy import StatefulProxy
from cloudphone.testing.kamailio import free_port
from cloudphone.testing.sipp import Sipp

pytestmark = pytest.mark.integration

# A 2xx retransmitted before our ACK arrived is answered with the ACK again (§13.2.2.4); a
# scripted SIPp UAS would abort on that second ACK: -nd makes it ignore unexpected messages.
TOLERATE_RETRANSMISSIONS = ["-nd"]


@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_sipp_call_through_the_proxy(sipp: Sipp, transport: str) -> None:
    uas_port = free_port()
    callee = sipp.start(
        "uas_call_fast.xml",
        local_port=uas_port,
        transport=transport,
        extra=TOLERATE_RETRANSMISSIONS,
    )
    sipp.wait_listening(uas_port, transport)
    endpoint = Endpoint()
    host, port = await endpoint.listen(transport)
    suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
    forwarded: list[str] = []

    def locate(request: Request) -> URI | None:
        forwarded.append(request.method)
        uri = request.uri
        if isinstance(uri, SipURI) and uri.user == "bob":
            return parse_uri(f"sip:bob@127.0.0.1:{uas_port}{suffix}")
        return None

    StatefulProxy(endpoint, transport, locate)
    through: list[str] = []
    proxy_handler = endpoint.on_request
    assert proxy_handler is not None

    def spy(incoming: IncomingRequest) -> None:
        through.append(incoming.request.method)
        proxy_handler(incoming)

    endpoint.on_request = spy
    try:
        caller = sipp.start(
            "uac_call.xml",
            remote=(host, port),
            local_port=free_port(),
            transport=transport,
            service="bob",
            injection=["alice;[authentication username=alice password=alice-secret];sip.test"],
            extra=["-d", "100"],
        )
        caller_code = await asyncio.to_thread(caller.wait, 30)
        callee_code = await asyncio.to_thread(callee.wait, 10)
    finally:
        await endpoint.close()
    assert caller_code == 0, caller.diagnostics()
    assert callee_code == 0, callee.diagnostics()
    assert forwarded[0] == "INVITE"  # located; ACK and BYE came back via the Record-Route
    assert through == ["INVITE", "ACK", "BYE"]


async def test_digest_server_accepts_sipp_credentials(sipp: Sipp) -> None:
    """SIPp's digest client (MD5, qop=auth) against our stateless-nonce DigestServer."""
    endpoint = Endpoint()
    host, port = await endpoint.listen("UDP")
    digest = DigestServer("sip.test", b"sipp-interop-key-0123456789abcdef", algorithms=("MD5",))
    outcomes: list[str] = []

    def registrar(incoming: IncomingRequest) -> None:
        result = digest.verify(incoming.request, endpoint.now(), {"alice": "alice-secret"}.get)
        outcomes.append(result.outcome.value)
        if result.ok:
            contact = incoming.request.headers.get("contact") or ""
            incoming.respond(200, headers=[("Contact", f"{contact};expires=60")])
        else:
            incoming.respond(401, headers=digest.challenge_headers(endpoint.now()))

    endpoint.on_request = registrar
    try:
        run = sipp.start(
            "reg_auth.xml",
            remote=(host, port),
            local_port=free_port(),
            injection=[
                "alice;[authentication username=alice password=alice-secret];sip.test;"
                "127.0.0.1:5999;60"
            ],
        )
        code = await asyncio.to_thread(run.wait, 20)
    finally:
        await endpoint.close()
    assert code == 0, run.diagnostics()
    assert outcomes == ["missing", "ok"]

"""The stateful proxy in-process: UAC endpoint → proxy → UAS endpoint on UDP loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cloudphone.sip import Request, SipURI, parse_uri
from cloudphone.sip.uri import URI
from cloudphone.sipnet import Endpoint, IncomingRequest, Target
from cloudphone.sipnet.proxy import StatefulProxy


@dataclass
class Net:
    uac: Endpoint
    proxy: Endpoint
    uas: Endpoint
    proxy_target: Target
    uas_requests: list[IncomingRequest]


@pytest.fixture
async def net(
    request: pytest.FixtureRequest, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> AsyncIterator[Net]:
    transport: str = getattr(request, "param", "UDP")
    uac, proxy, uas = (Endpoint(tls_client=client_tls) for _ in range(3))
    await uac.listen(transport, ssl_context=server_tls)
    p_host, p_port = await proxy.listen(transport, ssl_context=server_tls)
    u_host, u_port = await uas.listen(transport, ssl_context=server_tls)
    suffix = "" if transport == "UDP" else f";transport={transport.lower()}"
    seen: list[IncomingRequest] = []
    uas.on_request = seen.append  # the UAS only records; tests answer as they need

    def locate(request: Request) -> URI | None:
        uri = request.uri
        if isinstance(uri, SipURI) and uri.user == "bob":
            return parse_uri(f"sip:bob@{u_host}:{u_port}{suffix}")
        if isinstance(uri, SipURI) and uri.user == "loop":
            return parse_uri(f"sip:loop@{p_host}:{p_port}{suffix}")  # back at the proxy
        return None

    StatefulProxy(proxy, transport, locate)
    yield Net(uac, proxy, uas, Target(transport, p_host, p_port), seen)
    for ep in (uac, proxy, uas):
        await ep.close()


def invite(user: str, call_id: str, max_forwards: int = 70) -> Request:
    return Request(
        "INVITE",
        f"sip:{user}@sip.test",
        [
            ("Max-Forwards", str(max_forwards)),
            ("From", "<sip:alice@sip.test>;tag=a"),
            ("To", f"<sip:{user}@sip.test>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", "<sip:alice@127.0.0.1>"),
        ],
    )


async def wait_for_request(net: Net, method: str) -> IncomingRequest:
    for _ in range(100):
        for incoming in net.uas_requests:
            if incoming.request.method == method:
                return incoming
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {method} reached the UAS")


@pytest.mark.parametrize("net", ["UDP", "TCP", "TLS"], indirect=True)
async def test_responses_are_relayed_and_record_route_added(net: Net) -> None:
    call = asyncio.ensure_future(net.uac.request(invite("bob", "rr"), net.proxy_target))
    arrived = await wait_for_request(net, "INVITE")
    assert arrived.request.max_forwards == 69
    assert arrived.request.headers.get_all("record-route")[0].endswith(";lr>")
    assert len(arrived.request.headers.vias()) == 2  # the proxy's Via on top of the UAC's
    arrived.respond(486)
    response = await call
    assert response.status_code == 486
    assert len(response.headers.vias()) == 1  # the proxy popped its own Via (§16.7)
    assert arrived.flow.transport == net.proxy_target.transport


async def test_cancel_is_forwarded_and_487_relayed(net: Net) -> None:
    request = invite("bob", "cancel-through")
    call = asyncio.ensure_future(net.uac.request(request, net.proxy_target))
    await wait_for_request(net, "INVITE")
    cancel = Request(
        "CANCEL",
        request.uri,
        [
            ("From", request.headers.get("from") or ""),
            ("To", request.headers.get("to") or ""),
            ("Call-ID", request.call_id),
            ("CSeq", "1 CANCEL"),
        ],
    )
    answer = await net.uac.request(cancel, net.proxy_target, branch=request.via.branch)
    assert answer.status_code == 200
    assert (await asyncio.wait_for(call, 5)).status_code == 487  # produced by the UAS endpoint


async def test_max_forwards_exhausted_gives_483(net: Net) -> None:
    response = await net.uac.request(invite("bob", "hops", max_forwards=0), net.proxy_target)
    assert response.status_code == 483
    assert net.uas_requests == []


async def test_request_looping_back_to_the_proxy_gets_482(net: Net) -> None:
    response = await asyncio.wait_for(
        net.uac.request(invite("loop", "loop-call"), net.proxy_target), 10
    )
    assert response.status_code == 482


async def test_unknown_user_of_ours_gets_404(net: Net) -> None:
    host, port = net.proxy_target.host, net.proxy_target.port
    request = invite("nobody", "unknown")
    request.uri = parse_uri(f"sip:{host}:{port}")
    response = await net.uac.request(request, net.proxy_target)
    assert response.status_code == 404

"""The asyncio layer in-process: two endpoints over UDP, TCP and TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from cloudphone.sip import Request, SipURI, parse_uri
from cloudphone.sip.dialog import Dialog
from cloudphone.sip.transaction import Timers
from cloudphone.sipnet import Endpoint, IncomingRequest, Resolver, Target, TransactionFailed
from cloudphone.sipnet.scheduler import Scheduler
from cloudphone.testing.kamailio import free_port

TRANSPORTS = ["UDP", "TCP", "TLS"]


def options(target: str) -> Request:
    return Request(
        "OPTIONS",
        target,
        [
            ("From", "<sip:a@127.0.0.1>;tag=fa"),
            ("To", f"<{target}>"),
            ("Call-ID", f"opt-{id(target)}"),
            ("CSeq", "1 OPTIONS"),
        ],
    )


@pytest.fixture
async def pair(
    request: pytest.FixtureRequest, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> AsyncIterator[tuple[Endpoint, Endpoint, Target]]:
    transport: str = request.param
    server = Endpoint(tls_client=client_tls)
    client = Endpoint(tls_client=client_tls)
    host, port = await server.listen(transport, ssl_context=server_tls)
    await client.listen(transport, ssl_context=server_tls)
    yield server, client, Target(transport, host, port, "localhost")
    await client.close()
    await server.close()


@pytest.mark.parametrize("pair", TRANSPORTS, indirect=True)
async def test_options_round_trip_and_flow_reuse(pair: tuple[Endpoint, Endpoint, Target]) -> None:
    server, client, target = pair
    seen: list[IncomingRequest] = []

    def answer(incoming: IncomingRequest) -> None:
        seen.append(incoming)
        incoming.respond(200, headers=[("Allow", "INVITE, ACK, OPTIONS")])

    server.on_request = answer
    first = await client.request(options(f"sip:{target.host}:{target.port}"), target)
    assert first.status_code == 200 and first.headers.get("allow")
    second = await client.request(options(f"sip:{target.host}:{target.port}"), target)
    assert second.status_code == 200
    assert seen[0].request.via.params.get("received") in (None, "127.0.0.1")
    if target.transport != "UDP":
        # RFC 5626: the second request reused the connection of the first
        assert seen[0].flow is seen[1].flow
        assert len(client.flows) == 1


@pytest.mark.parametrize("pair", TRANSPORTS, indirect=True)
async def test_invite_answer_ack_bye(pair: tuple[Endpoint, Endpoint, Target]) -> None:
    server, client, target = pair
    events: list[str] = []
    contact = server.contact_uri(target.transport, user="bob")

    def uas(incoming: IncomingRequest) -> None:
        method = incoming.request.method
        events.append(method)
        if method == "INVITE":
            incoming.respond(180)
            incoming.respond(200, headers=[("Contact", f"<{contact}>")], body=b"v=0\r\n")
        elif method == "BYE":
            incoming.respond(200)

    server.on_request = uas
    invite = Request(
        "INVITE",
        f"sip:bob@{target.host}:{target.port}",
        [
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", f"call-{target.transport}"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{client.contact_uri(target.transport, 'alice')}>"),
        ],
    )
    ringing: list[int] = []
    ok = await client.request(
        invite, target, on_provisional=lambda r: ringing.append(r.status_code)
    )
    assert ok.status_code == 200 and ok.body == b"v=0\r\n"
    assert 180 in ringing
    dialog = Dialog.from_uac_response(invite, ok)
    await client.send_stateless(dialog.ack(invite.cseq.seq), target)
    bye = await client.request(dialog.request("BYE"), target)
    assert bye.status_code == 200
    assert events == ["INVITE", "ACK", "BYE"]


@pytest.mark.parametrize("pair", ["UDP"], indirect=True)
async def test_cancel_gets_200_and_invite_487(pair: tuple[Endpoint, Endpoint, Target]) -> None:
    server, client, target = pair
    server.on_request = lambda incoming: None  # never answers the INVITE
    invite = Request(
        "INVITE",
        f"sip:bob@{target.host}:{target.port}",
        [
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", "cancel-me"),
            ("CSeq", "7 INVITE"),
        ],
    )
    pending = asyncio.ensure_future(client.request(invite, target))
    await asyncio.sleep(0.1)
    cancel = Request(
        "CANCEL",
        invite.uri,
        [
            ("Via", invite.headers.get("via") or ""),
            ("From", invite.headers.get("from") or ""),
            ("To", invite.headers.get("to") or ""),
            ("Call-ID", "cancel-me"),
            ("CSeq", "7 CANCEL"),
        ],
    )
    # §9.1: the CANCEL carries the INVITE's branch; the endpoint pushes its own Via with it
    branch = invite.via.branch
    cancel.headers.remove("via")
    cancel_response = await client.request(cancel, target, branch=branch)
    assert cancel_response.status_code == 200
    assert (await pending).status_code == 487


async def test_timeout_raises_408_with_fast_timers() -> None:
    client = Endpoint(timers=Timers(t1=0.01, t2=0.04, t4=0.05))
    silent = await asyncio.get_running_loop().create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    port = silent[0].get_extra_info("sockname")[1]
    try:
        with pytest.raises(TransactionFailed) as failure:
            await client.request(options(f"sip:127.0.0.1:{port}"), Target("UDP", "127.0.0.1", port))
        assert failure.value.status_code == 408
    finally:
        silent[0].close()
        await client.close()


async def test_tls_client_rejects_an_untrusted_certificate(server_tls: ssl.SSLContext) -> None:
    server = Endpoint()
    host, port = await server.listen("TLS", ssl_context=server_tls)
    client = Endpoint()  # default trust store: the test CA is unknown
    try:
        with pytest.raises(TransactionFailed) as failure:
            await client.request(
                options(f"sips:{host}:{port}"), Target("TLS", host, port, "localhost")
            )
        assert failure.value.status_code == 503
    finally:
        await client.close()
        await server.close()


async def test_tls_client_checks_the_host_name(
    server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    server = Endpoint()
    host, port = await server.listen("TLS", ssl_context=server_tls)
    client = Endpoint(tls_client=client_tls)
    try:
        with pytest.raises(TransactionFailed):
            await client.request(
                options(f"sips:{host}:{port}"), Target("TLS", host, port, "not-this-host.test")
            )
    finally:
        await client.close()
        await server.close()


async def test_malformed_udp_request_gets_400() -> None:
    server = Endpoint()
    host, port = await server.listen("UDP")
    loop = asyncio.get_running_loop()
    received: asyncio.Future[bytes] = loop.create_future()

    class Catch(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not received.done():
                received.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Catch, local_addr=("127.0.0.1", 0))
    local_port = transport.get_extra_info("sockname")[1]
    bad = (
        f"OPTIONS sip:x@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKbad;rport\r\n"
        "From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: bad\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 999\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    transport.sendto(bad, (host, port))
    try:
        answer = await asyncio.wait_for(received, 2)
        assert answer.startswith(b"SIP/2.0 400 ")
    finally:
        transport.close()
        await server.close()


async def test_scheduler_runs_callbacks_in_deadline_order() -> None:
    scheduler = Scheduler()
    now = scheduler.now()
    fired: list[str] = []
    done = asyncio.Event()
    scheduler.call_at(now + 0.05, lambda t: fired.append("late") or done.set())  # type: ignore[func-returns-value]
    scheduler.call_at(now + 0.01, lambda t: fired.append("early"))
    cancelled = scheduler.call_at(now + 0.02, lambda t: fired.append("cancelled"))
    cancelled.cancel()
    await asyncio.wait_for(done.wait(), 2)
    assert fired == ["early", "late"]


def test_contact_uri_names_the_transport() -> None:
    uri = parse_uri("sip:bob@127.0.0.1:5080;transport=tcp")
    assert isinstance(uri, SipURI) and uri.transport == "tcp"


async def test_tcp_keepalive_ping_gets_a_pong(server_tls: ssl.SSLContext) -> None:
    server = Endpoint()
    host, port = await server.listen("TCP")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"\r\n\r\n")  # RFC 5626 §4.4.1 ping
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
    finally:
        writer.close()
        await server.close()


async def test_tcp_message_without_content_length_closes_the_connection() -> None:
    server = Endpoint()
    host, port = await server.listen("TCP")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@y>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n"
        )
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed: framing is lost
    finally:
        writer.close()
        await server.close()


async def test_server_reaches_a_client_over_the_connection_it_came_in_on() -> None:
    """RFC 5626 flows: a client with no listener is reachable through its own connection."""
    server = Endpoint()
    host, port = await server.listen("TCP")
    client = Endpoint()  # never listens
    arrived: list[IncomingRequest] = []
    server.on_request = lambda incoming: (arrived.append(incoming), incoming.respond(200))[-1]

    def client_answers(incoming: IncomingRequest) -> None:
        incoming.respond(200, headers=[("X-Answered-By", "client")])

    client.on_request = client_answers
    try:
        await client.request(options(f"sip:{host}:{port}"), Target("TCP", host, port))
        flow = arrived[0].flow
        back = options(f"sip:client@{flow.remote[0]}:{flow.remote[1]}")
        response = await server.request(back, Target("TCP", *flow.remote))  # via the flow table
        assert response.headers.get("x-answered-by") == "client"
        assert len(client.flows) == 1 and len(server.flows) == 1  # no second connection
    finally:
        await client.close()
        await server.close()


async def test_keep_alive_counts_pongs_and_closes_a_silent_flow() -> None:
    server = Endpoint()
    host, port = await server.listen("TCP")
    client = Endpoint()
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # never answers
    silent_port = silent.sockets[0].getsockname()[1]
    try:
        live = await client.flow_to(Target("TCP", host, port))
        # generous timings: a loaded CI machine must not miss a loopback pong
        client.keep_alive(live, interval=0.2, timeout=0.15)
        dead = await client.flow_to(Target("TCP", "127.0.0.1", silent_port))
        client.keep_alive(dead, interval=0.2, timeout=0.15)
        await asyncio.sleep(0.9)
        assert live.pongs >= 3 and not live.closed  # type: ignore[attr-defined]
        assert dead.closed
    finally:
        silent.close()
        await client.close()
        await server.close()


async def test_concurrent_requests_share_one_new_connection() -> None:
    server = Endpoint()
    host, port = await server.listen("TCP")
    server.on_request = lambda incoming: incoming.respond(200)
    client = Endpoint()
    try:
        target = Target("TCP", host, port)
        first, second = await asyncio.gather(
            client.request(options(f"sip:a@{host}:{port}"), target),
            client.request(options(f"sip:b@{host}:{port}"), target),
        )
        assert first.status_code == second.status_code == 200
        assert len(server.flows) == 1  # one inbound connection, not two
    finally:
        await client.close()
        await server.close()


async def test_request_with_a_malformed_contact_gets_400() -> None:
    server = Endpoint()
    host, port = await server.listen("UDP")
    handled: list[IncomingRequest] = []
    server.on_request = handled.append
    client = Endpoint()
    try:
        bad = options(f"sip:{host}:{port}")
        bad.headers.add("Contact", "<sip:broken@>")  # only parsed on demand: validate() finds it
        response = await client.request(bad, Target("UDP", host, port))
        assert response.status_code == 400 and handled == []
    finally:
        await client.close()
        await server.close()


async def test_large_request_switches_from_udp_to_tcp() -> None:
    """§18.1.1: over 1300 bytes, a UDP request goes over TCP to the same address."""
    server = Endpoint()
    port = free_port()
    await server.listen("UDP", port=port)
    await server.listen("TCP", port=port)
    arrivals: list[str] = []

    def answer(incoming: IncomingRequest) -> None:
        arrivals.append(incoming.flow.transport)
        incoming.respond(200)

    server.on_request = answer
    client = Endpoint()
    try:
        target = Target("UDP", "127.0.0.1", port)
        small = options(f"sip:127.0.0.1:{port}")
        assert (await client.request(small, target)).status_code == 200
        large = options(f"sip:127.0.0.1:{port}")
        large.body = b"x" * 1500
        large.headers.add("Content-Type", "text/plain")
        assert (await client.request(large, target)).status_code == 200
        assert arrivals == ["UDP", "TCP"]
        assert large.via.transport == "TCP"  # the top Via names the transport used
    finally:
        await client.close()
        await server.close()


async def test_unreachable_first_target_is_skipped_for_the_next() -> None:
    """RFC 3263 §4.3: SRV gives two TCP targets; the first refuses connections."""
    server = Endpoint()
    _, port = await server.listen("TCP")
    server.on_request = lambda incoming: incoming.respond(200)
    dead_port = free_port()

    async def lookup(name: str, rdtype: str) -> list[object]:
        zone = {
            ("_sip._tcp.svc.test", "SRV"): [
                f"0 0 {dead_port} a.svc.test.",
                f"1 0 {port} b.svc.test.",
            ],
            ("a.svc.test", "A"): ["127.0.0.1"],
            ("b.svc.test", "A"): ["127.0.0.1"],
        }
        return [
            dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
            for text in zone.get((name, rdtype), [])
        ]

    client = Endpoint(resolver=Resolver(lookup))
    try:
        response = await client.request(options("sip:svc.test;transport=tcp"))
        assert response.status_code == 200
    finally:
        await client.close()
        await server.close()

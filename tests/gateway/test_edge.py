"""The app's SIP edge in-process: digest REGISTER binds the flow (UDP, TCP, TLS), a wrong
password does not, too brief an expiry gets 423, and nobody unregistered is relayed (P2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloudphone.core.clock import SystemClock
from cloudphone.gateway.calls import CallRelay
from cloudphone.gateway.edge import AppBinding, AppEdge, GatewayEndpoint
from cloudphone.gateway.engine import RegistrationEngine
from cloudphone.sip import Request, Response, parse_uri
from cloudphone.sip.digest import Credentials, DigestClient
from cloudphone.sipnet.endpoint import Endpoint, new_tag
from cloudphone.sipnet.resolver import Target
from cloudphone.testing.tls import TestCertificates

USER, PASSWORD = "pi-0123456789abcdef", "edge-Secret-9f3a"


class _Instances:
    """Stands in for PushInstanceService.edge_password."""

    def __init__(self) -> None:
        self.handed_out: list[bytearray] = []

    async def edge_password(self, username: str) -> tuple[str, bytearray] | None:
        if username != USER:
            return None
        secret = bytearray(PASSWORD.encode())
        self.handed_out.append(secret)
        return "instance-1", secret


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[AppEdge, _Instances, list[AppBinding]]]:
    certs = TestCertificates(tmp_path)
    endpoint = GatewayEndpoint()
    instances = _Instances()
    bound: list[AppBinding] = []
    app_edge = AppEdge(endpoint, instances, on_bound=bound.append)  # type: ignore[arg-type]
    endpoint.on_request = app_edge.register  # the call relay's dispatch, REGISTER only here
    await app_edge.listen("127.0.0.1", udp=0, tcp=0, tls=0, tls_context=certs.server_context())
    app_edge.test_client_tls = certs.client_context()  # type: ignore[attr-defined]
    yield app_edge, instances, bound
    await endpoint.close()


async def _register(
    edge: AppEdge, transport: str, password: str, expires: int = 300
) -> tuple[Response, Endpoint]:
    address = edge.endpoint.local_address(transport)
    assert address is not None
    client = Endpoint(tls_client=getattr(edge, "test_client_tls", None))
    target = Target(transport, address[0], address[1], server_name="localhost")
    tag, call_id = new_tag(), new_tag()

    def register(cseq: int) -> Request:
        return Request(
            "REGISTER",
            parse_uri("sip:sip.test"),
            [
                ("From", f"<sip:alice@sip.test>;tag={tag}"),
                ("To", "<sip:alice@sip.test>"),
                ("Call-ID", call_id),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:app@127.0.0.1:5999;transport={transport.lower()}>"),
                ("Expires", str(expires)),
            ],
        )

    first = await client.request(register(1), target)
    assert first.status_code == 401
    second = register(2)
    assert DigestClient(Credentials(USER, password)).authorize(second, first)
    return await client.request(second, target), client


@pytest.mark.parametrize("transport", ["UDP", "TCP", "TLS"])
async def test_digest_register_binds_the_flow_and_wipes_the_password(
    edge: tuple[AppEdge, _Instances, list[AppBinding]], transport: str
) -> None:
    app_edge, instances, bound = edge
    response, client = await _register(app_edge, transport, PASSWORD)
    try:
        assert response.status_code == 200
        assert "expires=300" in (response.headers.get("contact") or "")
        binding = app_edge.binding("instance-1")
        assert binding is not None and bound == [binding]
        assert binding.flow.transport == transport
        assert binding.contact.startswith("sip:app@127.0.0.1:5999")
        assert ";lr;cpgw" in app_edge.record_route(binding)
        # The password was used for the check and overwritten (P4: no copy kept).
        assert all(not any(secret) for secret in instances.handed_out)
    finally:
        await client.close()


async def test_wrong_password_binds_nothing(
    edge: tuple[AppEdge, _Instances, list[AppBinding]],
) -> None:
    app_edge, _, bound = edge
    response, client = await _register(app_edge, "UDP", "not-the-password")
    await client.close()
    assert response.status_code == 401
    assert app_edge.binding("instance-1") is None and bound == []


async def test_too_brief_then_unregister(
    edge: tuple[AppEdge, _Instances, list[AppBinding]],
) -> None:
    app_edge, _, _ = edge
    response, client = await _register(app_edge, "TCP", PASSWORD, expires=5)
    await client.close()
    assert response.status_code == 423
    assert response.headers.get("min-expires") == "60"
    response, client = await _register(app_edge, "TCP", PASSWORD)
    assert response.status_code == 200 and app_edge.binding("instance-1") is not None
    await client.close()
    await asyncio.sleep(0.05)  # the connection is gone: the flow is no longer live
    assert app_edge.binding("instance-1") is None


@pytest.mark.promise("P2")
async def test_an_unregistered_client_cannot_use_the_gateway_as_a_relay(
    edge: tuple[AppEdge, _Instances, list[AppBinding]],
) -> None:
    app_edge, _, _ = edge
    engine = RegistrationEngine(clock=SystemClock())
    CallRelay(app_edge.endpoint, engine, app_edge, None, None, SystemClock())  # type: ignore[arg-type]
    address = app_edge.endpoint.local_address("UDP")
    assert address is not None
    client = Endpoint()
    try:
        for to_tag in ("", f";tag={new_tag()}"):  # a new request, and an in-dialog one
            request = Request(
                "INVITE" if not to_tag else "BYE",
                parse_uri("sip:victim@198.51.100.7:5060"),
                [
                    ("From", f"<sip:mallory@sip.test>;tag={new_tag()}"),
                    ("To", f"<sip:victim@198.51.100.7>{to_tag}"),
                    ("Call-ID", new_tag()),
                    ("CSeq", "1 " + ("INVITE" if not to_tag else "BYE")),
                    ("Contact", "<sip:mallory@127.0.0.1:5999>"),
                ],
            )
            response = await client.request(request, Target("UDP", *address))
            assert response.status_code == 403
    finally:
        await client.close()
        await engine.close()

"""UDP, TCP and TLS transports and the flow table (RFC 3261 §18, RFC 5626 flows).

A *flow* is what a message came in on or goes out on: a UDP socket plus a remote address, or
one TCP/TLS connection. Responses and later requests to a peer reuse the flow the peer came in
on (RFC 5626 §5.3), which is what makes a client behind NAT reachable.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import structlog

from cloudphone.sip.errors import SIPSyntaxError
from cloudphone.sip.framing import (
    PONG,
    BadMessage,
    KeepAlivePing,
    KeepAlivePong,
    MessageReceived,
    StreamBroken,
    StreamFramer,
)
from cloudphone.sip.headers import canonical_name
from cloudphone.sip.message import Request, Response, parse_message

__all__ = [
    "Flow",
    "FlowKey",
    "FlowTable",
    "StreamFlow",
    "UDPFlow",
    "UDPListener",
    "answer_bad_request",
]

log = structlog.get_logger(__name__)

FlowKey = tuple[str, str, int]  # (transport, remote host, remote port)
MessageHandler = Callable[["Request | Response", "Flow"], None]


class Flow:
    """Where a message came from / goes to."""

    transport: str  # "UDP", "TCP" or "TLS"
    remote: tuple[str, int]
    local: tuple[str, int]

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"

    @property
    def key(self) -> FlowKey:
        return (self.transport, self.remote[0], self.remote[1])

    @property
    def closed(self) -> bool:
        return False

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.transport} {self.remote[0]}:{self.remote[1]}>"


@dataclass(eq=False)
class UDPFlow(Flow):
    listener: UDPListener
    remote: tuple[str, int]

    transport = "UDP"

    @property
    def local(self) -> tuple[str, int]:  # type: ignore[override]
        return self.listener.local

    @property
    def closed(self) -> bool:
        return self.listener.transport is None

    def send(self, data: bytes) -> None:
        if self.listener.transport is None:
            raise ConnectionError("UDP listener closed")
        self.listener.transport.sendto(data, self.remote)


class UDPListener(asyncio.DatagramProtocol):
    """One UDP socket; every datagram is one message (§18.3)."""

    def __init__(self, on_message: MessageHandler, flows: FlowTable) -> None:
        self.on_message = on_message
        self.flows = flows
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("0.0.0.0", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if data in (b"\r\n\r\n", b"\r\n", b"\x00\x00\x00\x00"):
            return  # keep-alives (RFC 5626 §3.5.1 uses STUN on UDP; CRLF is common too)
        remote = (str(addr[0]), int(addr[1]))
        flow = self.flows.udp_flow(self, remote)
        try:
            message = parse_message(data)
        except SIPSyntaxError as error:
            answer_bad_request(data, error, flow)
            return
        self.on_message(message, flow)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class StreamFlow(asyncio.Protocol, Flow):
    """One TCP or TLS connection, framed by Content-Length (§18.3)."""

    def __init__(
        self,
        transport_name: str,
        on_message: MessageHandler,
        flows: FlowTable,
        max_message_size: int = 65535,
    ) -> None:
        self.transport = transport_name
        self.on_message = on_message
        self.flows = flows
        self.framer = StreamFramer(max_message_size)
        self._stream: asyncio.Transport | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.remote = ("", 0)
        self.local = ("", 0)
        self.pongs = 0  # RFC 5626 §4.4.1 pongs received for our pings
        # called once when the connection is gone (e.g. to re-register, RFC 5626 §4.4.1)
        self.on_close: list[Callable[[], None]] = []

    def ping(self) -> None:
        """Send a CRLFCRLF keep-alive; the peer's CRLF answer increments :attr:`pongs`."""
        self.send(self.framer.ping())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._stream = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote = (str(peer[0]), int(peer[1]))
        self.local = (str(sock[0]), int(sock[1]))
        self.flows.add(self)
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        for event in self.framer.feed(data):
            if isinstance(event, MessageReceived):
                self.on_message(event.message, self)
            elif isinstance(event, KeepAlivePing):
                self.send(PONG)
            elif isinstance(event, KeepAlivePong):
                self.pongs += 1
            elif isinstance(event, BadMessage):
                answer_bad_request(event.data, event.error, self)
            elif isinstance(event, StreamBroken):
                log.info("sip.stream.broken", reason=event.error.reason, remote=self.remote)
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream = None
        self.flows.remove(self)
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("connection lost"))
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()

    @property
    def closed(self) -> bool:
        return self._stream is None or self._stream.is_closing()

    def send(self, data: bytes) -> None:
        if self._stream is None or self._stream.is_closing():
            raise ConnectionError("connection closed")
        self._stream.write(data)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def answer_bad_request(data: bytes, error: SIPSyntaxError, flow: Flow) -> None:
    """§21.4.1 / §8.2.3: answer a malformed *request* with 400/505 when its Via, From, To,
    Call-ID and CSeq can still be found; malformed responses are dropped (§18.1.2)."""
    log.info("sip.malformed", reason=error.reason, remote=flow.remote)
    if data.startswith(b"SIP/") or data.startswith(b"ACK "):
        return
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")[1:]
    copied: list[tuple[str, str]] = []
    for line in head:
        name, sep, value = line.partition(":")
        if sep and canonical_name_or_none(name.strip()) in _COPIED:
            copied.append((name.strip(), value.strip()))
    if {canonical_name_or_none(n) for n, _ in copied} != set(_COPIED):
        return
    reason = "".join(c for c in error.reason[:80] if c.isprintable())
    response = Response(error.status_code, reason, copied)
    try:
        flow.send(bytes(response))
    except ConnectionError:
        pass


_COPIED = ("via", "from", "to", "call-id", "cseq")


def canonical_name_or_none(name: str) -> str | None:
    try:
        return canonical_name(name)
    except SIPSyntaxError:
        return None


class FlowTable:
    """Open flows by (transport, remote host, remote port)."""

    def __init__(self) -> None:
        self._flows: dict[FlowKey, Flow] = {}

    def add(self, flow: Flow) -> None:
        self._flows[flow.key] = flow

    def remove(self, flow: Flow) -> None:
        if self._flows.get(flow.key) is flow:
            del self._flows[flow.key]

    def get(self, key: FlowKey) -> Flow | None:
        flow = self._flows.get(key)
        if flow is not None and flow.closed:
            self.remove(flow)
            return None
        return flow

    def udp_flow(self, listener: UDPListener, remote: tuple[str, int]) -> UDPFlow:
        key = ("UDP", remote[0], remote[1])
        flow = self._flows.get(key)
        if isinstance(flow, UDPFlow) and flow.listener is listener:
            return flow
        new = UDPFlow(listener, remote)
        self._flows[key] = new
        return new

    def __len__(self) -> int:
        return len(self._flows)

    def close_all(self) -> None:
        for flow in list(self._flows.values()):
            flow.close()
        self._flows.clear()


def client_ssl_context(*, verify: bool = True, cafile: str | None = None) -> ssl.SSLContext:
    """TLS client context: certificate and host name verified unless ``verify`` is False."""
    context = ssl.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

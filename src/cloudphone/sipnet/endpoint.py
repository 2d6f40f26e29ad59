"""The asyncio SIP endpoint: transports + flows + one timer heap around the pure core.

Send a request with :meth:`Endpoint.request` (a client transaction; resolves to the final
response, or raises :class:`TransactionFailed` — 408 on timeout, 503 on transport failure,
as §8.1.3.1 says to treat them). Receive requests
through :attr:`Endpoint.on_request`, answering with :meth:`IncomingRequest.respond` (a server
transaction). CANCEL for a pending INVITE is answered here (§9.2).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from cloudphone.sip.errors import SIPSyntaxError
from cloudphone.sip.headers import BRANCH_MAGIC, Address, Via
from cloudphone.sip.message import Request, Response, make_response
from cloudphone.sip.transaction import (
    Action,
    Deliver,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Timeout,
    Timers,
    Transaction,
    TransactionLayer,
    Transmit,
    TransportError,
)
from cloudphone.sip.uri import SipURI
from cloudphone.sipnet.resolver import Resolver, Target
from cloudphone.sipnet.scheduler import Scheduler, TimerEntry
from cloudphone.sipnet.transport import (
    Flow,
    FlowKey,
    FlowTable,
    StreamFlow,
    UDPFlow,
    UDPListener,
    answer_bad_request,
    client_ssl_context,
)

__all__ = ["Endpoint", "IncomingRequest", "TransactionFailed", "new_branch", "new_tag"]

log = structlog.get_logger(__name__)


_UDP_LIMIT = 1300  # §18.1.1: path MTU unknown
_VIA_ALLOWANCE = 100  # the Via we are about to add


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


class TransactionFailed(Exception):
    """No final response: Timer B/F fired (408) or the transport failed (503)."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"{status_code} {reason}")
        self.status_code = status_code
        self.reason = reason

    @property
    def timeout(self) -> bool:
        return self.status_code == 408


@dataclass(eq=False)
class IncomingRequest:
    """A request received by the endpoint; ``respond`` answers through its transaction."""

    request: Request
    flow: Flow
    endpoint: Endpoint
    transaction: Transaction | None = None  # None for an ACK to a 2xx
    to_tag: str = field(default_factory=new_tag)

    def respond(
        self,
        status_code: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        response = make_response(
            self.request, status_code, reason, to_tag=self.to_tag, headers=headers or [], body=body
        )
        self.send(response)
        return response

    def send(self, response: Response) -> None:
        if self.transaction is None:
            raise RuntimeError("an ACK is not answered")
        self.endpoint.respond(self.transaction, response)


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[Response]
    on_provisional: Callable[[Response], None] | None


class Endpoint:
    """Transports, flows, transactions and timers of one SIP element."""

    def __init__(
        self,
        *,
        timers: Timers | None = None,
        resolver: Resolver | None = None,
        tls_client: ssl.SSLContext | None = None,
        user_agent: str | None = "cloudphone",
        max_message_size: int = 65535,
    ) -> None:
        self.layer = TransactionLayer(timers)
        self.flows = FlowTable()
        self.resolver = resolver or Resolver()
        self.tls_client = tls_client or client_ssl_context()
        self.user_agent = user_agent
        self.max_message_size = max_message_size
        self.on_request: Callable[[IncomingRequest], None] | None = None
        # set by a proxy: a CANCEL matched a pending INVITE; the 487 will come from downstream
        self.on_cancel: Callable[[ServerInviteTransaction], None] | None = None
        self._scheduler: Scheduler | None = None
        self._timer: TimerEntry | None = None
        self._udp: list[UDPListener] = []
        self._servers: dict[str, asyncio.Server] = {}
        self._listen: dict[str, tuple[str, int]] = {}
        self._pending: dict[Transaction, _Pending] = {}
        self._acks: dict[tuple[str, int], tuple[Request, Flow]] = {}
        self._connecting: dict[FlowKey, asyncio.Future[Flow]] = {}

    # -- set-up ------------------------------------------------------------------------------
    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            self._scheduler = Scheduler()
        return self._scheduler

    def now(self) -> float:
        return self.scheduler.now()

    async def listen(
        self,
        transport: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """Listen on UDP, TCP or TLS; returns the bound (host, port)."""
        transport = transport.upper()
        loop = asyncio.get_running_loop()
        if transport == "UDP":
            _, protocol = await loop.create_datagram_endpoint(
                lambda: UDPListener(self._receive, self.flows), local_addr=(host, port)
            )
            self._udp.append(protocol)
            self._listen["UDP"] = protocol.local
            return protocol.local
        if transport == "TLS" and ssl_context is None:
            raise ValueError("TLS needs a server ssl_context")
        server = await loop.create_server(
            lambda: StreamFlow(transport, self._receive, self.flows, self.max_message_size),
            host,
            port,
            ssl=ssl_context if transport == "TLS" else None,
        )
        self._servers[transport] = server
        sockname = server.sockets[0].getsockname()
        self._listen[transport] = (str(sockname[0]), int(sockname[1]))
        return self._listen[transport]

    def local_address(self, transport: str) -> tuple[str, int] | None:
        return self._listen.get(transport.upper())

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        self.flows.close_all()
        for listener in self._udp:
            if listener.transport is not None:
                listener.transport.close()
        for server in self._servers.values():
            await server.wait_closed()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        if self._scheduler is not None:
            self._scheduler.close()

    # -- flows -------------------------------------------------------------------------------
    async def flow_to(self, target: Target) -> Flow:
        """The existing flow to ``target`` or a new connection (RFC 5626: reuse flows)."""
        existing = self.flows.get((target.transport, target.host, target.port))
        if existing is not None:
            return existing
        if target.transport == "UDP":
            if not self._udp:
                await self.listen(
                    "UDP", "127.0.0.1" if target.host.startswith("127.") else "0.0.0.0"
                )
            return self.flows.udp_flow(self._udp[0], (target.host, target.port))
        key = (target.transport, target.host, target.port)
        pending = self._connecting.get(key)
        if pending is not None:  # another request is already connecting there: share it
            return await asyncio.shield(pending)
        connecting = asyncio.ensure_future(self._connect(target))
        self._connecting[key] = connecting
        try:
            return await connecting
        finally:
            self._connecting.pop(key, None)

    async def _connect(self, target: Target) -> Flow:
        loop = asyncio.get_running_loop()
        tls = target.transport == "TLS"
        _, flow = await loop.create_connection(
            lambda: StreamFlow(target.transport, self._receive, self.flows, self.max_message_size),
            target.host,
            target.port,
            ssl=self.tls_client if tls else None,
            server_hostname=(target.server_name or target.host) if tls else None,
        )
        await flow.connected
        return flow

    async def resolve(self, request: Request) -> Target:
        """Next hop of an outgoing request: top Route if loose, else the Request-URI (§8.1.2)."""
        return (await self.resolve_all(request))[0]

    async def resolve_all(self, request: Request) -> list[Target]:
        """Every RFC 3263 target of the next hop, in the order to try them."""
        uri = request.uri
        routes = request.headers.get_all("route")
        if routes:
            first = Address.parse(routes[0]).uri
            if isinstance(first, SipURI) and first.is_loose_router:
                uri = first
        if not isinstance(uri, SipURI):
            raise ValueError(f"cannot route to {uri}")
        targets = await self.resolver.resolve(uri)
        if not targets:
            raise ConnectionError(f"no address for {uri}")
        return targets

    def _via(self, flow: Flow, branch: str) -> str:
        host, port = self._listen.get(flow.transport) or flow.local
        if host in ("0.0.0.0", "::"):
            host = flow.local[0]
        if ":" in host:
            host = f"[{host}]"
        return f"SIP/2.0/{flow.transport} {host}:{port};branch={branch};rport"

    def contact_uri(self, transport: str, user: str | None = None) -> SipURI:
        """A Contact URI on our listening address for ``transport``."""
        host, port = self._listen[transport.upper()]
        params: tuple[tuple[str, str | None], ...] = ()
        if transport.upper() != "UDP":
            params = (("transport", transport.lower()),)
        return SipURI(host, user=user, port=port, params=params)

    def keep_alive(self, flow: Flow, interval: float = 25.0, timeout: float = 10.0) -> None:
        """RFC 5626 §4.4.1 keep-alive on a TCP/TLS flow: a CRLFCRLF ping every ``interval``
        seconds; a flow whose pong does not come within ``timeout`` is closed, so that the
        next request opens a new one (and a registration notices through its refresh)."""
        if not isinstance(flow, StreamFlow):
            raise ValueError("CRLF keep-alives are for stream flows")
        if timeout >= interval:
            raise ValueError("timeout must be shorter than interval")

        def ping(now: float) -> None:
            if flow.closed:
                return
            before = flow.pongs
            try:
                flow.ping()
            except ConnectionError:
                return
            self.scheduler.call_at(now + timeout, lambda t: verify(t, before))

        def verify(now: float, before: int) -> None:
            if flow.closed:
                return
            if flow.pongs == before:
                log.info("sip.keepalive.lost", remote=flow.remote, transport=flow.transport)
                flow.close()
                return
            self.scheduler.call_at(now + interval - timeout, ping)

        self.scheduler.call_at(self.now() + interval, ping)

    # -- client side -------------------------------------------------------------------------
    async def request(
        self,
        request: Request,
        target: Target | Flow | None = None,
        *,
        branch: str | None = None,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send ``request`` through a client transaction and wait for its final response."""
        if "max-forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")
        if self.user_agent and "user-agent" not in request.headers:
            request.headers.add("User-Agent", self.user_agent)
        try:
            flow = await self._flow_for(request, target)
            if isinstance(flow, UDPFlow) and not isinstance(target, Flow):
                flow = await self._avoid_fragmentation(request, flow)
        except OSError as error:
            raise TransactionFailed(503, f"Transport Error: {error}") from error
        request.headers.prepend("Via", self._via(flow, branch or new_branch()))
        now = self.now()
        tx, actions = self.layer.start_client(request, now, reliable=flow.reliable)
        tx.context = flow
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[tx] = _Pending(future, on_provisional)
        self._apply_all(tx, actions)
        self._arm()
        return await future

    async def _avoid_fragmentation(self, request: Request, flow: UDPFlow) -> Flow:
        """§18.1.1: a request over 1300 bytes (with room for our Via) goes over TCP to the
        same address; if nothing listens there, UDP it is."""
        if len(bytes(request)) + _VIA_ALLOWANCE <= _UDP_LIMIT:
            return flow
        try:
            return await self.flow_to(Target("TCP", flow.remote[0], flow.remote[1]))
        except OSError:
            log.info("sip.udp.large", remote=flow.remote, size=len(bytes(request)))
            return flow

    async def _flow_for(self, request: Request, target: Target | Flow | None) -> Flow:
        if isinstance(target, Flow):
            return target
        if target is not None:
            return await self.flow_to(target)
        # RFC 3263 §4.3: a target that cannot be connected to is skipped for the next one
        targets = await self.resolve_all(request)
        for candidate in targets[:-1]:
            try:
                return await self.flow_to(candidate)
            except OSError:
                log.info(
                    "sip.target.unreachable", transport=candidate.transport, host=candidate.host
                )
        return await self.flow_to(targets[-1])

    async def send_stateless(self, request: Request, target: Target | Flow | None = None) -> Flow:
        """Send a request without a transaction (an ACK for a 2xx, §13.2.2.4)."""
        flow = await self._flow_for(request, target)
        if "via" not in request.headers:
            request.headers.prepend("Via", self._via(flow, new_branch()))
        flow.send(bytes(request))
        if request.method == "ACK":
            # kept to answer 2xx retransmissions, for as long as the INVITE's Timer M (RFC 6026)
            key = (request.call_id, request.cseq.seq)
            self._acks[key] = (request, flow)

            def forget(_now: float) -> None:
                self._acks.pop(key, None)

            self.scheduler.call_at(self.now() + 64 * self.layer.timers.t1, forget)
        return flow

    # -- receiving ---------------------------------------------------------------------------
    def _receive(self, message: Request | Response, flow: Flow) -> None:
        try:
            # parsing is lazy: check every structured header before a transaction sees it
            message.validate()
        except SIPSyntaxError as error:
            answer_bad_request(bytes(message), error, flow)
            return
        try:
            if isinstance(message, Response):
                self._receive_response(message)
            else:
                self._receive_request(message, flow)
        except Exception:  # a handler bug must not kill the transport
            log.exception("sip.receive.failed")
        self._arm()

    def _receive_response(self, response: Response) -> None:
        tx, actions = self.layer.receive_response(response, self.now())
        if tx is None:
            # a 2xx retransmission after the INVITE transaction ended: re-send our ACK
            sent = self._acks.get((response.call_id, response.cseq.seq))
            if sent is not None and response.cseq.method == "INVITE" and response.status_code < 300:
                sent[1].send(bytes(sent[0]))
            return
        self._apply_all(tx, actions)

    def _receive_request(self, request: Request, flow: Flow) -> None:
        self._note_source(request, flow)
        tx, actions = self.layer.receive_request(request, self.now(), reliable=flow.reliable)
        if tx is None:
            if request.method == "ACK":
                invite = self.layer.accepted_invite_for_ack(request)
                if invite is not None:
                    invite.ack_received(self.now())
                self._deliver(IncomingRequest(request, flow, self))
            return
        if tx.context is None:
            tx.context = flow
        if request.method == "CANCEL" and any(isinstance(a, Deliver) for a in actions):
            self._apply_all(tx, [a for a in actions if not isinstance(a, Deliver)])
            self._answer_cancel(request, tx)
            return
        self._apply_all(tx, actions)

    @staticmethod
    def _note_source(request: Request, flow: Flow) -> None:
        """§18.2.1 + RFC 3581: record in the top Via where the request really came from."""
        via = request.via
        wants_rport = via.params.get("rport") == ""
        if via.host.strip("[]") == flow.remote[0] and not wants_rport:
            return
        top = request.headers.pop_first_value("via")
        assert top is not None
        fixed = Via.parse(top)
        fixed.params.set("received", flow.remote[0])
        if wants_rport:
            fixed.params.set("rport", str(flow.remote[1]))
        request.headers.prepend("Via", str(fixed))

    def _answer_cancel(self, cancel: Request, tx: Transaction) -> None:
        """§9.2: 200 to the CANCEL, 487 to the INVITE if it is still pending."""
        invite = self.layer.find_invite_for_cancel(cancel)
        if invite is None:
            self.respond(tx, make_response(cancel, 481))
            return
        self.respond(tx, make_response(cancel, 200, to_tag=new_tag()))
        if invite.state is not State.PROCEEDING:
            return
        if self.on_cancel is not None:
            self.on_cancel(invite)
        else:
            self.respond(invite, make_response(invite.request, 487, to_tag=new_tag()))

    def _deliver(self, incoming: IncomingRequest) -> None:
        if self.on_request is None:
            if incoming.transaction is not None:
                incoming.respond(405 if incoming.request.method != "OPTIONS" else 200)
            return
        self.on_request(incoming)

    def respond(self, tx: Transaction, response: Response) -> None:
        """Send a response through the server transaction ``tx``."""
        assert isinstance(tx, ServerInviteTransaction | ServerNonInviteTransaction)
        actions = self.layer.send_response(tx, response, self.now())
        self._apply_all(tx, actions)
        self._arm()

    # -- actions and timers ------------------------------------------------------------------
    def _apply_all(self, tx: Transaction, actions: list[Action]) -> None:
        for action in actions:
            self._apply(tx, action)

    def _apply(self, tx: Transaction, action: Action) -> None:
        if isinstance(action, Transmit):
            self._transmit(tx, action.message)
        elif isinstance(action, Deliver):
            message = action.message
            if isinstance(message, Request):
                assert isinstance(tx.context, Flow)
                self._deliver(IncomingRequest(message, tx.context, self, tx))
            else:
                self._deliver_response(tx, message)
        elif isinstance(action, Timeout | TransportError):
            error = (
                TransactionFailed(408, "Request Timeout")
                if isinstance(action, Timeout)
                else TransactionFailed(503, "Transport Error")
            )
            pending = self._pending.pop(tx, None)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(error)
        else:  # Terminated
            self._pending.pop(tx, None)

    def _deliver_response(self, tx: Transaction, response: Response) -> None:
        pending = self._pending.get(tx)
        if pending is None:
            return
        if response.status_code < 200:
            if pending.on_provisional is not None:
                pending.on_provisional(response)
        elif not pending.future.done():
            pending.future.set_result(response)
        elif response.status_code < 300:
            sent = self._acks.get((response.call_id, response.cseq.seq))
            if sent is not None:
                sent[1].send(bytes(sent[0]))  # 2xx retransmitted: our ACK was lost

    def _transmit(self, tx: Transaction, message: Request | Response) -> None:
        flow = tx.context
        assert isinstance(flow, Flow)
        if isinstance(message, Response) and isinstance(flow, UDPFlow):
            flow = self._response_flow(message, flow)
        try:
            flow.send(bytes(message))
        except ConnectionError:
            log.info("sip.transport.failed", remote=flow.remote, transport=flow.transport)
            self._apply_all(tx, self.layer.transport_error(tx))

    def _response_flow(self, response: Response, flow: UDPFlow) -> UDPFlow:
        """§18.2.2 / RFC 3581: to the source address; to the Via port unless rport was asked."""
        via = response.via
        if via.params.get("rport"):
            return flow
        port = via.port or 5060
        if port == flow.remote[1]:
            return flow
        return self.flows.udp_flow(flow.listener, (flow.remote[0], port))

    def _arm(self) -> None:
        deadline = self.layer.next_deadline
        if deadline is None:
            return
        if self._timer is not None and not self._timer.cancelled and self._timer.when <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.scheduler.call_at(deadline, self._on_timer)

    def _on_timer(self, now: float) -> None:
        self._timer = None
        for tx, action in list(self.layer.on_timer(now)):
            self._apply(tx, action)
        self._arm()

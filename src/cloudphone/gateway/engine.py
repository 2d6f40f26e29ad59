"""The registration engine: keeps every live push instance registered at its provider.

Built for many instances on few sockets: all UDP registrations share one socket, all TCP/TLS
registrations to one registrar share one connection (RFC 5626 flow semantics: the provider
reaches us back on it). Per instance it keeps one compact ``_Binding``; a REGISTER in flight
uses a pure ``ClientNonInviteTransaction`` from :mod:`cloudphone.sip`, driven by this loop's
timers. Responses find their binding by Via branch; requests for a contact find their instance
by the contact's user part (``contact_key``) with one dictionary lookup.

Refresh happens at a random fraction of the granted expiry (so a restart does not synchronise
every refresh), ``423 Interval Too Brief`` raises the expiry to Min-Expires (RFC 3261 §10.2.8),
failures back off exponentially with a cap (RFC 5626 §4.5), and state changes are reported to
the ``StateSink`` in batches so a burst of thousands of registrations costs few database writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from cloudphone.core.clock import Clock
from cloudphone.core.logging import get_logger
from cloudphone.gateway.upstream import RegistrationTarget, StateSink, split_hostport
from cloudphone.sip import Request, Response, SIPSyntaxError, parse_message
from cloudphone.sip.digest import Credentials, DigestClient
from cloudphone.sip.framing import KeepAlivePing, MessageReceived, StreamBroken, StreamFramer
from cloudphone.sip.message import make_response
from cloudphone.sip.transaction import (
    ClientNonInviteTransaction,
    Deliver,
    Terminated,
    Timeout,
    Timers,
    Transmit,
    TransportError,
)
from cloudphone.sipnet.transport import Flow

log = get_logger(__name__)

_USER_AGENT = "cloudphone-gateway"


@dataclass(frozen=True)
class EngineTuning:
    refresh_fraction: tuple[float, float] = (0.5, 0.8)  # of the granted expiry
    refresh_margin_s: float = 5.0  # never later than this before the binding lapses
    backoff_base_s: float = 30.0  # RFC 5626 §4.5 base time when no flow works
    backoff_cap_s: float = 1800.0
    unregister_timeout_s: float = 2.0
    keepalive_interval_s: float = 25.0  # CRLF on streams, OPTIONS on UDP (per destination)
    state_flush_interval_s: float = 0.5
    max_in_flight: int = 200  # REGISTER transactions outstanding at once, all registrars
    nonce_reuse_s: float = 120.0  # offer a registrar's last nonce this long (§22.3)
    timers: Timers = field(default_factory=Timers)


class _Binding:
    """One instance's registration. ``__slots__`` keep 100,000 of these small."""

    __slots__ = (
        "answered_nonce",
        "call_id",
        "cseq",
        "expiry",
        "failures",
        "from_tag",
        "refresh_handle",
        "registered",
        "target",
        "tx",
        "unregistering",
    )

    def __init__(self, target: RegistrationTarget) -> None:
        self.target = target
        self.call_id = secrets.token_hex(12)  # kept for the instance's life (§10.2.4)
        self.from_tag = secrets.token_hex(5)
        self.cseq = 0
        self.expiry = target.expiry
        self.failures = 0
        self.registered = False
        self.refresh_handle: asyncio.TimerHandle | None = None
        self.tx: ClientNonInviteTransaction | None = None
        self.unregistering: asyncio.Future[None] | None = None
        self.answered_nonce: str | None = None


class _Stream(asyncio.Protocol):
    """One TCP/TLS connection to a registrar, shared by every instance registered there."""

    def __init__(self, engine: RegistrationEngine, key: tuple[str, int, str]) -> None:
        self._engine = engine
        self._key = key
        self._framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self.closed = asyncio.get_running_loop().create_future()
        self.flow = UpstreamFlow(engine, (key[0], key[1]), key[2].upper(), self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.local = transport.get_extra_info("sockname")[:2]

    def data_received(self, data: bytes) -> None:
        for event in self._framer.feed(data):
            if isinstance(event, MessageReceived):
                self._engine._received(event.message, self._key, self)
            elif isinstance(event, KeepAlivePing) and self.transport is not None:
                self.transport.write(b"\r\n")
            elif isinstance(event, StreamBroken) and self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine._stream_lost(self._key, self)
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, data: bytes) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, engine: RegistrationEngine) -> None:
        self._engine = engine

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data in (b"\r\n", b"\r\n\r\n"):
            return
        try:
            message = parse_message(data)
        except SIPSyntaxError:
            return  # a malformed datagram is dropped (§18.3 only answers well-framed requests)
        self._engine._received(message, (addr[0], addr[1], "udp"), None)


class UpstreamFlow(Flow):
    """The engine's socket towards one provider address, seen as a :class:`Flow`, so that
    the gateway's call relay can run its transactions over the very flow the provider
    reaches the instance's contact on (RFC 5626 §5.3: requests and responses reuse it)."""

    def __init__(
        self,
        engine: RegistrationEngine,
        remote: tuple[str, int],
        transport: str,
        stream: _Stream | None = None,
    ) -> None:
        self._engine = engine
        self.remote = remote
        self.transport = transport
        self._stream = stream

    @property
    def local(self) -> tuple[str, int]:  # type: ignore[override]
        if self._stream is not None:
            return self._stream.local
        return self._engine.udp_address

    @property
    def closed(self) -> bool:
        if self._stream is not None:
            return self._stream.transport is None or self._stream.transport.is_closing()
        return self._engine._udp is None

    def send(self, data: bytes) -> None:
        sent = (
            self._stream.send(data)
            if self._stream is not None
            else self._engine._transmit(data, (self.remote[0], self.remote[1], "udp"))
        )
        if not sent:
            raise ConnectionError("upstream flow closed")


InboundHandler = Callable[[str, Request, Callable[[Response], None]], None]
RelayHandler = Callable[[Request | Response, Flow], None]


class RegistrationEngine:
    """Implements :class:`cloudphone.gateway.upstream.Upstream`."""

    def __init__(
        self,
        *,
        clock: Clock,
        local_host: str = "127.0.0.1",
        udp_port: int = 0,
        sink: StateSink | None = None,
        tuning: EngineTuning | None = None,
        rng: random.Random | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self._clock = clock
        self._host = local_host
        self._udp_port = udp_port
        self.sink = sink
        self.tuning = tuning or EngineTuning()
        self._rng = rng or random.Random()
        self._tls = tls_context
        self._bindings: dict[str, _Binding] = {}
        self._by_contact: dict[str, str] = {}
        self._by_branch: dict[str, _Binding] = {}
        self._streams: dict[tuple[str, int, str], _Stream] = {}
        self._connecting: dict[tuple[str, int, str], asyncio.Future[_Stream]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._started: asyncio.Lock | None = None
        self._pending_state: dict[str, tuple[bool, int | None, int | None]] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._keepalive_task: asyncio.Task[None] | None = None
        self._addresses: dict[str, str] = {}
        self._udp_destinations: set[tuple[str, int, str]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._waiting: deque[tuple[_Binding, Request, tuple[str, int, str]]] = deque()
        self._challenges: dict[tuple[str, int, str], tuple[Response, float]] = {}
        self.inbound: InboundHandler | None = None
        # Set by the call relay: every request from a provider (but keep-alive OPTIONS) and
        # every response that is not for a REGISTER of ours goes there with its flow.
        self.relay: RelayHandler | None = None
        self._udp_flows: dict[tuple[str, int], UpstreamFlow] = {}

    # -- Upstream -------------------------------------------------------------------------

    async def register(self, target: RegistrationTarget) -> None:
        await self._ensure_started()
        old = self._bindings.get(target.instance_id)
        if old is not None:
            self._forget(old)
        binding = _Binding(target)
        self._bindings[target.instance_id] = binding
        self._by_contact[target.contact_key] = target.instance_id
        await self._send_register(binding)

    async def unregister(self, instance_id: str) -> None:
        binding = self._bindings.get(instance_id)
        if binding is None:
            return
        if binding.registered:
            loop = asyncio.get_running_loop()
            binding.unregistering = loop.create_future()
            binding.expiry = 0
            await self._send_register(binding)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(binding.unregistering), self.tuning.unregister_timeout_s
                )
        self._forget(binding)

    def credentials_for(self, instance_id: str) -> Credentials | None:
        """The instance's provider login, to answer a 401/407 to a request the app sent
        through the gateway (the app no longer holds it after hand-over)."""
        binding = self._bindings.get(instance_id)
        if binding is None:
            return None
        target = binding.target
        return Credentials(target.auth_username.decode(), target.password.decode())

    def instance_for_contact(self, contact_key: str) -> str | None:
        """O(1): which instance a request addressed to ``sip:<contact_key>@…`` belongs to."""
        return self._by_contact.get(contact_key)

    def is_registered(self, instance_id: str) -> bool:
        binding = self._bindings.get(instance_id)
        return binding is not None and binding.registered

    async def flow_towards(self, instance_id: str) -> Flow | None:
        """The flow to the instance's outbound proxy or registrar: where its outgoing
        requests go (the same flow its registration uses, RFC 5626 §5)."""
        binding = self._bindings.get(instance_id)
        if binding is None:
            return None
        dest = await self._destination(binding.target)
        return await self.flow_to(dest)

    async def flow_to(self, dest: tuple[str, int, str]) -> Flow:
        """A flow to ``(host, port, transport)``: the shared UDP socket or a stream."""
        await self._ensure_started()
        if dest[2] == "udp":
            return self._udp_flow((dest[0], dest[1]))
        return (await self._stream(dest)).flow

    def _udp_flow(self, remote: tuple[str, int]) -> UpstreamFlow:
        flow = self._udp_flows.get(remote)
        if flow is None:
            if len(self._udp_flows) > 10_000:
                self._udp_flows.clear()  # a bound on peers we answered, not a cache to keep
            flow = self._udp_flows[remote] = UpstreamFlow(self, remote, "UDP")
        return flow

    @property
    def udp_address(self) -> tuple[str, int]:
        assert self._udp is not None
        host, port = self._udp.get_extra_info("sockname")[:2]
        return host, port

    def __len__(self) -> int:
        return len(self._bindings)

    async def close(self) -> None:
        for binding in list(self._bindings.values()):
            self._forget(binding)
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive_task
        await self._flush_states()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._started = None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)  # held until done, or the loop may collect it mid-flight
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("registration engine task failed", exc_info=task.exception())

    # -- sending --------------------------------------------------------------------------

    async def _ensure_started(self) -> None:
        if self._udp is not None:
            return
        if self._started is None:
            self._started = asyncio.Lock()
        async with self._started:
            if self._udp is not None:
                return
            loop = asyncio.get_running_loop()
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), local_addr=(self._host, self._udp_port)
            )
            self._keepalive_task = asyncio.create_task(self._keepalive_forever())

    async def _destination(self, target: RegistrationTarget) -> tuple[str, int, str]:
        hop = target.outbound_proxy or target.registrar
        host, port = split_hostport(hop, 5061 if target.transport == "tls" else 5060)
        address = self._addresses.get(host)
        if address is None:
            # IP literals are used as they are; names resolve once per host (A/AAAA).
            infos = await asyncio.get_running_loop().getaddrinfo(host, port)
            address = self._addresses[host] = str(infos[0][4][0])
        dest = (address, port, target.transport)
        if target.transport == "udp":
            self._udp_destinations.add(dest)
        return dest

    async def _send_register(self, binding: _Binding, challenge: Response | None = None) -> None:
        if binding.refresh_handle is not None:
            binding.refresh_handle.cancel()
            binding.refresh_handle = None
        try:
            dest = await self._destination(binding.target)
            local = await self._local_for(dest)
        except OSError as exc:
            log.info(
                "registrar unreachable",
                instance_id=binding.target.instance_id,
                error=type(exc).__name__,
            )
            self._failed(binding, 503)
            return
        request = self._build_register(binding, dest, local)
        continuing = challenge is not None
        if challenge is None:
            # RFC 3261 §22.3: credentials may be offered before being challenged. The last
            # challenge from this registrar spares every other registration a round trip;
            # a registrar that wants a fresh nonce answers 401 and we go the long way.
            cached = self._challenges.get(dest)
            if cached is not None and time.monotonic() - cached[1] < self.tuning.nonce_reuse_s:
                challenge = cached[0]
        if challenge is not None:
            client = DigestClient(
                Credentials(binding.target.auth_username.decode(), binding.target.password.decode())
            )
            if not client.authorize(request, challenge):
                self._failed(binding, challenge.status_code)
                return
            binding.answered_nonce = client.challenges(challenge)[0].nonce
        if len(self._by_branch) >= self.tuning.max_in_flight:
            # Flow control: a burst of thousands of instances must not overflow the
            # registrar's receive buffer (and then retransmit for 32 s). Continuations of a
            # registration already under way go first.
            entry = (binding, request, dest)
            if continuing:
                self._waiting.appendleft(entry)
            else:
                self._waiting.append(entry)
            return
        self._start_transaction(binding, request, dest)

    def _build_register(
        self, binding: _Binding, dest: tuple[str, int, str], local: tuple[str, int]
    ) -> Request:
        target = binding.target
        binding.cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(10)
        transport = dest[2].upper()
        domain = target.address_of_record.rsplit("@", 1)[1]
        contact = f"<sip:{target.contact_key}@{local[0]}:{local[1]}"
        contact += ">" if dest[2] == "udp" else f";transport={dest[2]}>"
        headers = [
            ("Via", f"SIP/2.0/{transport} {local[0]}:{local[1]};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<{target.address_of_record}>;tag={binding.from_tag}"),
            ("To", f"<{target.address_of_record}>"),
            ("Call-ID", binding.call_id),
            ("CSeq", f"{binding.cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(binding.expiry)),
            ("User-Agent", _USER_AGENT),
            ("Content-Length", "0"),
        ]
        if target.outbound_proxy:
            headers.insert(1, ("Route", f"<sip:{target.outbound_proxy};lr>"))
        scheme = "sips" if dest[2] == "tls" else "sip"
        return Request("REGISTER", f"{scheme}:{domain}", headers, b"")

    def _start_transaction(
        self, binding: _Binding, request: Request, dest: tuple[str, int, str]
    ) -> None:
        old = binding.tx
        if old is not None:
            self._by_branch.pop(old.request.via.branch or "", None)
        tx = ClientNonInviteTransaction(
            request, reliable=dest[2] != "udp", timers=self.tuning.timers
        )
        tx.context = dest
        binding.tx = tx
        self._by_branch[request.via.branch or ""] = binding
        loop = asyncio.get_running_loop()
        self._run(binding, tx, tx.start(loop.time()))

    def _run(self, binding: _Binding, tx: ClientNonInviteTransaction, actions: list[Any]) -> None:
        dest: tuple[str, int, str] = tx.context  # type: ignore[assignment]
        for action in actions:
            if isinstance(action, Transmit):
                if not self._transmit(action.message.to_bytes(), dest):
                    self._run(binding, tx, tx.transport_error())
                    return
            elif isinstance(action, Deliver):
                assert isinstance(action.message, Response)
                self._on_response(binding, action.message)
                if action.message.status_code >= 200:
                    # Done for us: Timer K would only absorb retransmitted responses, and an
                    # unmatched one is dropped anyway. Free the flow-control slot now.
                    self._drop_tx(binding, tx)
                    return
            elif isinstance(action, Timeout | TransportError):
                self._drop_tx(binding, tx)
                self._failed(binding, 408 if isinstance(action, Timeout) else 503)
            elif isinstance(action, Terminated):
                self._drop_tx(binding, tx)
        deadline = tx.next_deadline
        if deadline is not None and not tx.terminated:
            loop = asyncio.get_running_loop()
            loop.call_at(deadline, self._tx_timer, binding, tx)

    def _tx_timer(self, binding: _Binding, tx: ClientNonInviteTransaction) -> None:
        if binding.tx is not tx or tx.terminated:
            return
        due = tx.next_deadline
        now = asyncio.get_running_loop().time()
        if due is not None and due <= now:
            self._run(binding, tx, tx.on_timer(now))

    def _drop_tx(self, binding: _Binding, tx: ClientNonInviteTransaction) -> None:
        if binding.tx is tx:
            binding.tx = None
        self._by_branch.pop(tx.request.via.branch or "", None)
        while self._waiting and len(self._by_branch) < self.tuning.max_in_flight:
            waiting, request, dest = self._waiting.popleft()
            if self._bindings.get(waiting.target.instance_id) is waiting:
                self._start_transaction(waiting, request, dest)

    def _transmit(self, data: bytes, dest: tuple[str, int, str]) -> bool:
        if dest[2] == "udp":
            if self._udp is None:
                return False
            self._udp.sendto(data, dest[:2])
            return True
        stream = self._streams.get(dest)
        return stream is not None and stream.send(data)

    async def _local_for(self, dest: tuple[str, int, str]) -> tuple[str, int]:
        if dest[2] == "udp":
            return self.udp_address
        return (await self._stream(dest)).local

    async def _stream(self, dest: tuple[str, int, str]) -> _Stream:
        stream = self._streams.get(dest)
        if (
            stream is not None
            and stream.transport is not None
            and not stream.transport.is_closing()
        ):
            return stream
        pending = self._connecting.get(dest)
        if pending is not None:
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Stream] = loop.create_future()
        self._connecting[dest] = future
        try:
            ssl_ctx = None
            if dest[2] == "tls":
                ssl_ctx = self._tls or ssl.create_default_context()
            _, protocol = await loop.create_connection(
                lambda: _Stream(self, dest),
                dest[0],
                dest[1],
                ssl=ssl_ctx,
                local_addr=(self._host, 0),
            )
            self._streams[dest] = protocol
            future.set_result(protocol)
            return protocol
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters get it through shield
            raise
        finally:
            self._connecting.pop(dest, None)

    def _stream_lost(self, key: tuple[str, int, str], stream: _Stream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]
        # Every binding on that flow re-registers over a new connection (RFC 5626 §4.4.1).
        for binding in list(self._bindings.values()):
            if binding.registered and binding.target.transport == key[2]:
                self._schedule(binding, self._rng.uniform(0.0, 1.0))

    # -- receiving ------------------------------------------------------------------------

    def _received(
        self, message: Request | Response, source: tuple[str, int, str], stream: _Stream | None
    ) -> None:
        if isinstance(message, Response):
            binding = self._by_branch.get(message.via.branch or "")
            if binding is None or binding.tx is None:
                if self.relay is not None:
                    # a response to a request the relay sent (an app's REGISTER in RFC 8599
                    # mode too); a late one of ours finds no transaction there and is dropped
                    self.relay(message, self._flow_of(source, stream))
                return
            tx = binding.tx
            self._run(binding, tx, tx.receive_response(message, asyncio.get_running_loop().time()))
            return
        if self.relay is not None and not (
            message.method == "OPTIONS" and getattr(message.uri, "user", None) is None
        ):
            self.relay(message, self._flow_of(source, stream))
            return
        self._on_request(message, source, stream)

    def _flow_of(self, source: tuple[str, int, str], stream: _Stream | None) -> Flow:
        return stream.flow if stream is not None else self._udp_flow((source[0], source[1]))

    def _on_request(
        self, request: Request, source: tuple[str, int, str], stream: _Stream | None
    ) -> None:
        def reply(response: Response) -> None:
            data = response.to_bytes()
            if stream is not None:
                stream.send(data)
            elif self._udp is not None:
                via = request.via
                port = via.rport or source[1]
                self._udp.sendto(data, (source[0], port))

        if request.method == "ACK":
            return
        user = getattr(request.uri, "user", None)
        instance_id = self._by_contact.get(user or "")
        if request.method == "OPTIONS":
            reply(make_response(request, 200))
        elif instance_id is None:
            reply(make_response(request, 404, to_tag=secrets.token_hex(4)))
        elif self.inbound is not None:
            self.inbound(instance_id, request, reply)
        else:
            reply(make_response(request, 480, to_tag=secrets.token_hex(4)))

    def _on_response(self, binding: _Binding, response: Response) -> None:
        code = response.status_code
        if code < 200:
            return
        if binding.unregistering is not None:
            if code in (401, 407) and self._fresh_challenge(binding, response):
                self._spawn(self._send_register(binding, response))
                return
            if not binding.unregistering.done():
                binding.unregistering.set_result(None)
            return
        if 200 <= code < 300:
            granted = self._granted_expiry(binding, response)
            binding.registered = True
            binding.failures = 0
            low, high = self.tuning.refresh_fraction
            delay = min(
                granted * self._rng.uniform(low, high),
                max(granted - self.tuning.refresh_margin_s, 1.0),
            )
            self._schedule(binding, delay)
            self._report(binding, True, code, granted)
        elif code in (401, 407) and self._fresh_challenge(binding, response):
            dest = binding.tx.context if binding.tx is not None else None
            if isinstance(dest, tuple):
                self._challenges[dest] = (response, time.monotonic())
            self._spawn(self._send_register(binding, response))
        elif code == 423:
            minimum = response.headers.delta_seconds("min-expires")
            if minimum is None or minimum <= binding.expiry:
                self._failed(binding, code)
                return
            binding.expiry = minimum  # §10.2.8: retry with at least Min-Expires
            self._spawn(self._send_register(binding))
        else:
            self._failed(binding, code)

    def _fresh_challenge(self, binding: _Binding, response: Response) -> bool:
        """Answer a challenge unless we already answered this very nonce and the server
        did not call it stale: then the credentials are wrong, and retrying would loop."""
        try:
            challenges = DigestClient([]).challenges(response)
        except SIPSyntaxError:
            return False
        if not challenges:
            return False
        first = challenges[0]
        tx = binding.tx
        carried_credentials = tx is not None and (
            "authorization" in tx.request.headers or "proxy-authorization" in tx.request.headers
        )
        if carried_credentials and first.nonce == binding.answered_nonce and not first.stale:
            return False
        binding.answered_nonce = first.nonce
        return True

    def _granted_expiry(self, binding: _Binding, response: Response) -> int:
        """Our own binding's expiry from the 200 (§10.2.4): its Contact's expires param,
        else the Expires header, else what we asked for."""
        for value in response.headers.get_all("contact"):
            if binding.target.contact_key in value:
                for param in value.split(";")[1:]:
                    name, _, number = param.strip().partition("=")
                    if name.lower() == "expires" and number.strip().isdigit():
                        return int(number)
        expires = response.headers.delta_seconds("expires")
        return expires if expires is not None else binding.expiry

    def _failed(self, binding: _Binding, status: int) -> None:
        binding.registered = False
        binding.failures += 1
        if binding.unregistering is not None:
            if not binding.unregistering.done():
                binding.unregistering.set_result(None)
            return
        # RFC 5626 §4.5: wait-time = min(max, base * 2^failures), then a random 50-100 %.
        ceiling = min(
            self.tuning.backoff_cap_s,
            self.tuning.backoff_base_s * (2 ** min(binding.failures - 1, 16)),
        )
        self._schedule(binding, ceiling * self._rng.uniform(0.5, 1.0))
        self._report(binding, False, status, None)

    def _schedule(self, binding: _Binding, delay: float) -> None:
        if binding.refresh_handle is not None:
            binding.refresh_handle.cancel()
        loop = asyncio.get_running_loop()
        binding.refresh_handle = loop.call_later(delay, self._refresh, binding)

    def _refresh(self, binding: _Binding) -> None:
        binding.refresh_handle = None
        if self._bindings.get(binding.target.instance_id) is binding:
            self._spawn(self._send_register(binding))

    def _forget(self, binding: _Binding) -> None:
        if binding.refresh_handle is not None:
            binding.refresh_handle.cancel()
        if binding.tx is not None:
            self._drop_tx(binding, binding.tx)
        target = binding.target
        if self._bindings.get(target.instance_id) is binding:
            del self._bindings[target.instance_id]
            self._by_contact.pop(target.contact_key, None)
        self._pending_state.pop(target.instance_id, None)
        target.wipe()  # P4: the password leaves memory with the instance

    # -- state reports and keep-alives ----------------------------------------------------

    def _report(
        self, binding: _Binding, registered: bool, status: int, expires: int | None
    ) -> None:
        if self.sink is None:
            return
        self._pending_state[binding.target.instance_id] = (registered, status, expires)
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(
                self.tuning.state_flush_interval_s,
                lambda: self._spawn(self._flush_states()),
            )

    async def _flush_states(self) -> None:
        self._flush_handle = None
        if not self._pending_state or self.sink is None:
            return
        batch, self._pending_state = self._pending_state, {}
        try:
            await self.sink.registration_states(batch)
        except Exception:
            log.exception("could not record registration states", count=len(batch))

    async def _keepalive_forever(self) -> None:
        """One keep-alive per flow, not per instance: CRLF pings on streams (RFC 5626 §4.4.1)
        and an OPTIONS per UDP destination, which keeps any NAT binding open."""
        while True:
            await asyncio.sleep(self.tuning.keepalive_interval_s)
            for stream in list(self._streams.values()):
                stream.send(b"\r\n\r\n")
            if self._udp is not None:
                for dest in self._udp_destinations:
                    self._udp.sendto(self._options(dest), dest[:2])

    def _options(self, dest: tuple[str, int, str]) -> bytes:
        host, port = self.udp_address
        branch = "z9hG4bK" + secrets.token_hex(8)
        return (
            f"OPTIONS sip:{dest[0]}:{dest[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:keepalive@{host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{dest[0]}:{dest[1]}>\r\n"
            f"Call-ID: {secrets.token_hex(10)}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

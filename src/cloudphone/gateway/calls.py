"""Held INVITEs and the relay: how a call to a sleeping phone rings it, once, and quickly.

Every request a provider sends to an instance's contact, and every request an app sends on
its edge flow, comes here (through one :class:`GatewayEndpoint`, so transactions, CANCEL and
ACK matching are the SIP core's). The gateway is a stateful, record-routing proxy
(RFC 3261 §16) between the two sides, double record-routing (one entry per side, RFC 5658
style) so in-dialog requests find their way back; the app-side entry names the app's flow.

An INVITE for an instance whose app has no live flow is *held*: ``180 Ringing`` upstream with
an ``X-Push-Progress`` header, one VoIP push per device (never a second one for the same call),
and a hold timer. When the app's flow registers, the held INVITE is forwarded on it. A caller
that gives up before the app connects still owes the app its call: CallKit must see the call
the VoIP push promised, so the app gets the INVITE and at once a CANCEL when it connects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import ssl
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select

from cloudphone.core.clock import Clock
from cloudphone.core.logging import get_logger
from cloudphone.core.settings import GatewaySettings
from cloudphone.gateway.edge import AppBinding, AppEdge, GatewayEndpoint
from cloudphone.gateway.engine import RegistrationEngine, UpstreamFlow
from cloudphone.gateway.messages import IS_COMPOSING, MessageStore
from cloudphone.gateway.rfc8599 import PNS_PREFIX, pn_contact

if TYPE_CHECKING:
    from cloudphone.gateway.rfc8599 import PushProxy
from cloudphone.gateway.models import PushInstance
from cloudphone.push import (
    CallAnsweredElsewhere,
    Caller,
    CallMissed,
    Delivered,
    IncomingCall,
    Message,
    PushDispatcher,
    PushToken,
)
from cloudphone.push.notifications import Notification
from cloudphone.push.service import Platform
from cloudphone.sip import Address, Request, Response, SipURI, parse_uri
from cloudphone.sip.digest import DigestClient
from cloudphone.sip.message import make_response
from cloudphone.sip.proxy import check_max_forwards, forward_copy, pop_via, push_via
from cloudphone.sip.transaction import ServerInviteTransaction, State, Transaction
from cloudphone.sipnet.endpoint import IncomingRequest, TransactionFailed, new_branch, new_tag
from cloudphone.sipnet.transport import Flow
from cloudphone.store.db import Database

__all__ = ["CallRelay", "DeviceDirectory", "WakeTarget"]

log = get_logger(__name__)

PUSH_PROGRESS = "X-Push-Progress"
_PLATFORM: dict[str, Platform] = {"ios": "apns", "android": "fcm", "web": "webpush"}
_KEEPALIVE_S = 50.0  # a 180 this often keeps the provider's Timer C (> 3 min, §16.8) and
# its INVITE timer alive while the app wakes up


@dataclass(frozen=True)
class WakeTarget:
    """A device to wake for an instance's call, with its push address."""

    device_id: str
    app_id: str
    platform: Platform
    call_token: str | None = field(repr=False)
    notice_token: str | None = field(repr=False)


class DeviceDirectory(Protocol):
    async def devices(self, instance_id: str) -> list[WakeTarget]: ...


class DbDeviceDirectory:
    """The device behind a push instance (one instance per device, part 1)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def devices(self, instance_id: str) -> list[WakeTarget]:
        from cloudphone.accounts.models import Device

        async with self._db.transaction() as s:
            rows = (
                await s.scalars(
                    select(Device)
                    .join(PushInstance, PushInstance.device_id == Device.id)
                    .where(PushInstance.id == instance_id)
                )
            ).all()
            return [
                WakeTarget(
                    d.id,
                    d.app_id,
                    _PLATFORM.get(d.platform, "fcm"),
                    d.call_push_token,
                    d.notice_push_token,
                )
                for d in rows
            ]


class CallState(enum.Enum):
    HOLDING = "holding"  # pushed, no app flow yet
    RINGING = "ringing"  # forwarded to at least one app flow
    ANSWERED = "answered"
    CANCELLED = "cancelled"  # the caller gave up or another device answered
    ENDED = "ended"  # a final response went upstream


@dataclass(eq=False)
class _Branch:
    binding: AppBinding
    request: Request  # as sent, with our Via on top once started
    provisional: asyncio.Event = field(default_factory=asyncio.Event)
    final: int | None = None
    cancel_sent: bool = False


@dataclass(eq=False)
class HeldCall:
    incoming: IncomingRequest
    instance_id: str
    caller: Caller
    ring_until: dt.datetime
    state: CallState = CallState.HOLDING
    branches: dict[str, _Branch] = field(default_factory=dict)  # by binding token
    pushed: list[WakeTarget] = field(default_factory=list)
    owes_cancel: bool = False  # pushed devices that connect later get INVITE + CANCEL
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return self.incoming.request.call_id

    @property
    def open(self) -> bool:
        return self.state in (CallState.HOLDING, CallState.RINGING)


class CallRelay:
    def __init__(
        self,
        endpoint: GatewayEndpoint,
        engine: RegistrationEngine,
        edge: AppEdge,
        directory: DeviceDirectory,
        push: PushDispatcher,
        clock: Clock,
        *,
        hold_s: float = 120.0,
        messages: MessageStore | None = None,
        max_message_bytes: int = 16384,
        silent_flow_s: float = 2.0,
    ) -> None:
        self.endpoint = endpoint
        self.engine = engine
        self.edge = edge
        self.directory = directory
        self.push = push
        self.clock = clock
        self.hold_s = hold_s
        self.messages = messages
        self.silent_flow_s = silent_flow_s  # no provisional in this long: the app sleeps
        self.pns: PushProxy | None = None  # RFC 8599 mode, set by the composition root
        self.max_message_bytes = max_message_bytes
        self.calls: dict[tuple[str, str], HeldCall] = {}  # (instance, Call-ID)
        self._by_tx: dict[Transaction, HeldCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # For tests and operators: the latest (event, call id or message id), bounded.
        self.events: deque[tuple[str, str]] = deque(maxlen=10_000)
        endpoint.on_request = self._on_request
        endpoint.on_cancel = self._on_cancel
        engine.relay = endpoint.accept
        edge.on_bound = self._device_connected

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call relay task failed", exc_info=task.exception())

    async def start(self, settings: GatewaySettings) -> None:
        tls = None
        if settings.edge_tls_port is not None and settings.edge_tls_cert_file is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(settings.edge_tls_cert_file, settings.edge_tls_key_file)
        await self.edge.listen(
            settings.edge_host,
            udp=settings.edge_udp_port,
            tcp=settings.edge_tcp_port,
            tls=settings.edge_tls_port if tls is not None else None,
            tls_context=tls,
        )

    async def close(self) -> None:
        for call in self.calls.values():
            for timer in call.timers:
                timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.endpoint.close()

    # -- routing ----------------------------------------------------------------------------

    def _on_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        from_app = not isinstance(incoming.flow, UpstreamFlow)
        if from_app and request.method == "REGISTER":
            contact = pn_contact(request) if self.pns is not None else None
            if contact is not None and self.pns is not None:
                self._spawn(self.pns.register(incoming, contact))
            else:
                self.edge.register(incoming)
            return
        if incoming.transaction is not None:
            too_many = check_max_forwards(request)
            if too_many is not None:
                incoming.send(too_many)
                return
        if from_app and (heard := self.edge.binding_for_flow(incoming.flow)) is not None:
            heard.heard_at = self.endpoint.now()
        ours = self._pop_own_routes(request)
        if ours is not None or request.to_tag is not None or incoming.transaction is None:
            self._spawn(self._in_dialog(incoming, ours, from_app))
        elif from_app:
            self._spawn(self._outgoing(incoming))
        else:
            self._incoming(incoming)

    def _pop_own_routes(self, request: Request) -> list[SipURI] | None:
        """§16.4: remove our Route entries (both sides'); None when the top one is not ours."""
        popped: list[SipURI] = []
        while True:
            routes = request.headers.get_all("route")
            if not routes:
                break
            uri = Address.parse(routes[0]).uri
            if not (isinstance(uri, SipURI) and uri.has_param("cpgw")):
                break
            request.headers.pop_first_value("route")
            popped.append(uri)
        return popped or None

    def _record_route(
        self, out: Request, binding: AppBinding, towards_app: bool, upstream_flow: Flow
    ) -> None:
        """Double Record-Route (§16.6 step 4): the entry of the side the request came in on
        first, then the side it leaves on, so each side's route set starts with ours."""
        upstream = self._upstream_rr(upstream_flow)
        edge = self.edge.record_route(binding)
        for entry in (upstream, edge) if towards_app else (edge, upstream):
            out.headers.prepend("Record-Route", entry)

    @staticmethod
    def _upstream_rr(flow: Flow) -> str:
        """Our entry on the provider's side names the flow the dialog began on: the shared
        UDP socket, or the TCP/TLS connection (the provider reuses it, RFC 5923 style)."""
        host, port = flow.local
        if flow.transport == "UDP":
            return f"<sip:{host}:{port};lr;cpgw>"
        return f"<sip:{host}:{port};transport={flow.transport.lower()};lr;cpgw>"

    async def _in_dialog(
        self, incoming: IncomingRequest, ours: list[SipURI] | None, from_app: bool
    ) -> None:
        request = incoming.request
        flow: Flow | None = None
        out = forward_copy(request)
        if not from_app:
            token = next((u.user for u in ours or [] if u.user), None)
            binding = self.edge.by_token(token) if token else None
            if binding is None or binding.flow.closed:
                if incoming.transaction is not None:
                    incoming.respond(430 if token else 481)  # RFC 5626 §5.3: flow failed
                return
            flow = binding.flow
        else:
            # Only a registered app may send, and only to its own provider (P2: no open
            # relay): whatever the route set says next, the request leaves on the flow to
            # the instance's outbound proxy or registrar, which routes it on (§16.6 step 7).
            app = self.edge.binding_for_flow(incoming.flow)
            try:
                flow = await self._upstream_for(app.instance_id) if app is not None else None
            except OSError:
                flow = None
            if flow is None:
                if incoming.transaction is not None:
                    incoming.respond(403 if app is None else 503)
                return
        if incoming.transaction is None:  # ACK for a 2xx (§16.11): no transaction
            push_via(out, flow.transport, *self._via_host(flow), new_branch())
            try:
                flow.send(bytes(out))
            except ConnectionError:
                log.info("ack not relayed", call_id_len=len(out.call_id))
            return
        await self._proxy(incoming, out, flow)

    def _via_host(self, flow: Flow) -> tuple[str, int]:
        return self.endpoint.local_address(flow.transport) or flow.local

    async def _proxy(self, incoming: IncomingRequest, out: Request, flow: Flow) -> None:
        try:
            response = await self.endpoint.request(
                out, flow, on_provisional=lambda r: self._relay(incoming, r)
            )
        except TransactionFailed as failure:
            if _pending(incoming.transaction):
                incoming.respond(408 if failure.timeout else 503)
            return
        self._relay(incoming, response)

    @staticmethod
    def _relay(incoming: IncomingRequest, response: Response) -> None:
        """§16.7: drop our Via and pass the response back (not 100 Trying, step 5)."""
        if response.status_code == 100 or not _pending(incoming.transaction):
            return
        relayed = Response(
            response.status_code, response.reason, response.headers.copy(), response.body
        )
        if pop_via(relayed) is None:
            return
        incoming.send(relayed)

    # -- outgoing: the app calls, messages, subscribes through the gateway ------------------

    async def _outgoing(self, incoming: IncomingRequest) -> None:
        """A request from the app goes to its provider; the gateway answers the provider's
        401/407 with the stored login (§22.2, §22.3), so the app never needs it again."""
        binding = self.edge.binding_for_flow(incoming.flow)
        if binding is None:
            incoming.respond(403, "Register First")
            return
        flow = await self._upstream_for(binding.instance_id)
        if flow is None:
            incoming.respond(480)
            return
        request = incoming.request
        challenge: Response | None = None
        while True:
            out = forward_copy(request)
            if out.method in ("INVITE", "SUBSCRIBE"):
                self._record_route(out, binding, towards_app=False, upstream_flow=flow)
            if challenge is not None:
                credentials = self.engine.credentials_for(binding.instance_id)
                if credentials is None or not DigestClient(credentials).authorize(out, challenge):
                    break
            try:
                response = await self.endpoint.request(
                    out, flow, on_provisional=lambda r: self._relay(incoming, r)
                )
            except TransactionFailed as failure:
                if _pending(incoming.transaction):
                    incoming.respond(408 if failure.timeout else 503)
                return
            if response.status_code not in (401, 407) or challenge is not None:
                break
            # Same CSeq, new branch: a new transaction to the provider, while the app's
            # transaction (and its CSeq space) stays as it was.
            challenge = response
        self._relay(incoming, response)

    async def _upstream_for(self, instance_id: str) -> Flow | None:
        pns = self.pns.upstream_of(instance_id) if self.pns is not None else None
        if pns is not None:
            return await self.engine.flow_to((*pns.registrar, "udp"))
        return await self.engine.flow_towards(instance_id)

    async def _devices(self, instance_id: str) -> list[WakeTarget]:
        if instance_id.startswith(PNS_PREFIX):
            return self.pns.devices(instance_id) if self.pns is not None else []
        return await self.directory.devices(instance_id)

    # -- incoming calls ---------------------------------------------------------------------

    def _incoming(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        user = getattr(request.uri, "user", None)
        instance_id = self.engine.instance_for_contact(user or "")
        if instance_id is None and self.pns is not None:
            pns = self.pns.binding(user or "")
            if pns is not None:
                # RFC 8599 §6.2: the app is presumed suspended: push, then wait for the
                # REGISTER the push triggers before forwarding.
                instance_id = pns.instance_id
                self.edge.forget(instance_id)
        if instance_id is None:
            incoming.respond(404)
            return
        binding = self.edge.binding(instance_id)
        if request.method != "INVITE":
            if (
                binding is None
                and request.method == "MESSAGE"
                and self.messages is not None
                and not instance_id.startswith(PNS_PREFIX)
            ):
                self._spawn(self._hold_message(incoming, instance_id))
                return
            if binding is None:
                incoming.respond(480, headers=[("Retry-After", "30")])
                return
            out = forward_copy(request, parse_uri(binding.contact))
            if out.method == "SUBSCRIBE":
                self._record_route(out, binding, towards_app=True, upstream_flow=incoming.flow)
            self._spawn(self._proxy(incoming, out, binding.flow))
            return
        key = (instance_id, request.call_id)
        if key in self.calls:
            incoming.respond(482)  # the same call again on another branch: one push per call
            return
        now = self.clock.now()
        sender = request.from_
        call = HeldCall(
            incoming,
            instance_id,
            Caller(str(sender.uri), sender.display_name),
            now + dt.timedelta(seconds=self.hold_s),
        )
        self.calls[key] = call
        assert incoming.transaction is not None
        self._by_tx[incoming.transaction] = call
        self.events.append(("invite", call.call_id))
        if binding is not None:
            self._fork(call, binding)
            loop = asyncio.get_running_loop()
            call.timers.append(loop.call_later(self.silent_flow_s, self._silent_flow, call))
            return
        self._hold(call)

    def _hold(self, call: HeldCall) -> None:
        call.state = CallState.HOLDING
        call.incoming.respond(180, headers=[(PUSH_PROGRESS, "waking")])
        loop = asyncio.get_running_loop()
        call.timers.append(loop.call_later(self.hold_s, self._hold_expired, call))
        call.timers.append(loop.call_later(_KEEPALIVE_S, self._keepalive, call))
        self._spawn(self._wake(call))

    def _silent_flow(self, call: HeldCall) -> None:
        """The app's flow took the INVITE but nothing answered (a UDP binding outlives a
        suspended app; RFC 5626 §4.4 calls such a flow dead): forget it, push, hold."""
        if call.state is not CallState.RINGING:
            return
        if any(b.provisional.is_set() or b.final is not None for b in call.branches.values()):
            return
        now = self.endpoint.now()
        if any(now - b.binding.heard_at < self.silent_flow_s for b in call.branches.values()):
            return  # the app answers other traffic on this flow: slow, not gone
        self.edge.forget(call.instance_id)
        self.events.append(("silent-flow", call.call_id))
        self._hold(call)

    async def _wake(self, call: HeldCall) -> None:
        devices = [d for d in await self._devices(call.instance_id) if d.call_token]
        if not call.open:
            return
        sent_at = self.clock.now()
        notification = IncomingCall(call.caller, call.call_id, sent_at, call.ring_until)
        call.pushed = devices
        self.events.append(("push", call.call_id))
        sends = [
            self.push.send(d.app_id, d.platform, PushToken(d.call_token or ""), notification)
            for d in devices
        ]
        # One device (the usual case) is pushed in this very step: gather() would first wrap
        # it in a task and cost a loop iteration of wake latency.
        outcomes = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
        delivered = sum(1 for o in outcomes if isinstance(o, Delivered))
        progress = f"pushed; devices={len(devices)}; delivered={delivered}"
        log.info("call push sent", instance_id=call.instance_id, delivered=delivered)
        if call.state is CallState.HOLDING and _pending(call.incoming.transaction):
            if not devices or delivered == 0:
                self._final(call, 480, "No device reachable by push", missed=True)
                return
            call.incoming.respond(180, headers=[(PUSH_PROGRESS, progress)])

    def _keepalive(self, call: HeldCall) -> None:
        if call.open and _pending(call.incoming.transaction):
            call.incoming.respond(180, headers=[(PUSH_PROGRESS, "waiting for the app")])
            loop = asyncio.get_running_loop()
            call.timers.append(loop.call_later(_KEEPALIVE_S, self._keepalive, call))

    def _hold_expired(self, call: HeldCall) -> None:
        if call.state is CallState.HOLDING:
            self._final(call, 480, "No device answered the push in time", missed=True)

    def _final(self, call: HeldCall, status: int, text: str, *, missed: bool) -> None:
        """Our own final answer upstream, with a Reason (RFC 3326) saying why."""
        # A device pushed but never connected still gets INVITE + CANCEL if it connects
        # within the ring window: the VoIP push promised CallKit a call.
        call.owes_cancel = call.state is CallState.HOLDING and bool(call.pushed)
        call.state = CallState.ENDED
        if _pending(call.incoming.transaction):
            call.incoming.respond(status, headers=[("Reason", f'SIP;cause={status};text="{text}"')])
        self.events.append((f"final-{status}", call.call_id))
        self._cancel_branches(call)
        if missed:
            self._spawn(self._alert(call, CallMissed(call.call_id, call.caller)))
        self._retire(call)

    def _retire(self, call: HeldCall) -> None:
        """Forget the call once its ring window is over (a late device then gets nothing)."""
        for timer in call.timers:
            timer.cancel()
        delay = max(0.0, (call.ring_until - self.clock.now()).total_seconds())
        if not call.owes_cancel:
            delay = min(delay, 32.0)  # long enough to absorb a retransmitted INVITE

        def forget() -> None:
            self.calls.pop((call.instance_id, call.call_id), None)
            if call.incoming.transaction is not None:
                self._by_tx.pop(call.incoming.transaction, None)

        asyncio.get_running_loop().call_later(delay, forget)

    async def _alert(self, call: HeldCall, notification: Notification) -> None:
        """A visible alert (not a VoIP push: iOS would kill an app woken for no call)."""
        for device in call.pushed or await self._devices(call.instance_id):
            token = device.notice_token or (
                device.call_token if device.platform != "apns" else None
            )
            if token:
                await self.push.send(device.app_id, device.platform, PushToken(token), notification)
        self.events.append((type(notification).__name__, call.call_id))

    # -- messages for a sleeping app --------------------------------------------------------

    async def _hold_message(self, incoming: IncomingRequest, instance_id: str) -> None:
        """RFC 3428 §7: a 200 means "accepted", not "read": the gateway takes the message for
        the app, announces it with an alert push, and delivers it when the app connects."""
        assert self.messages is not None
        request = incoming.request
        content_type = (request.headers.get("content-type") or "text/plain").strip()
        if content_type.split(";")[0].strip().lower() == IS_COMPOSING:
            incoming.respond(200)  # RFC 3994 typing state: stale when the app wakes; dropped
            return
        if len(request.body) > self.max_message_bytes:
            incoming.respond(513)
            return
        sender = request.from_
        sender_text = str(Address(sender.uri, sender.display_name))
        message_id = await self.messages.store(instance_id, sender_text, content_type, request.body)
        incoming.respond(200)
        self.events.append(("message-stored", message_id))
        for device in await self.directory.devices(instance_id):
            token = device.notice_token or (
                device.call_token if device.platform != "apns" else None
            )
            if token:
                notification = Message(message_id, str(sender.uri))
                await self.push.send(device.app_id, device.platform, PushToken(token), notification)

    async def _deliver_messages(self, binding: AppBinding) -> None:
        assert self.messages is not None
        for message in await self.messages.pending(binding.instance_id):
            if self.edge.binding(binding.instance_id) is not binding:
                return  # the flow went away: the rest waits for the next connection
            request = Request(
                "MESSAGE",
                parse_uri(binding.contact),
                [
                    ("From", f"{message.sender};tag={new_tag()}"),
                    ("To", f"<{binding.contact}>"),
                    ("Call-ID", new_branch()[7:]),
                    ("CSeq", "1 MESSAGE"),
                    ("Content-Type", message.content_type),
                ],
                message.body,
            )
            try:
                response = await self.endpoint.request(request, binding.flow)
            except TransactionFailed:
                return
            if 200 <= response.status_code < 300:
                await self.messages.delivered(message.id)
                self.events.append(("message-delivered", message.id))

    # -- devices connecting -----------------------------------------------------------------

    def _device_connected(self, binding: AppBinding) -> None:
        if self.messages is not None:
            self._spawn(self._deliver_messages(binding))
        for call in list(self.calls.values()):
            if call.instance_id != binding.instance_id or binding.token in call.branches:
                continue
            if call.open:
                self._fork(call, binding)
            elif call.state in (CallState.CANCELLED, CallState.ENDED) and call.owes_cancel:
                call.owes_cancel = False  # INVITE then CANCEL, once: CallKit sees the call
                self._fork(call, binding, cancel_at_once=True)

    def _fork(self, call: HeldCall, binding: AppBinding, *, cancel_at_once: bool = False) -> None:
        original = call.incoming.request
        out = forward_copy(original, parse_uri(binding.contact))
        self._record_route(out, binding, towards_app=True, upstream_flow=call.incoming.flow)
        branch = _Branch(binding, out)
        call.branches[binding.token] = branch
        if call.state is CallState.HOLDING:
            call.state = CallState.RINGING
            # The app reacted: from now on the provider's own timers govern the ringing.
        self.events.append(("forked", call.call_id))
        self._spawn(self._run_branch(call, branch))
        if cancel_at_once:
            branch.cancel_sent = True
            self._spawn(self._send_cancel(branch, immediately=True))

    async def _run_branch(self, call: HeldCall, branch: _Branch) -> None:
        def provisional(response: Response) -> None:
            branch.provisional.set()
            branch.binding.heard_at = self.endpoint.now()
            if call.open:
                self._relay(call.incoming, response)

        try:
            response = await self.endpoint.request(
                branch.request, branch.binding.flow, on_provisional=provisional
            )
        except TransactionFailed as failure:
            branch.final = 408 if failure.timeout else 503
            self._branch_failed(call, branch, None)
            return
        branch.final = response.status_code
        branch.provisional.set()
        branch.binding.heard_at = self.endpoint.now()
        if 200 <= response.status_code < 300:
            first = call.state is not CallState.ANSWERED
            if call.open or call.state is CallState.ANSWERED:
                self._relay_final(call, response)  # every 2xx goes up (§16.7 step 5)
            if first and call.state is not CallState.CANCELLED:
                call.state = CallState.ANSWERED
                self.events.append(("answered", call.call_id))
                self._cancel_branches(call)
                for timer in call.timers:
                    timer.cancel()
                self._retire(call)
            return
        self._branch_failed(call, branch, response)

    def _branch_failed(self, call: HeldCall, branch: _Branch, response: Response | None) -> None:
        if not call.open:
            return
        if response is None and call.state is CallState.HOLDING:
            return  # a dead flow's timeout: the woken app may still connect in time
        if any(b.final is None for b in call.branches.values()):
            return  # another device may still answer
        if response is not None:
            self._relay_final(call, response)
            call.state = CallState.ENDED
            self._retire(call)
        else:
            self._final(call, 480, "The app did not answer", missed=True)

    def _relay_final(self, call: HeldCall, response: Response) -> None:
        relayed = Response(
            response.status_code, response.reason, response.headers.copy(), response.body
        )
        if pop_via(relayed) is None:
            return
        tx = call.incoming.transaction
        if tx is not None and (tx.state in (State.PROCEEDING, State.TRYING, State.ACCEPTED)):
            call.incoming.send(relayed)

    def _cancel_branches(self, call: HeldCall) -> None:
        for branch in call.branches.values():
            if branch.final is None and not branch.cancel_sent:
                branch.cancel_sent = True
                self._spawn(self._send_cancel(branch))

    async def _send_cancel(self, branch: _Branch, *, immediately: bool = False) -> None:
        """§9.1: CANCEL only after a provisional response, same branch and Request-URI."""
        try:
            await asyncio.wait_for(branch.provisional.wait(), 32.0)
        except TimeoutError:
            return
        if branch.final is not None:
            return
        out = branch.request
        cancel = Request(
            "CANCEL",
            out.uri,
            [("Route", r) for r in out.headers.get_all("route")]
            + [
                ("Max-Forwards", "70"),
                ("From", out.headers.get("from") or ""),
                ("To", out.headers.get("to") or ""),
                ("Call-ID", out.call_id),
                ("CSeq", f"{out.cseq.seq} CANCEL"),
            ],
        )
        try:
            await self.endpoint.request(cancel, branch.binding.flow, branch=out.via.branch)
        except TransactionFailed:
            log.info("cancel towards the app failed")

    def _on_cancel(self, invite: ServerInviteTransaction) -> None:
        """The caller gave up, or another of the provider's forks answered (RFC 3326
        Reason cause=200): 487 upstream, CANCEL to ringing apps, an alert for the others."""
        call = self._by_tx.get(invite)
        if call is None:
            self.endpoint.respond(invite, make_response(invite.request, 487))
            return
        cancel = self.endpoint.last_cancel
        reason = (cancel.headers.get("reason") or "") if cancel is not None else ""
        elsewhere = "cause=200" in reason.replace(" ", "")
        call.incoming.respond(487)
        was_holding = call.state is CallState.HOLDING
        call.state = CallState.CANCELLED
        self.events.append(("cancelled", call.call_id))
        self._cancel_branches(call)
        # A pushed device that has not connected yet still gets INVITE + CANCEL.
        call.owes_cancel = was_holding
        notification: Notification = (
            CallAnsweredElsewhere(call.call_id)
            if elsewhere
            else CallMissed(call.call_id, call.caller)
        )
        self._spawn(self._alert(call, notification))
        self._retire(call)


def _pending(tx: Transaction | None) -> bool:
    return tx is not None and tx.state in (State.PROCEEDING, State.TRYING)

"""The app's SIP edge: where a woken app REGISTERs with its per-instance login.

The app's REGISTER is never forwarded: the gateway keeps exactly one binding upstream per
instance (so the provider never forks to two contacts of one device) and binds the app's
*flow* to the instance instead (RFC 5626 §5.2: the registrar remembers the flow a REGISTER
came in on; requests for the instance go back on that flow, §5.3). Credentials are checked
with stateless-nonce digest (RFC 3261 §22.4); the password is looked up per REGISTER and
wiped right after the check, so no copy lives in memory between registrations (P4).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from cloudphone.core.logging import get_logger
from cloudphone.gateway.service import PushInstanceService
from cloudphone.sip import Address, Request, SIPSyntaxError
from cloudphone.sip.digest import AuthOutcome, DigestServer, parse_auth_header
from cloudphone.sip.message import Response
from cloudphone.sipnet.endpoint import Endpoint, IncomingRequest
from cloudphone.sipnet.transport import Flow

__all__ = ["AppBinding", "AppEdge", "GatewayEndpoint"]

log = get_logger(__name__)

_MIN_EXPIRES = 60
_MAX_EXPIRES = 3600
_DIALOG_GRACE_S = 12 * 3600.0  # a record-routed dialog may outlive its registration


class GatewayEndpoint(Endpoint):
    """The endpoint of both sides: app flows it listens on itself, provider flows handed
    over by the registration engine (:meth:`accept`). One transaction layer for both means
    a CANCEL, an ACK or a response finds its transaction whichever side it came from."""

    last_cancel: Request | None = None

    def accept(self, message: Request | Response, flow: Flow) -> None:
        self._receive(message, flow)

    def _answer_cancel(self, cancel: Request, tx: object) -> None:
        # on_cancel only gets the INVITE; its Reason (RFC 3326) tells "answered elsewhere".
        self.last_cancel = cancel
        super()._answer_cancel(cancel, tx)  # type: ignore[arg-type]
        self.last_cancel = None


@dataclass(eq=False)
class AppBinding:
    """One app flow bound to one push instance."""

    instance_id: str
    flow: Flow
    contact: str  # the app's Contact URI: Request-URI of what we send it
    expires_at: float
    token: str = field(default_factory=lambda: secrets.token_hex(8))  # names the flow in RR
    heard_at: float = 0.0  # last message from the app on this flow (endpoint clock)

    def live(self, now: float) -> bool:
        return now < self.expires_at and not self.flow.closed


class AppEdge:
    """REGISTER handling and the table of bound app flows."""

    def __init__(
        self,
        endpoint: GatewayEndpoint,
        instances: PushInstanceService,
        *,
        realm: str = "cloudphone",
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        on_bound: Callable[[AppBinding], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.instances = instances
        self.digest = DigestServer(realm, secrets.token_bytes(32), algorithms=algorithms)
        self.on_bound = on_bound
        self._by_instance: dict[str, AppBinding] = {}
        self._by_token: dict[str, AppBinding] = {}
        self._by_flow: dict[Flow, AppBinding] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen(
        self,
        host: str,
        *,
        udp: int | None = None,
        tcp: int | None = None,
        tls: int | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        for transport, port in (("UDP", udp), ("TCP", tcp), ("TLS", tls)):
            if port is not None:
                await self.endpoint.listen(transport, host, port, ssl_context=tls_context)

    # -- the binding table -----------------------------------------------------------------

    def binding(self, instance_id: str) -> AppBinding | None:
        binding = self._by_instance.get(instance_id)
        if binding is None or not binding.live(self.endpoint.now()):
            return None
        return binding

    def binding_for_flow(self, flow: Flow) -> AppBinding | None:
        """The instance an app flow registered (requests from it act for that instance)."""
        binding = self._by_flow.get(flow)
        if binding is None or not binding.live(self.endpoint.now()):
            return None
        return binding

    def by_token(self, token: str) -> AppBinding | None:
        return self._by_token.get(token)

    def record_route(self, binding: AppBinding) -> str:
        """Our Record-Route entry on the app's side; the user part names the flow, so an
        in-dialog request from the provider goes back on the very same connection
        (RFC 5626 §5.3 flow token)."""
        transport = binding.flow.transport
        host, port = self.endpoint.local_address(transport) or binding.flow.local
        uri = f"sip:{binding.token}@{host}:{port}"
        if transport != "UDP":
            uri += f";transport={transport.lower()}"
        return f"<{uri};lr;cpgw>"

    def bind(self, binding: AppBinding) -> None:
        """Bind a flow registered by other means (RFC 8599 mode: the provider said 200)."""
        old = self._by_instance.get(binding.instance_id)
        if old is not None and old.flow is binding.flow:
            old.contact, old.expires_at = binding.contact, binding.expires_at
            binding = old
        else:
            self._add(binding)
        if self.on_bound is not None:
            self.on_bound(binding)

    def _add(self, binding: AppBinding) -> None:
        self.forget(binding.instance_id)
        if len(self._by_token) > 2 * len(self._by_instance) + 1024:
            self._prune_tokens()
        self._by_instance[binding.instance_id] = binding
        self._by_token[binding.token] = binding
        self._by_flow[binding.flow] = binding

    def forget(self, instance_id: str) -> None:
        """The instance no longer takes new requests on this flow. Its token stays: dialogs
        already record-routed over the flow keep reaching it while it lives."""
        binding = self._by_instance.pop(instance_id, None)
        if binding is not None and self._by_flow.get(binding.flow) is binding:
            del self._by_flow[binding.flow]

    def _prune_tokens(self) -> None:
        now = self.endpoint.now()
        for token, binding in list(self._by_token.items()):
            if binding.flow.closed or now > binding.expires_at + _DIALOG_GRACE_S:
                del self._by_token[token]

    # -- REGISTER ---------------------------------------------------------------------------

    def register(self, incoming: IncomingRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._register(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        now = self.endpoint.now()
        username = _digest_username(request)
        found = await self.instances.edge_password(username) if username else None
        if found is None:
            incoming.respond(401, headers=self.digest.challenge_headers(now))
            return
        instance_id, password = found
        try:
            result = self.digest.verify(
                request, now, lambda user: password.decode() if user == username else None
            )
        finally:
            password[:] = bytes(len(password))
        if result.outcome is AuthOutcome.STALE:
            incoming.respond(401, headers=self.digest.challenge_headers(now, stale=True))
            return
        if not result.ok:
            incoming.respond(401, headers=self.digest.challenge_headers(now))
            return
        contact, expires = _contact_and_expires(request)
        if contact is None:
            # A fetch of the bindings (§10.2.3): tell the app its own, if any.
            current = self.binding(instance_id)
            headers = [] if current is None else [("Contact", f"<{current.contact}>")]
            incoming.respond(200, headers=headers)
            return
        if expires == 0:
            if (bound := self._by_instance.get(instance_id)) is not None and (
                bound.flow is incoming.flow
            ):
                self.forget(instance_id)
            incoming.respond(200)
            return
        if expires < _MIN_EXPIRES:
            incoming.respond(423, headers=[("Min-Expires", str(_MIN_EXPIRES))])
            return
        expires = min(expires, _MAX_EXPIRES)
        old = self._by_instance.get(instance_id)
        if old is not None and old.flow is incoming.flow:
            old.contact, old.expires_at = contact, now + expires
            binding = old
        else:
            binding = AppBinding(instance_id, incoming.flow, contact, now + expires)
            self._add(binding)
        incoming.respond(200, headers=[("Contact", f"<{contact}>;expires={expires}")])
        log.info("app flow bound", instance_id=instance_id, transport=incoming.flow.transport)
        if self.on_bound is not None:
            self.on_bound(binding)


def _digest_username(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    try:
        scheme, params = parse_auth_header(value)
    except SIPSyntaxError:
        return None
    return params.get("username") if scheme.lower() == "digest" else None


def _contact_and_expires(request: Request) -> tuple[str | None, int]:
    """The Contact URI and its expiry (§10.2.1.1: the contact's param, else Expires)."""
    header_expires = request.headers.delta_seconds("expires")
    value = request.headers.get("contact")
    if value is None:
        return None, 0
    if value.strip() == "*":
        return "*", 0
    address = Address.parse(value.split(",")[0])
    param = address.params.get("expires")
    if param is not None and param.isdigit():
        expires = int(param)
    else:
        expires = header_expires if header_expires is not None else _MAX_EXPIRES
    return str(address.uri), expires

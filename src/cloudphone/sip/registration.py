"""Outbound registration client (RFC 3261 §10.2, RFC 5626 §4.5 back-off), sans-IO.

The client builds REGISTER requests and reads their final responses; the caller sends each
request through a client transaction (adding the Via) and calls :meth:`on_timer` at
:attr:`next_deadline` for refreshes and retries. Randomness comes from an injected source, so
refresh and back-off times are exact under test.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from cloudphone.sip.digest import Credentials, DigestClient
from cloudphone.sip.errors import LocalProtocolError, SIPSyntaxError
from cloudphone.sip.headers import Address
from cloudphone.sip.message import Request, Response
from cloudphone.sip.uri import SipURI

__all__ = [
    "Registered",
    "RegistrationClient",
    "RegistrationConfig",
    "RegistrationFailed",
    "RegistrationState",
    "Unregistered",
]


class RegistrationState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    WAITING_RETRY = "waiting-retry"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    aor: SipURI  # To/From: the address of record (§10.2)
    registrar: SipURI  # Request-URI: the registrar's domain
    contact: SipURI  # our binding
    credentials: Credentials | None = None
    expires: int = 3600
    # refresh between these fractions of the granted expiry (randomised so that many
    # clients started together do not refresh together)
    refresh_window: tuple[float, float] = (0.5, 0.8)
    # RFC 5626 §4.5: wait = min(max_time, base_time * 2**failures), randomised 50-100 %
    retry_base: float = 30.0
    retry_max: float = 1800.0
    instance_id: str | None = None  # RFC 5626 +sip.instance, e.g. "<urn:uuid:...>"
    reg_id: int | None = None
    user_agent: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Registered:
    expires: int
    contact: Address  # our binding as the registrar reports it
    refresh_at: float


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    status_code: int  # 408 for a timeout, 503 for a transport error (§8.1.3.1)
    reason: str
    retry_at: float | None


@dataclass(frozen=True, slots=True)
class Unregistered:
    pass


RegistrationEvent = Registered | RegistrationFailed | Unregistered


class RegistrationClient:
    """One binding of one AOR at one registrar, kept alive until :meth:`unregister`."""

    def __init__(
        self,
        config: RegistrationConfig,
        *,
        random: Callable[[], float],
        call_id: str | None = None,
        from_tag: str | None = None,
        cnonce: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self._random = random
        # §10.2.4: one Call-ID for every REGISTER of this binding, CSeq increasing
        self.call_id = call_id or secrets.token_hex(12)
        self.from_tag = from_tag or secrets.token_hex(6)
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.expires = config.expires
        self.failures = 0
        self.next_deadline: float | None = None
        self.binding: Address | None = None
        self._digest: DigestClient | None = None
        if config.credentials is not None:
            self._digest = (
                DigestClient(config.credentials, cnonce=cnonce)
                if cnonce
                else DigestClient(config.credentials)
            )
        self._pending: Request | None = None
        self._auth_attempts = 0

    # -- requests ----------------------------------------------------------------------------
    def register(self, now: float) -> Request:
        """The first REGISTER (or a manual refresh)."""
        self.state = RegistrationState.REGISTERING
        self.next_deadline = None
        self._auth_attempts = 0
        return self._build(self.expires)

    def unregister(self, now: float) -> Request:
        """REGISTER with Expires: 0 for our contact (§10.2.2)."""
        self.state = RegistrationState.UNREGISTERING
        self.next_deadline = None
        self._auth_attempts = 0
        return self._build(0)

    def on_timer(self, now: float) -> Request | None:
        """Time for a refresh or a retry: returns the REGISTER to send."""
        if self.next_deadline is None or now < self.next_deadline:
            return None
        if self.state in (RegistrationState.REGISTERED, RegistrationState.WAITING_RETRY):
            return self.register(now)
        return None

    def _build(self, expires: int) -> Request:
        cfg = self.config
        self.cseq += 1
        contact = f"<{cfg.contact}>"
        if cfg.reg_id is not None:
            contact += f";reg-id={cfg.reg_id}"
        if cfg.instance_id is not None:
            contact += f';+sip.instance="{cfg.instance_id}"'
        headers = [
            ("Max-Forwards", "70"),
            ("From", f"<{cfg.aor}>;tag={self.from_tag}"),
            ("To", f"<{cfg.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", contact),
            ("Expires", str(expires)),
        ]
        if cfg.user_agent:
            headers.append(("User-Agent", cfg.user_agent))
        headers += list(cfg.extra_headers)
        request = Request("REGISTER", cfg.registrar, headers)
        self._pending = request
        return request

    # -- responses ---------------------------------------------------------------------------
    def receive_response(
        self, response: Response, now: float
    ) -> tuple[Request | None, list[RegistrationEvent]]:
        """Feed the final response of the last REGISTER: (next request to send, events)."""
        if response.status_code < 200:
            return None, []
        pending = self._pending
        if pending is None:
            raise LocalProtocolError("no REGISTER outstanding")
        code = response.status_code
        unregistering = self.state is RegistrationState.UNREGISTERING
        if code in (401, 407) and self._digest is not None and self._auth_attempts < 2:
            self._auth_attempts += 1
            retry = self._build(0 if unregistering else self.expires)
            for name in ("authorization", "proxy-authorization"):
                for value in pending.headers.get_all(name):
                    retry.headers.add(name, value)
            if self._digest.authorize(retry, response):
                return retry, []
        if code == 423 and not unregistering:
            # §10.2.8: retry at once with at least Min-Expires
            try:
                minimum = response.headers.delta_seconds("min-expires")
            except SIPSyntaxError:
                minimum = None
            if minimum is not None and minimum > self.expires:
                self.expires = minimum
                return self._rebuild_with_auth(pending), []
        if 200 <= code < 300:
            self._pending = None
            self.failures = 0
            if unregistering:
                self.state = RegistrationState.UNREGISTERED
                self.next_deadline = None
                self.binding = None
                return None, [Unregistered()]
            return None, [self._registered(response, now)]
        return None, [self._fail(code, response.reason, now, response)]

    def _rebuild_with_auth(self, previous: Request) -> Request:
        request = self._build(self.expires)
        if self._digest is not None:
            for name in ("authorization", "proxy-authorization"):
                for value in previous.headers.get_all(name):
                    request.headers.add(name, value)
        return request

    def transaction_failed(self, now: float, *, timeout: bool) -> list[RegistrationEvent]:
        """The REGISTER's transaction timed out (408) or its transport failed (503)."""
        if timeout:
            return [self._fail(408, "Request Timeout", now, None)]
        return [self._fail(503, "Transport Error", now, None)]

    def _registered(self, response: Response, now: float) -> Registered:
        granted: int | None = None
        ours: Address | None = None
        for value in response.headers.get_all("contact"):
            try:
                contact = Address.parse(value)
                if contact.uri == self.config.contact or (
                    self.config.instance_id is not None
                    and (contact.params.get("+sip.instance") or "").strip('"')
                    == self.config.instance_id
                ):
                    ours = contact
                    expires = contact.params.get("expires")
                    if expires and expires.isdigit():
                        granted = int(expires)
                    break
            except SIPSyntaxError:
                continue
        if granted is None:
            try:
                granted = response.headers.delta_seconds("expires")
            except SIPSyntaxError:
                granted = None
        if granted is None:
            granted = self.expires
        self.state = RegistrationState.REGISTERED
        self.binding = ours or Address(self.config.contact)
        low, high = self.config.refresh_window
        fraction = low + (high - low) * self._random()
        self.next_deadline = now + max(1.0, granted * fraction)
        return Registered(granted, self.binding, self.next_deadline)

    def _fail(
        self, code: int, reason: str, now: float, response: Response | None
    ) -> RegistrationFailed:
        self._pending = None
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.UNREGISTERED
            self.next_deadline = None
            return RegistrationFailed(code, reason, None)
        self.failures += 1
        cfg = self.config
        wait = min(cfg.retry_max, cfg.retry_base * 2 ** (self.failures - 1))
        wait *= 0.5 + 0.5 * self._random()
        if response is not None and code in (500, 503):
            try:
                retry_after = response.headers.delta_seconds("retry-after")
            except SIPSyntaxError:
                retry_after = None
            if retry_after is not None:
                wait = max(wait, float(retry_after))  # §20.33
        self.state = RegistrationState.WAITING_RETRY
        self.next_deadline = now + wait
        return RegistrationFailed(code, reason, self.next_deadline)

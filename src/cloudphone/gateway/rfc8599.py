"""RFC 8599 mode: the gateway as the SIP push proxy, for accounts whose app registers itself.

The app REGISTERs through the gateway with ``pn-provider``, ``pn-prid`` and ``pn-param`` in
its Contact URI (§5); the gateway holds no SIP password: the provider's 401 goes back to the
app, which answers it itself. Upstream the Contact is the gateway's own (so the provider
reaches a suspended app through us); the 200 goes back with the app's Contact and
``Feature-Caps: *;+sip.pns="…";+sip.pnsreg="…";+sip.pnspurr="…"`` (§6.1, §13). A request for
the binding is held while the app is pushed (§6.2) and forwarded when the push-triggered
REGISTER succeeds; before the binding expires the app is pushed to refresh it (§6.1,
``+sip.pnsreg``). An unknown ``pn-provider`` gets ``555 Push Notification Service Not
Supported`` (§6.1).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import select

from cloudphone.accounts.features import IncomingCallMode, effective_config
from cloudphone.accounts.models import Account, Tenant
from cloudphone.core.logging import get_logger
from cloudphone.gateway.edge import AppBinding
from cloudphone.gateway.upstream import split_hostport
from cloudphone.push import PushConfig, PushDispatcher, PushToken, RegistrationWakeUp
from cloudphone.push.service import Platform
from cloudphone.sip import Address, Request, Response, SipURI
from cloudphone.sip.proxy import forward_copy, pop_via
from cloudphone.sipnet.endpoint import IncomingRequest, TransactionFailed
from cloudphone.store.db import Database

if TYPE_CHECKING:
    from cloudphone.gateway.calls import CallRelay, WakeTarget

__all__ = ["PNS_PREFIX", "PushProxy"]

log = get_logger(__name__)

PNS_PREFIX = "pns:"  # instance ids of RFC 8599 bindings, beside push instances' ids
_PROVIDERS: dict[str, Platform] = {"apns": "apns", "fcm": "fcm", "webpush": "webpush"}
PNSREG_S = 120  # we push for a refresh this long before the binding expires (§6.1)


@dataclass(eq=False)
class PnsBinding:
    key: str  # user part of our Contact upstream
    aor: str
    provider: Platform
    prid: str = field(repr=False)  # the PNS token: personal data, kept in memory only
    app_id: str
    purr: str  # §6.1 pn-purr: names this binding in the app's long-lived dialogs
    contact: str = ""  # the app's own Contact URI (with its pn-* parameters)
    registrar: tuple[str, int] = ("127.0.0.1", 5060)  # where its requests go upstream
    refresh: asyncio.TimerHandle | None = None
    lapse: asyncio.TimerHandle | None = None

    @property
    def instance_id(self) -> str:
        return PNS_PREFIX + self.key


class PushProxy:
    def __init__(self, relay: CallRelay, db: Database, push: PushDispatcher, config: PushConfig):
        self.relay = relay
        self.db = db
        self.push = push
        self.config = config
        self.pnsreg_s = PNSREG_S
        self._by_key: dict[str, PnsBinding] = {}
        self._by_prid: dict[tuple[str, str], PnsBinding] = {}

    # -- lookups the relay uses ------------------------------------------------------------

    def binding(self, key: str) -> PnsBinding | None:
        return self._by_key.get(key)

    def devices(self, instance_id: str) -> list[WakeTarget]:
        from cloudphone.gateway.calls import WakeTarget  # calls imports this module

        binding = self._by_key.get(instance_id.removeprefix(PNS_PREFIX))
        if binding is None:
            return []
        return [WakeTarget(binding.key, binding.app_id, binding.provider, binding.prid, None)]

    def upstream_of(self, instance_id: str) -> PnsBinding | None:
        return self._by_key.get(instance_id.removeprefix(PNS_PREFIX))

    # -- REGISTER --------------------------------------------------------------------------

    async def register(self, incoming: IncomingRequest, contact: Address) -> None:
        request = incoming.request
        uri = contact.uri
        assert isinstance(uri, SipURI)
        provider = (uri.param("pn-provider") or "").lower()
        platform = _PROVIDERS.get(provider)
        app_id = self._app_for(platform, uri.param("pn-param") or "") if platform else None
        if platform is None or app_id is None:
            supported = ";".join(f'+sip.pns="{p}"' for p in self._supported())
            incoming.respond(
                555, "Push Notification Service Not Supported", headers=_caps(supported)
            )
            return
        prid = uri.param("pn-prid") or ""
        aor = str(request.to.uri)
        tenant = await self._tenant_allowing(aor)
        if tenant is None or not prid:
            incoming.respond(403, "Push Proxy Not Enabled For This Account")
            return
        binding = self._by_prid.get((aor, prid))
        if binding is None:
            binding = PnsBinding(
                "pn" + secrets.token_hex(12), aor, platform, prid, app_id, secrets.token_hex(8)
            )
        binding.contact = str(uri)
        binding.registrar = split_hostport(tenant.registrar_hosts[0], 5060)
        flow = await self.relay.engine.flow_to((*binding.registrar, "udp"))
        out = forward_copy(request)
        ours = SipURI(
            self.relay.engine.udp_address[0],
            user=binding.key,
            port=self.relay.engine.udp_address[1],
        )
        out.headers.set("Contact", str(Address(ours, params=contact.params)))
        try:
            response = await self.relay.endpoint.request(out, flow)
        except TransactionFailed as failure:
            incoming.respond(408 if failure.timeout else 503)
            return
        relayed = Response(
            response.status_code, response.reason, response.headers.copy(), response.body
        )
        if pop_via(relayed) is None:
            return
        if 200 <= response.status_code < 300:
            expires = _granted(response, binding.key) or 3600
            relayed.headers.remove("contact")
            relayed.headers.add("Contact", f"<{binding.contact}>;expires={expires}")
            for name, value in _caps(
                f'+sip.pns="{provider}";+sip.pnsreg="{self.pnsreg_s}";+sip.pnspurr="{binding.purr}"'
            ):
                relayed.headers.add(name, value)
            if expires == 0:
                self._forget(binding)
            else:
                self._remember(binding, expires)
                app = AppBinding(
                    binding.instance_id,
                    incoming.flow,
                    binding.contact,
                    self.relay.endpoint.now() + expires,
                )
                self.relay.edge.bind(app)
        incoming.send(relayed)

    def _remember(self, binding: PnsBinding, expires: int) -> None:
        self._by_key[binding.key] = binding
        self._by_prid[(binding.aor, binding.prid)] = binding
        if binding.refresh is not None:
            binding.refresh.cancel()
        loop = asyncio.get_running_loop()
        delay = max(1.0, expires - self.pnsreg_s)
        binding.refresh = loop.call_later(delay, self._push_refresh, binding)
        if binding.lapse is not None:
            binding.lapse.cancel()
        # Not refreshed in time: the provider dropped the binding, and we drop the token.
        binding.lapse = loop.call_later(expires + 5.0, self._forget, binding)

    def _forget(self, binding: PnsBinding) -> None:
        for handle in (binding.refresh, binding.lapse):
            if handle is not None:
                handle.cancel()
        self.relay.edge.forget(binding.instance_id)
        self._by_key.pop(binding.key, None)
        self._by_prid.pop((binding.aor, binding.prid), None)

    def _push_refresh(self, binding: PnsBinding) -> None:
        """§6.1: before the binding lapses, push so the app re-REGISTERs."""

        async def send() -> None:
            await self.push.send(
                binding.app_id, binding.provider, PushToken(binding.prid), RegistrationWakeUp()
            )

        self.relay._spawn(send())

    def _supported(self) -> list[str]:
        found = set()
        for app in self.config.apps.values():
            if app.apns is not None:
                found.add("apns")
            if app.fcm is not None:
                found.add("fcm")
        return sorted(found)

    def _app_for(self, platform: Platform, pn_param: str) -> str | None:
        """Which configured app a pn-param names: the FCM project, or the APNs topic
        ``<team>.<bundle>.voip`` (§12.1, §12.2)."""
        for app_id, app in self.config.apps.items():
            if platform == "fcm" and app.fcm is not None and app.fcm.project_id == pn_param:
                return app_id
            if platform == "apns" and app.apns is not None:
                bundle = pn_param.split(".", 1)[-1].removesuffix(".voip")
                if bundle == app.apns.bundle_id:
                    return app_id
        return None

    async def _tenant_allowing(self, aor: str) -> Tenant | None:
        """The tenant of the account with this AoR, if the account is in RFC 8599 mode."""
        async with self.db.transaction() as s:
            account = await s.scalar(select(Account).where(Account.address_of_record == aor))
            if account is None:
                return None
            tenant = await s.get(Tenant, account.tenant_id)
            if tenant is None or not tenant.registrar_hosts:
                return None
            config = effective_config(tenant.feature_defaults, account.feature_overrides)
            if config.incoming_call_mode is not IncomingCallMode.RFC8599:
                return None
            return tenant


def _caps(value: str) -> list[tuple[str, str]]:
    return [("Feature-Caps", f"*;{value}")]


def _granted(response: Response, key: str) -> int | None:
    for value in response.headers.get_all("contact"):
        if key in value:
            expires = Address.parse(value).params.get("expires")
            if expires is not None and expires.isdigit():
                return int(expires)
    return response.headers.delta_seconds("expires")


def pn_contact(request: Request) -> Address | None:
    """The REGISTER's Contact if it asks for RFC 8599 push (has ``pn-provider``)."""
    value = request.headers.get("contact")
    if value is None or value.strip() == "*":
        return None
    address = Address.parse(value.split(",")[0])
    uri = address.uri
    if isinstance(uri, SipURI) and uri.param("pn-provider") is not None:
        return address
    return None

"""Push instances: hand-over over HTTPS, lifetime, expiry warnings and erasure (promise P4, P5).

The order on every ending is fixed: unregister upstream (Expires: 0), then erase the
credentials from the database, from the engine's memory, and — on SQLite — from the WAL, and
leave an audit record that holds only ids, times and the reason.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudphone.accounts.credentials import Principal
from cloudphone.accounts.features import Feature, effective_config, require_feature
from cloudphone.accounts.models import Account, Device, Tenant
from cloudphone.core.clock import Clock
from cloudphone.core.crypto import Keyring
from cloudphone.core.logging import get_logger
from cloudphone.core.problems import Forbidden, NotFound
from cloudphone.gateway.models import PushInstance
from cloudphone.gateway.schemas import (
    EdgeCredentials,
    InstanceState,
    PushInstanceCreate,
    PushInstanceIssued,
    PushInstanceOut,
    Transport,
)
from cloudphone.gateway.upstream import RegistrationTarget, Upstream, parse_hop
from cloudphone.privacy.audit import record_audit
from cloudphone.push import InstanceExpiring, PushDispatcher, PushToken
from cloudphone.push.service import Platform as PushPlatform
from cloudphone.store.db import Database, new_id

log = get_logger(__name__)

_PUSH_PLATFORM: dict[str, PushPlatform] = {"ios": "apns", "android": "fcm", "web": "webpush"}


class AllowListRefused(Forbidden):
    kind, title = "destination-not-allowed", "Destination not allowed"


@dataclass(frozen=True)
class GatewayPolicy:
    """Operator-tunable timings of the instance lifecycle."""

    expiry_warnings: tuple[timedelta, ...] = (timedelta(hours=24), timedelta(hours=12))
    failing_max_age: timedelta = timedelta(hours=12)
    edge_realm: str = "cloudphone"
    # Where the app connects with its edge credentials, most secure first (from settings).
    edge_uris: tuple[str, ...] = ()


@dataclass
class SweepReport:
    ended: dict[str, str] = field(default_factory=dict)  # instance id -> reason
    warned: list[str] = field(default_factory=list)


def _context(instance_id: str, column: str) -> bytes:
    # Binds each sealed value to its row and column: a ciphertext copied elsewhere won't open.
    return f"push_instances:{instance_id}:{column}".encode()


def host_allowed(hostport: str, allowed: list[str]) -> bool:
    """``host`` on the list allows any port; ``host:port`` only that port."""
    return hostport in allowed or parse_hop(hostport).host in allowed


class PushInstanceService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        upstream: Upstream,
        push: PushDispatcher,
        policy: GatewayPolicy | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._keyring = keyring
        self._upstream = upstream
        self._push = push
        self.policy = policy or GatewayPolicy()

    # -- the app's side -------------------------------------------------------------------

    async def create(self, who: Principal, body: PushInstanceCreate) -> PushInstanceIssued:
        """Create or replace the calling device's push instance."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            device, account, tenant = await _device_account_tenant(s, who)
            config = effective_config(tenant.feature_defaults, account.feature_overrides)
            # P5: a non-push account's SIP details are never accepted, nothing is stored.
            require_feature(config, Feature.PUSH_INSTANCE)
            _check_allowed(body, account, tenant)
            previous = await s.scalar(
                select(PushInstance).where(PushInstance.device_id == device.id)
            )
        if previous is not None:
            await self.end(previous.id, "replaced")

        days = min(
            body.lifetime_days or config.push_instance_lifetime_days,
            config.push_instance_lifetime_days,
        )
        instance_id = new_id()
        edge_password = secrets.token_urlsafe(24)
        sip = body.sip
        instance = PushInstance(
            id=instance_id,
            tenant_id=tenant.id,
            account_id=account.id,
            device_id=device.id,
            contact_key=secrets.token_hex(16),
            address_of_record=sip.address_of_record,
            auth_username_sealed=self._keyring.seal(
                sip.auth_username.encode(), _context(instance_id, "auth_username")
            ),
            password_sealed=self._keyring.seal(
                sip.password.get_secret_value().encode(), _context(instance_id, "password")
            ),
            registrar=sip.registrar,
            outbound_proxy=sip.outbound_proxy,
            transport=sip.transport.value,
            requested_expiry=sip.expiry,
            edge_username=f"pi-{secrets.token_hex(12)}",
            edge_password_sealed=self._keyring.seal(
                edge_password.encode(), _context(instance_id, "edge_password")
            ),
            created_at=now,
            refreshed_at=now,
            expires_at=now + timedelta(days=days),
            warnings_sent=0,
            state=InstanceState.REGISTERING.value,
        )
        async with self._db.transaction() as s:
            stored = await s.get(Device, device.id)
            assert stored is not None
            device = stored
            device.platform = body.push.platform.value
            device.app_id = body.push.app_id
            device.call_push_token = body.push.call_push_token
            device.notice_push_token = body.push.notice_push_token
            device.push_tokens_updated_at = now
            s.add(instance)
        log.info(
            "push instance created",
            instance_id=instance_id,
            device_id=device.id,
            expires_in_days=days,
        )
        await self._upstream.register(self._target(instance))
        return PushInstanceIssued(
            instance=_out(instance),
            edge=EdgeCredentials(
                username=instance.edge_username,
                password=edge_password,
                realm=self.policy.edge_realm,
                outbound_proxies=list(self.policy.edge_uris),
            ),
        )

    async def refresh(self, who: Principal, lifetime_days: int | None = None) -> PushInstanceOut:
        """Extend the lifetime from now, never past the account's configured maximum."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            device, account, tenant = await _device_account_tenant(s, who)
            config = effective_config(tenant.feature_defaults, account.feature_overrides)
            require_feature(config, Feature.PUSH_INSTANCE)
            instance = await _own_instance(s, device.id)
            days = min(
                lifetime_days or config.push_instance_lifetime_days,
                config.push_instance_lifetime_days,
            )
            instance.refreshed_at = now
            instance.expires_at = now + timedelta(days=days)
            instance.warnings_sent = 0
            return _out(instance)

    async def disable(self, who: Principal) -> None:
        async with self._db.transaction() as s:
            device, _, _ = await _device_account_tenant(s, who)
            instance = await _own_instance(s, device.id)
        await self.end(instance.id, "disabled")

    async def get_own(self, who: Principal) -> PushInstanceOut:
        async with self._db.transaction() as s:
            device, _, _ = await _device_account_tenant(s, who)
            return _out(await _own_instance(s, device.id))

    # -- the operator's side --------------------------------------------------------------

    async def list_for_tenant(self, who: Principal | None, tenant_id: str) -> list[PushInstanceOut]:
        if who is not None and not who.may_administer(tenant_id):
            raise NotFound("no such tenant")
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(PushInstance)
                .where(PushInstance.tenant_id == tenant_id)
                .order_by(PushInstance.created_at)
            )
            return [_out(i) for i in rows.all()]

    async def list_all(self) -> list[PushInstanceOut]:
        async with self._db.transaction() as s:
            rows = await s.scalars(select(PushInstance).order_by(PushInstance.created_at))
            return [_out(i) for i in rows.all()]

    async def get(self, who: Principal | None, instance_id: str) -> PushInstanceOut:
        async with self._db.transaction() as s:
            instance = await s.get(PushInstance, instance_id)
            if instance is None or (who is not None and not who.may_administer(instance.tenant_id)):
                raise NotFound("no such push instance")
            return _out(instance)

    # -- lifecycle ------------------------------------------------------------------------

    async def end(self, instance_id: str, reason: str) -> bool:
        """Unregister upstream, then erase the credentials everywhere (P4). Idempotent."""
        async with self._db.transaction() as s:
            instance = await s.get(PushInstance, instance_id)
            if instance is None:
                return False
            tenant_id = instance.tenant_id
        await self._upstream.unregister(instance_id)
        now = self._clock.now()
        async with self._db.transaction() as s:
            result = await s.execute(delete(PushInstance).where(PushInstance.id == instance_id))
            if result.rowcount:  # type: ignore[attr-defined]
                await record_audit(
                    s,
                    action="push_instance.erased",
                    actor="gateway",
                    tenant_id=tenant_id,
                    object_type="push_instance",
                    object_id=instance_id,
                    reason=reason,
                    at=now,
                )
        await self._db.scrub_freed_pages()
        log.info("push instance ended; credentials erased", instance_id=instance_id, reason=reason)
        return True

    async def sweep(self) -> SweepReport:
        """Expire what is due, end instances failing too long, send expiry warnings."""
        now = self._clock.now()
        report = SweepReport()
        failing_cutoff = now - self.policy.failing_max_age
        async with self._db.transaction() as s:
            due = (
                await s.execute(
                    select(PushInstance.id, PushInstance.expires_at).where(
                        or_(
                            PushInstance.expires_at <= now,
                            PushInstance.failing_since <= failing_cutoff,
                        )
                    )
                )
            ).all()
        for instance_id, expires_at in due:
            reason = "expired" if expires_at <= now else "registration_failing"
            if await self.end(instance_id, reason):
                report.ended[instance_id] = reason
        report.warned = await self._send_warnings(now)
        return report

    async def _send_warnings(self, now: datetime) -> list[str]:
        warned = []
        horizon = now + max(self.policy.expiry_warnings, default=timedelta(0))
        async with self._db.transaction() as s:
            rows = (
                await s.execute(
                    select(PushInstance, Device)
                    .join(Device, Device.id == PushInstance.device_id)
                    .where(PushInstance.expires_at <= horizon)
                )
            ).all()
            pending: list[tuple[str, Device, datetime]] = []
            for instance, device in rows:
                bits = instance.warnings_sent
                for index, offset in enumerate(self.policy.expiry_warnings):
                    if now >= instance.expires_at - offset:
                        bits |= 1 << index
                if bits != instance.warnings_sent:
                    pending.append((instance.id, device, instance.expires_at))
                    instance.warnings_sent = bits
        for instance_id, device, expires_at in pending:
            token = device.notice_push_token or (
                device.call_push_token if device.platform != "ios" else None
            )
            if token is None:
                continue  # an iOS VoIP token may carry only calls (PushKit rule)
            await self._push.send(
                device.app_id,
                _PUSH_PLATFORM[device.platform],
                PushToken(token),
                InstanceExpiring(expires_at=expires_at),
            )
            warned.append(instance_id)
        return warned

    async def end_for_devices(self, device_ids: list[str], reason: str) -> list[str]:
        """End the push instances of these devices (e.g. their call token died: the instance
        could not wake its phone any more)."""
        async with self._db.transaction() as s:
            ids = (
                await s.scalars(
                    select(PushInstance.id).where(PushInstance.device_id.in_(device_ids))
                )
            ).all()
        return [i for i in ids if await self.end(i, reason)]

    async def live_targets(self) -> list[RegistrationTarget]:
        """Every live instance with its credentials opened, for the engine at start-up."""
        async with self._db.transaction() as s:
            rows = (await s.scalars(select(PushInstance).order_by(PushInstance.created_at))).all()
        return [self._target(i) for i in rows]

    async def registration_states(
        self, states: dict[str, tuple[bool, int | None, int | None]]
    ) -> None:
        """Record what the provider said, for many instances in one transaction."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            rows = await s.scalars(select(PushInstance).where(PushInstance.id.in_(list(states))))
            for instance in rows.all():
                registered, status, expires = states[instance.id]
                instance.last_sip_status = status
                if registered:
                    instance.state = InstanceState.REGISTERED.value
                    instance.failing_since = None
                    instance.registered_until = now + timedelta(seconds=expires or 0)
                else:
                    instance.state = InstanceState.FAILING.value
                    instance.failing_since = instance.failing_since or now

    async def edge_password(self, edge_username: str) -> tuple[str, bytearray] | None:
        """(instance id, password) for the gateway's SIP side to check an app's digest."""
        async with self._db.transaction() as s:
            instance = await s.scalar(
                select(PushInstance).where(PushInstance.edge_username == edge_username)
            )
        if instance is None:
            return None
        return instance.id, bytearray(
            self._keyring.open(
                instance.edge_password_sealed, _context(instance.id, "edge_password")
            )
        )

    def _target(self, instance: PushInstance) -> RegistrationTarget:
        return RegistrationTarget(
            instance_id=instance.id,
            contact_key=instance.contact_key,
            address_of_record=instance.address_of_record,
            registrar=instance.registrar,
            outbound_proxy=instance.outbound_proxy,
            transport=instance.transport,
            expiry=instance.requested_expiry,
            auth_username=bytearray(
                self._keyring.open(
                    instance.auth_username_sealed, _context(instance.id, "auth_username")
                )
            ),
            password=bytearray(
                self._keyring.open(instance.password_sealed, _context(instance.id, "password"))
            ),
        )


async def _device_account_tenant(s: AsyncSession, who: Principal) -> tuple[Device, Account, Tenant]:
    if who.device_id is None:
        raise Forbidden("this operation is for a device credential")
    device = await s.get(Device, who.device_id)
    if device is None:
        raise NotFound("no such device")
    account = await s.get(Account, device.account_id)
    tenant = await s.get(Tenant, device.tenant_id)
    assert account is not None and tenant is not None
    return device, account, tenant


async def _own_instance(s: AsyncSession, device_id: str) -> PushInstance:
    instance = await s.scalar(select(PushInstance).where(PushInstance.device_id == device_id))
    if instance is None:
        raise NotFound("this device has no push instance")
    return instance


def _check_allowed(body: PushInstanceCreate, account: Account, tenant: Tenant) -> None:
    """The gateway must never become a tool to register at, or flood, arbitrary hosts."""
    sip = body.sip
    if sip.address_of_record.lower() != account.address_of_record.lower():
        raise AllowListRefused("the address of record is not this device's account")
    domain = sip.address_of_record.rsplit("@", 1)[1].lower()
    if domain not in tenant.sip_domains:
        raise AllowListRefused(f"the SIP domain {domain!r} is not on the tenant's allow-list")
    for hop in filter(None, (sip.registrar, sip.outbound_proxy)):
        if not host_allowed(hop, tenant.registrar_hosts):
            raise AllowListRefused(f"the host {hop!r} is not on the tenant's registrar allow-list")


def _out(i: PushInstance) -> PushInstanceOut:
    return PushInstanceOut(
        id=i.id,
        device_id=i.device_id,
        account_id=i.account_id,
        state=InstanceState(i.state),
        last_sip_status=i.last_sip_status,
        registrar=i.registrar,
        transport=Transport(i.transport),
        created_at=i.created_at,
        expires_at=i.expires_at,
        registered_until=i.registered_until,
    )

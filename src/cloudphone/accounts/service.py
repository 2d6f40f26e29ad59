"""The accounts domain service. Routers and the CLI call this; it alone reaches the tables.

Every method takes the calling ``Principal`` and enforces tenant isolation itself: an object
of another tenant is reported as not found, so its existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cloudphone.accounts import credentials
from cloudphone.accounts.credentials import CredentialKind, Principal
from cloudphone.accounts.features import (
    Feature,
    FeatureConfig,
    FeatureOverrides,
    effective_config,
    require_feature,
)
from cloudphone.accounts.models import Account, Device, Enrollment, OperatorToken, Tenant
from cloudphone.accounts.schemas import (
    AccountCreate,
    AccountOut,
    AccountUpdate,
    DeviceCreate,
    DeviceIssued,
    DeviceOut,
    EnrollmentClaim,
    EnrollmentIssued,
    OperatorTokenIssued,
    Platform,
    ProvisioningDocument,
    PushTokens,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from cloudphone.core.clock import Clock
from cloudphone.core.logging import get_logger
from cloudphone.core.problems import Conflict, Forbidden, NotFound, Unauthorized
from cloudphone.privacy.audit import record_audit
from cloudphone.store.db import Database

log = get_logger(__name__)

ENROLLMENT_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class PushTokenHolder:
    device_id: str
    tokens_updated_at: datetime | None
    as_call_token: bool


class AccountsService:
    def __init__(self, db: Database, clock: Clock, public_url: str) -> None:
        self._db = db
        self._clock = clock
        self._public_url = public_url.rstrip("/")

    # -- authentication -------------------------------------------------------------------

    async def authenticate(self, bearer: str) -> Principal:
        presented = credentials.parse_bearer(bearer)
        if presented is None or presented.kind is CredentialKind.ENROLLMENT:
            raise Unauthorized("malformed or unknown credential")
        async with self._db.transaction() as s:
            if presented.kind is CredentialKind.OPERATOR:
                token = await s.get(OperatorToken, presented.id)
                if token and token.revoked_at is None and presented.matches(token.secret_hash):
                    return Principal(CredentialKind.OPERATOR, tenant_id=token.tenant_id)
            else:
                device = await s.get(Device, presented.id)
                if device and presented.matches(device.credential_hash):
                    device.last_seen_at = self._clock.now()
                    return Principal(
                        CredentialKind.DEVICE,
                        tenant_id=device.tenant_id,
                        account_id=device.account_id,
                        device_id=device.id,
                    )
        raise Unauthorized("malformed or unknown credential")

    async def issue_operator_token(
        self, principal: Principal | None, tenant_id: str | None, label: str = ""
    ) -> OperatorTokenIssued:
        """``principal=None`` is the local CLI, which has the machine's trust."""
        if principal is not None:
            if tenant_id is None and not principal.is_global_operator:
                raise Forbidden("only a global operator may issue global tokens")
            if tenant_id is not None and not principal.may_administer(tenant_id):
                raise NotFound("no such tenant")
        issued = credentials.issue(CredentialKind.OPERATOR)
        async with self._db.transaction() as s:
            if tenant_id is not None and await s.get(Tenant, tenant_id) is None:
                raise NotFound("no such tenant")
            s.add(
                OperatorToken(
                    id=issued.id,
                    tenant_id=tenant_id,
                    label=label,
                    secret_hash=issued.secret_hash,
                    created_at=self._clock.now(),
                )
            )
        log.info("operator token issued", token_id=issued.id, tenant_id=tenant_id)
        return OperatorTokenIssued(id=issued.id, tenant_id=tenant_id, token=issued.bearer)

    # -- tenants --------------------------------------------------------------------------

    async def create_tenant(self, principal: Principal | None, body: TenantCreate) -> TenantOut:
        if principal is not None and not principal.is_global_operator:
            raise Forbidden("only a global operator may create tenants")
        tenant = Tenant(
            name=body.name,
            sip_domains=body.sip_domains,
            registrar_hosts=body.registrar_hosts,
            feature_defaults=body.feature_defaults.model_dump(mode="json"),
            created_at=self._clock.now(),
        )
        try:
            async with self._db.transaction() as s:
                s.add(tenant)
        except IntegrityError as exc:
            raise Conflict(f"a tenant named {body.name!r} exists") from exc
        log.info("tenant created", tenant_id=tenant.id)
        return _tenant_out(tenant)

    async def list_tenants(self, principal: Principal | None) -> list[TenantOut]:
        _require_operator(principal)
        query = select(Tenant).order_by(Tenant.created_at, Tenant.id)
        if principal is not None and principal.tenant_id is not None:
            query = query.where(Tenant.id == principal.tenant_id)
        async with self._db.transaction() as s:
            return [_tenant_out(t) for t in (await s.scalars(query)).all()]

    async def get_tenant(self, principal: Principal | None, tenant_id: str) -> TenantOut:
        async with self._db.transaction() as s:
            return _tenant_out(await _tenant(s, principal, tenant_id))

    async def update_tenant(
        self, principal: Principal | None, tenant_id: str, body: TenantUpdate
    ) -> TenantOut:
        async with self._db.transaction() as s:
            tenant = await _tenant(s, principal, tenant_id)
            if body.name is not None:
                tenant.name = body.name
            if body.sip_domains is not None:
                tenant.sip_domains = body.sip_domains
            if body.registrar_hosts is not None:
                tenant.registrar_hosts = body.registrar_hosts
            if body.feature_defaults is not None:
                tenant.feature_defaults = body.feature_defaults.model_dump(mode="json")
            return _tenant_out(tenant)

    async def delete_tenant(self, principal: Principal | None, tenant_id: str) -> None:
        if principal is not None and not principal.is_global_operator:
            raise Forbidden("only a global operator may delete tenants")
        async with self._db.transaction() as s:
            await s.delete(await _tenant(s, principal, tenant_id))
        log.info("tenant deleted", tenant_id=tenant_id)

    # -- accounts -------------------------------------------------------------------------

    async def create_account(
        self, principal: Principal | None, tenant_id: str, body: AccountCreate
    ) -> AccountOut:
        try:
            async with self._db.transaction() as s:
                tenant = await _tenant(s, principal, tenant_id)
                domain = body.address_of_record.rsplit("@", 1)[1].lower()
                if tenant.sip_domains and domain not in tenant.sip_domains:
                    raise Forbidden(f"the domain {domain!r} is not one of the tenant's SIP domains")
                account = Account(
                    tenant_id=tenant.id,
                    address_of_record=body.address_of_record,
                    display_name=body.display_name,
                    notice_email=body.notice_email,
                    feature_overrides=body.feature_overrides.set_fields(),
                    created_at=self._clock.now(),
                )
                effective_config(tenant.feature_defaults, account.feature_overrides)
                s.add(account)
                await s.flush()
                out = _account_out(account, tenant)
        except IntegrityError as exc:
            raise Conflict("an account with this address of record exists") from exc
        log.info("account created", account_id=out.id, tenant_id=tenant_id)
        return out

    async def list_accounts(self, principal: Principal | None, tenant_id: str) -> list[AccountOut]:
        async with self._db.transaction() as s:
            tenant = await _tenant(s, principal, tenant_id)
            rows = await s.scalars(
                select(Account).where(Account.tenant_id == tenant.id).order_by(Account.created_at)
            )
            await self._audit_read(s, principal, tenant.id, "tenant_accounts", tenant.id)
            return [_account_out(a, tenant) for a in rows.all()]

    async def get_account(self, principal: Principal | None, account_id: str) -> AccountOut:
        async with self._db.transaction() as s:
            account = await _account(s, principal, account_id)
            await self._audit_read(s, principal, account.tenant_id, "account", account.id)
            return _account_out(account, await _tenant_of(s, account))

    async def update_account(
        self, principal: Principal | None, account_id: str, body: AccountUpdate
    ) -> AccountOut:
        async with self._db.transaction() as s:
            account = await _account(s, principal, account_id)
            tenant = await _tenant_of(s, account)
            if body.display_name is not None:
                account.display_name = body.display_name
            if body.notice_email is not None:
                account.notice_email = body.notice_email
            if body.feature_overrides is not None:
                overrides = body.feature_overrides.set_fields()
                effective_config(tenant.feature_defaults, overrides)
                account.feature_overrides = overrides
            return _account_out(account, tenant)

    async def delete_account(self, principal: Principal | None, account_id: str) -> None:
        async with self._db.transaction() as s:
            await s.delete(await _account(s, principal, account_id))
        log.info("account deleted", account_id=account_id)

    async def _audit_read(
        self,
        s: AsyncSession,
        principal: Principal | None,
        tenant_id: str,
        object_type: str,
        object_id: str,
    ) -> None:
        """An operator (or the local CLI) reading personal data leaves an audit entry; the
        account's own device reading itself does not."""
        if principal is not None and not principal.is_operator:
            return
        await record_audit(
            s,
            action="personal_data.read",
            actor="cli" if principal is None else "operator",
            tenant_id=tenant_id,
            object_type=object_type,
            object_id=object_id,
            at=self._clock.now(),
        )

    async def features_of(self, account_id: str) -> FeatureConfig:
        """The effective configuration, for other domains' gate checks."""
        async with self._db.transaction() as s:
            account = await s.get(Account, account_id)
            if account is None:
                raise NotFound("no such account")
            return effective_config(
                (await _tenant_of(s, account)).feature_defaults, account.feature_overrides
            )

    # -- devices --------------------------------------------------------------------------

    async def create_device(
        self, principal: Principal | None, account_id: str, body: DeviceCreate
    ) -> DeviceIssued:
        async with self._db.transaction() as s:
            account = await _account(s, principal, account_id)
            return self._add_device(s, account, body.platform.value, body.app_id)

    def _add_device(
        self, s: AsyncSession, account: Account, platform: str, app_id: str
    ) -> DeviceIssued:
        issued = credentials.issue(CredentialKind.DEVICE)
        device = Device(
            id=issued.id,
            account_id=account.id,
            tenant_id=account.tenant_id,
            platform=platform,
            app_id=app_id,
            credential_hash=issued.secret_hash,
            created_at=self._clock.now(),
        )
        s.add(device)
        log.info("device enrolled", device_id=device.id, account_id=account.id)
        return DeviceIssued(device=_device_out(device), credential=issued.bearer)

    async def list_devices(self, principal: Principal | None, account_id: str) -> list[DeviceOut]:
        async with self._db.transaction() as s:
            account = await _account(s, principal, account_id)
            rows = await s.scalars(
                select(Device).where(Device.account_id == account.id).order_by(Device.created_at)
            )
            return [_device_out(d) for d in rows.all()]

    async def get_device(self, principal: Principal | None, device_id: str) -> DeviceOut:
        async with self._db.transaction() as s:
            return _device_out(await _device(s, principal, device_id))

    async def delete_device(self, principal: Principal | None, device_id: str) -> None:
        async with self._db.transaction() as s:
            await s.delete(await _device(s, principal, device_id))
        log.info("device removed", device_id=device_id)

    async def set_push_tokens(self, principal: Principal, body: PushTokens) -> DeviceOut:
        """Push tokens are personal data needed only for push: gated on the push feature (P1)."""
        async with self._db.transaction() as s:
            device = await _device(s, principal, principal.device_id or "")
            account = await s.get(Account, device.account_id)
            assert account is not None
            config = effective_config(
                (await _tenant_of(s, account)).feature_defaults, account.feature_overrides
            )
            if body.call_push_token is not None or body.notice_push_token is not None:
                require_feature(config, Feature.PUSH)
            device.call_push_token = body.call_push_token
            device.notice_push_token = body.notice_push_token
            device.push_tokens_updated_at = self._clock.now()
            return _device_out(device)

    async def devices_holding_push_token(self, token: str) -> list[PushTokenHolder]:
        """Which devices hold ``token`` (as call or notice token), and since when."""
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(Device).where(
                    (Device.call_push_token == token) | (Device.notice_push_token == token)
                )
            )
            return [
                PushTokenHolder(d.id, d.push_tokens_updated_at, d.call_push_token == token)
                for d in rows.all()
            ]

    async def clear_push_token(self, token: str, device_ids: list[str]) -> int:
        """A push service said this token is dead: forget it on these devices."""
        cleared = 0
        async with self._db.transaction() as s:
            for device_id in device_ids:
                device = await s.get(Device, device_id)
                if device is None:
                    continue
                for column in ("call_push_token", "notice_push_token"):
                    if getattr(device, column) == token:
                        setattr(device, column, None)
                        cleared += 1
        return cleared

    # -- enrollment and provisioning ------------------------------------------------------

    async def create_enrollment(
        self, principal: Principal | None, account_id: str
    ) -> EnrollmentIssued:
        issued = credentials.issue(CredentialKind.ENROLLMENT)
        expires = self._clock.now() + ENROLLMENT_LIFETIME
        async with self._db.transaction() as s:
            account = await _account(s, principal, account_id)
            s.add(
                Enrollment(
                    id=issued.id,
                    account_id=account.id,
                    tenant_id=account.tenant_id,
                    code_hash=issued.secret_hash,
                    expires_at=expires,
                )
            )
        payload = "cloudphone://provision?" + urlencode(
            {"server": self._public_url, "code": issued.bearer}
        )
        return EnrollmentIssued(
            enrollment_id=issued.id, code=issued.bearer, expires_at=expires, qr_payload=payload
        )

    async def claim_enrollment(self, body: EnrollmentClaim) -> DeviceIssued:
        presented = credentials.parse_bearer(body.code)
        if presented is None or presented.kind is not CredentialKind.ENROLLMENT:
            raise Unauthorized("unknown or expired enrollment code")
        async with self._db.transaction() as s:
            enrollment = await s.get(Enrollment, presented.id, with_for_update=True)
            if (
                enrollment is None
                or enrollment.used_at is not None
                or enrollment.expires_at <= self._clock.now()
                or not presented.matches(enrollment.code_hash)
            ):
                raise Unauthorized("unknown or expired enrollment code")
            enrollment.used_at = self._clock.now()
            account = await s.get(Account, enrollment.account_id)
            assert account is not None
            return self._add_device(s, account, body.platform.value, body.app_id)

    async def provisioning(self, principal: Principal) -> ProvisioningDocument:
        async with self._db.transaction() as s:
            device = await _device(s, principal, principal.device_id or "")
            account = await s.get(Account, device.account_id)
            assert account is not None
            tenant = await _tenant_of(s, account)
            return ProvisioningDocument(
                account_id=account.id,
                device_id=device.id,
                address_of_record=account.address_of_record,
                display_name=account.display_name,
                sip_domains=tenant.sip_domains,
                features=effective_config(tenant.feature_defaults, account.feature_overrides),
                api_base_url=self._public_url,
            )


# -- lookups that enforce isolation -----------------------------------------------------------


def _require_operator(principal: Principal | None) -> None:
    if principal is not None and not principal.is_operator:
        raise Forbidden("an operator token is required")


async def _tenant(s: AsyncSession, principal: Principal | None, tenant_id: str) -> Tenant:
    _require_operator(principal)
    tenant = await s.get(Tenant, tenant_id)
    if tenant is None or (principal is not None and not principal.may_administer(tenant.id)):
        raise NotFound("no such tenant")
    return tenant


async def _tenant_of(s: AsyncSession, account: Account) -> Tenant:
    tenant = await s.get(Tenant, account.tenant_id)
    assert tenant is not None
    return tenant


async def _account(s: AsyncSession, principal: Principal | None, account_id: str) -> Account:
    account = await s.get(Account, account_id)
    if account is None or not _may_see(principal, account.tenant_id, account.id, None):
        raise NotFound("no such account")
    return account


async def _device(s: AsyncSession, principal: Principal | None, device_id: str) -> Device:
    device = await s.get(Device, device_id)
    if device is None or not _may_see(principal, device.tenant_id, device.account_id, device.id):
        raise NotFound("no such device")
    return device


def _may_see(
    principal: Principal | None, tenant_id: str, account_id: str, device_id: str | None
) -> bool:
    if principal is None:
        return True
    if principal.is_operator:
        return principal.may_administer(tenant_id)
    # A device sees its own account, and itself; never a sibling device's record.
    if device_id is not None:
        return principal.device_id == device_id
    return principal.account_id == account_id


def _tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(
        id=t.id,
        name=t.name,
        sip_domains=t.sip_domains,
        registrar_hosts=t.registrar_hosts,
        feature_defaults=FeatureConfig.model_validate(t.feature_defaults),
        created_at=t.created_at,
    )


def _account_out(a: Account, t: Tenant) -> AccountOut:
    overrides: dict[str, Any] = a.feature_overrides
    return AccountOut(
        id=a.id,
        tenant_id=a.tenant_id,
        address_of_record=a.address_of_record,
        display_name=a.display_name,
        notice_email=a.notice_email,
        feature_overrides=FeatureOverrides.model_validate(overrides),
        features=effective_config(t.feature_defaults, overrides),
        created_at=a.created_at,
    )


def _device_out(d: Device) -> DeviceOut:
    return DeviceOut(
        id=d.id,
        account_id=d.account_id,
        tenant_id=d.tenant_id,
        platform=Platform(d.platform),
        app_id=d.app_id,
        has_call_push_token=d.call_push_token is not None,
        has_notice_push_token=d.notice_push_token is not None,
        created_at=d.created_at,
    )

"""Database tables of the accounts domain, each column declared in the data map."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloudphone.core.datamap import not_personal, personal
from cloudphone.privacy.declarations import retained
from cloudphone.privacy.sealing import SealedField, sealed
from cloudphone.store.db import Base, UTCDateTime, new_id


class Tenant(Base):
    """A provider: its SIP domains, the registrars the gateway may contact, feature defaults."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    name: Mapped[str] = mapped_column(String(200), unique=True, info=not_personal())
    sip_domains: Mapped[list[str]] = mapped_column(JSON, default=list, info=not_personal())
    registrar_hosts: Mapped[list[str]] = mapped_column(JSON, default=list, info=not_personal())
    feature_defaults: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, info=not_personal()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())

    accounts: Mapped[list[Account]] = relationship(
        back_populates="tenant", cascade="all, delete-orphan", passive_deletes=True
    )


class Account(Base):
    """A user's SIP account at the tenant. The SIP password is never stored here.

    Its personal fields are sealed under the account's subject key (P19: erasure shreds them,
    backups included); the address of record is found, and kept unique per tenant, through
    its keyed blind index ``aor_index``.
    """

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("tenant_id", "aor_index"),)

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    _address_of_record: Mapped[str] = mapped_column(
        "address_of_record",
        Text,
        info=personal(
            "user.account.username",
            purpose="service",
            retention="account",
            subject_key=True,
            encrypted=True,
        )
        | sealed(),
    )
    aor_index: Mapped[str] = mapped_column(
        String(64),
        info=personal("user.account.username", purpose="service", retention="account"),
    )
    _display_name: Mapped[str] = mapped_column(
        "display_name",
        Text,
        default="",
        info=personal("user.name", purpose="service", retention="account", encrypted=True)
        | sealed(),
    )
    _notice_email: Mapped[str | None] = mapped_column(
        "notice_email",
        Text,
        nullable=True,
        info=personal("user.contact.email", purpose="service", retention="account", encrypted=True)
        | sealed(),
    )
    address_of_record: SealedField[str] = SealedField(
        "_address_of_record", subject_attr="id", index_attr="aor_index"
    )
    display_name: SealedField[str] = SealedField("_display_name", subject_attr="id")
    # Where policy notices are e-mailed (P18); optional.
    notice_email: SealedField[str | None] = SealedField("_notice_email", subject_attr="id")
    feature_overrides: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, info=not_personal()
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())

    tenant: Mapped[Tenant] = relationship(back_populates="accounts")
    devices: Mapped[list[Device]] = relationship(
        back_populates="account", cascade="all, delete-orphan", passive_deletes=True
    )


class Device(Base):
    """One installation of the app. Its credential is stored only as a hash."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    platform: Mapped[str] = mapped_column(String(16), info=not_personal())
    app_id: Mapped[str] = mapped_column(String(200), info=not_personal())
    _call_push_token: Mapped[str | None] = mapped_column(
        "call_push_token",
        Text,
        nullable=True,
        info=personal("user.device.device_id", purpose="push", retention="device", encrypted=True)
        | sealed(),
    )
    _notice_push_token: Mapped[str | None] = mapped_column(
        "notice_push_token",
        Text,
        nullable=True,
        info=personal("user.device.device_id", purpose="push", retention="device", encrypted=True)
        | sealed(),
    )
    # Blind indexes: a push service reports a dead token by value (see SealedField).
    call_push_token_index: Mapped[str | None] = mapped_column(
        String(64),
        nullable=True,
        index=True,
        info=personal("user.device.device_id", purpose="push", retention="device"),
    )
    notice_push_token_index: Mapped[str | None] = mapped_column(
        String(64),
        nullable=True,
        index=True,
        info=personal("user.device.device_id", purpose="push", retention="device"),
    )
    call_push_token: SealedField[str | None] = SealedField(
        "_call_push_token", subject_attr="account_id", index_attr="call_push_token_index"
    )
    notice_push_token: SealedField[str | None] = SealedField(
        "_notice_push_token", subject_attr="account_id", index_attr="notice_push_token_index"
    )
    # When the tokens were last set: a token reported dead before this moment was
    # re-registered since, so it stays (APNs 410 timestamp rule).
    push_tokens_updated_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    credential_hash: Mapped[str] = mapped_column(String(64), info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    last_seen_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )

    account: Mapped[Account] = relationship(back_populates="devices")


class OperatorToken(Base):
    """An operator's API token: global (tenant_id NULL) or confined to one tenant."""

    __tablename__ = "operator_tokens"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True, info=not_personal()
    )
    label: Mapped[str] = mapped_column(String(200), default="", info=not_personal())
    secret_hash: Mapped[str] = mapped_column(String(64), info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    revoked_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )


class Enrollment(Base):
    """A one-time onboarding code (the QR the app scans) that becomes a device credential."""

    __tablename__ = "enrollments"
    # No personal column, yet the row is erased once used or expired (data map rule).
    __table_args__ = ({"info": retained("enrollment")},)

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    code_hash: Mapped[str] = mapped_column(String(64), info=not_personal())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    used_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )

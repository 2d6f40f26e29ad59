"""Database tables of the accounts domain, each column declared in the data map."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cloudphone.core.datamap import not_personal, personal
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
    """A user's SIP account at the tenant. The SIP password is never stored here."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("tenant_id", "address_of_record"),)

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    address_of_record: Mapped[str] = mapped_column(
        String(255),
        info=personal(
            "user.account.username", purpose="service", retention="account", subject_key=True
        ),
    )
    display_name: Mapped[str] = mapped_column(
        String(200), default="", info=personal("user.name", purpose="service", retention="account")
    )
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
    call_push_token: Mapped[str | None] = mapped_column(
        String(4096),
        nullable=True,
        info=personal("user.device.device_id", purpose="push", retention="device"),
    )
    notice_push_token: Mapped[str | None] = mapped_column(
        String(4096),
        nullable=True,
        info=personal("user.device.device_id", purpose="push", retention="device"),
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

"""The push instance table. Credentials are sealed (envelope encryption) and erased with the row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal, personal
from cloudphone.privacy.sealing import SealedField, sealed
from cloudphone.store.db import Base, UTCDateTime


class PushInstance(Base):
    """One device's hand-over of its SIP account to the gateway.

    ``contact_key`` is the user part of the Contact the gateway registers upstream, so a request
    arriving for it finds its instance with one dictionary lookup.
    """

    __tablename__ = "push_instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, info=not_personal())
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), unique=True, info=not_personal()
    )
    contact_key: Mapped[str] = mapped_column(String(32), unique=True, info=not_personal())
    # Sealed under the account's data key like the account's own copy (crypto-shredding, P19).
    _address_of_record: Mapped[str] = mapped_column(
        "address_of_record",
        Text,
        info=personal(
            "user.account.username", purpose="push", retention="push_instance", encrypted=True
        )
        | sealed(),
    )
    address_of_record: SealedField[str] = SealedField(
        "_address_of_record", subject_attr="account_id"
    )
    auth_username_sealed: Mapped[str] = mapped_column(
        String(1024),
        info=personal(
            "user.authorization.credentials",
            purpose="push",
            retention="push_instance",
            encrypted=True,
        ),
    )
    password_sealed: Mapped[str] = mapped_column(
        String(1024),
        info=personal(
            "user.authorization.credentials",
            purpose="push",
            retention="push_instance",
            encrypted=True,
        ),
    )
    registrar: Mapped[str] = mapped_column(String(300), info=not_personal())
    outbound_proxy: Mapped[str | None] = mapped_column(
        String(300), nullable=True, info=not_personal()
    )
    transport: Mapped[str] = mapped_column(String(8), info=not_personal())
    requested_expiry: Mapped[int] = mapped_column(Integer, info=not_personal())
    edge_username: Mapped[str] = mapped_column(String(64), unique=True, info=not_personal())
    edge_password_sealed: Mapped[str] = mapped_column(String(1024), info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True, info=not_personal())
    warnings_sent: Mapped[int] = mapped_column(Integer, default=0, info=not_personal())
    state: Mapped[str] = mapped_column(String(16), info=not_personal())
    last_sip_status: Mapped[int | None] = mapped_column(Integer, nullable=True, info=not_personal())
    registered_until: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    failing_since: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )

"""The disclosure log (P17): every disclosure to an authority, with its legal basis and scope."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal
from cloudphone.store.db import Base, UTCDateTime, new_id


class Disclosure(Base):
    """``authority``, ``legal_basis`` and ``scope`` describe the order, not the person:
    the people concerned are listed only by account id."""

    __tablename__ = "disclosures"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    authority: Mapped[str] = mapped_column(String(200), info=not_personal())
    legal_basis: Mapped[str] = mapped_column(String(500), info=not_personal())
    scope: Mapped[str] = mapped_column(Text, info=not_personal())
    account_ids: Mapped[list[str]] = mapped_column(JSON, default=list, info=not_personal())
    disclosed_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    recorded_by: Mapped[str] = mapped_column(String(64), info=not_personal())
    notified_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )

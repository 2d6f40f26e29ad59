"""Legal holds: while one is active on a subject, neither the purge nor an erasure touches the
subject's data (P15: "if there are no pending requests, orders, or court orders")."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal
from cloudphone.store.db import Base, UTCDateTime, new_id


class LegalHold(Base):
    """``reason`` is the order's reference, naming no one."""

    __tablename__ = "legal_holds"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    # A plain id, no foreign key: the hold is the record of why data was kept.
    account_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    reason: Mapped[str] = mapped_column(String(500), info=not_personal())
    placed_by: Mapped[str] = mapped_column(String(64), info=not_personal())
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    released_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )


async def held_subjects(session: AsyncSession) -> set[str]:
    rows = await session.scalars(
        select(LegalHold.account_id).where(LegalHold.released_at.is_(None))
    )
    return set(rows.all())


async def is_held(session: AsyncSession, account_id: str) -> bool:
    hold = await session.scalar(
        select(LegalHold.id)
        .where(LegalHold.account_id == account_id, LegalHold.released_at.is_(None))
        .limit(1)
    )
    return hold is not None

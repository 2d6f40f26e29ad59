"""The audit trail: append-only, ids and times only, never personal data.

Every operator read of personal data, every export, erasure, disclosure, legal hold and
retention purge leaves one row. ``record_audit`` adds the row to the caller's session, so the
entry commits (or rolls back) with the change it describes. There is deliberately no update or
delete API; on PostgreSQL a trigger (migration 0002) refuses UPDATE and DELETE except the
retention purge of entries past their year, which announces its cut-off in a transaction-local
setting (``cloudphone.audit_purge_before``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal
from cloudphone.privacy.declarations import retained
from cloudphone.store.db import Base, UTCDateTime, new_id

# The PostgreSQL setting the retention purge sets (SET LOCAL) to be let through the trigger.
PURGE_SETTING = "cloudphone.audit_purge_before"


class AuditEvent(Base):
    """One thing that happened to personal data. ``reason`` is a code or a short operator note
    naming no one (e.g. "expired", "subject request", a court reference)."""

    __tablename__ = "audit_events"
    __table_args__ = ({"info": retained("audit", subject_column="object_id")},)

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True, info=not_personal())
    action: Mapped[str] = mapped_column(String(64), info=not_personal())
    actor: Mapped[str] = mapped_column(String(64), info=not_personal())
    # No foreign keys: the trail must outlive the tenant, account or object it mentions.
    tenant_id: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True, info=not_personal()
    )
    object_type: Mapped[str] = mapped_column(String(64), info=not_personal())
    object_id: Mapped[str] = mapped_column(String(64), index=True, info=not_personal())
    reason: Mapped[str] = mapped_column(String(500), default="", info=not_personal())


async def record_audit(
    session: AsyncSession,
    *,
    action: str,
    actor: str,
    tenant_id: str | None,
    object_type: str,
    object_id: str,
    reason: str = "",
    at: datetime,
) -> None:
    """Append one audit entry to ``session``; it commits with the caller's change."""
    session.add(
        AuditEvent(
            id=new_id(),
            at=at,
            action=action,
            actor=actor,
            tenant_id=tenant_id,
            object_type=object_type,
            object_id=object_id,
            reason=reason[:500],
        )
    )


async def audit_trail(
    session: AsyncSession,
    *,
    tenant_id: str | None = None,
    object_id: str | None = None,
    limit: int = 500,
) -> list[AuditEvent]:
    """The newest entries first, optionally for one tenant or one object."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id).limit(limit)
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if object_id is not None:
        query = query.where(AuditEvent.object_id == object_id)
    return list((await session.scalars(query)).all())

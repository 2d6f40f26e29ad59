"""MESSAGEs for a sleeping app: accepted upstream, stored sealed, delivered when it connects.

A stored message is personal data (sender and content) sealed under the account's key, so
erasing the account shreds it even in backups (P19); it is erased on delivery or after its
time to live (retention rule ``stored_message``: the purge job is the backstop). Typing
notifications (RFC 3994 is-composing) are not stored: worthless by the time the app wakes.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.clock import Clock
from cloudphone.core.datamap import not_personal, personal
from cloudphone.gateway.models import PushInstance
from cloudphone.privacy.sealing import SealedField, sealed
from cloudphone.store.db import Base, Database, UTCDateTime, new_id

__all__ = ["IS_COMPOSING", "MessageStore", "PendingMessage", "StoredMessage"]

IS_COMPOSING = "application/im-iscomposing+xml"


class StoredMessage(Base):
    __tablename__ = "gateway_stored_messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, info=not_personal())
    instance_id: Mapped[str] = mapped_column(
        ForeignKey("push_instances.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    _sender: Mapped[str] = mapped_column(
        "sender",
        Text,
        info=personal(
            "user.contact.sip_address", purpose="push", retention="stored_message", encrypted=True
        )
        | sealed(),
    )
    sender: SealedField[str] = SealedField("_sender", subject_attr="account_id")
    _content_type: Mapped[str] = mapped_column(
        "content_type",
        Text,
        info=personal(
            "user.content.private", purpose="push", retention="stored_message", encrypted=True
        )
        | sealed(),
    )
    content_type: SealedField[str] = SealedField("_content_type", subject_attr="account_id")
    _body: Mapped[str] = mapped_column(
        "body",
        Text,
        info=personal(
            "user.content.private", purpose="push", retention="stored_message", encrypted=True
        )
        | sealed(),
    )
    body_b64: SealedField[str] = SealedField("_body", subject_attr="account_id")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True, info=not_personal())
    delivered_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )


@dataclass(frozen=True)
class PendingMessage:
    id: str
    sender: str  # a From header value without its tag
    content_type: str
    body: bytes


class MessageStore:
    def __init__(self, db: Database, clock: Clock, *, ttl: timedelta) -> None:
        self._db = db
        self._clock = clock
        self._ttl = ttl

    async def store(self, instance_id: str, sender: str, content_type: str, body: bytes) -> str:
        now = self._clock.now()
        message_id = new_id()
        async with self._db.transaction() as s:
            owner = (
                await s.execute(
                    select(PushInstance.tenant_id, PushInstance.account_id).where(
                        PushInstance.id == instance_id
                    )
                )
            ).first()
            if owner is None:
                raise LookupError("no such push instance")
            row = StoredMessage(
                id=message_id,
                instance_id=instance_id,
                tenant_id=owner[0],
                account_id=owner[1],
                created_at=now,
                expires_at=now + self._ttl,
            )
            row.sender = sender
            row.content_type = content_type
            row.body_b64 = base64.b64encode(body).decode()
            s.add(row)
        return message_id

    async def pending(self, instance_id: str) -> list[PendingMessage]:
        now = self._clock.now()
        async with self._db.transaction() as s:
            rows = (
                await s.scalars(
                    select(StoredMessage)
                    .where(
                        StoredMessage.instance_id == instance_id,
                        StoredMessage.expires_at > now,
                        StoredMessage.delivered_at.is_(None),
                    )
                    .order_by(StoredMessage.created_at)
                )
            ).all()
            return [
                PendingMessage(r.id, r.sender, r.content_type, base64.b64decode(r.body_b64))
                for r in rows
            ]

    async def delivered(self, message_id: str) -> None:
        """Erased on delivery: the app has it now (retention rule ``stored_message``)."""
        async with self._db.transaction() as s:
            await s.execute(delete(StoredMessage).where(StoredMessage.id == message_id))

    async def count(self, instance_id: str) -> int:
        async with self._db.transaction() as s:
            return len(
                (
                    await s.scalars(
                        select(StoredMessage.id).where(StoredMessage.instance_id == instance_id)
                    )
                ).all()
            )

"""Policy versions and the notices announcing them (P18), and the mail that carries notices.

A policy version that changes how data is used must reach every affected user before its
effective date: an in-app notice (delivered when the app fetches it) and, where the account has
a notice address, an e-mail through the operator's SMTP relay — the only mail destination
(P2). Each delivery and each acknowledgement is recorded on the notice row.
"""

from __future__ import annotations

import asyncio
import smtplib
from datetime import datetime
from email.message import EmailMessage

from sqlalchemy import Boolean, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal
from cloudphone.privacy.config import PrivacyConfig
from cloudphone.store.db import Base, UTCDateTime, new_id


class PolicyVersion(Base):
    __tablename__ = "policy_versions"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    version: Mapped[str] = mapped_column(String(64), info=not_personal())
    summary: Mapped[str] = mapped_column(Text, info=not_personal())
    changes_data_use: Mapped[bool] = mapped_column(Boolean, info=not_personal())
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    published_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )


class Notice(Base):
    """One notice to one account over one channel. ``topic`` is policy, disclosure or
    ownership; ``ref_id`` the policy version or disclosure it announces."""

    __tablename__ = "notices"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True, info=not_personal()
    )
    topic: Mapped[str] = mapped_column(String(16), info=not_personal())
    ref_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    channel: Mapped[str] = mapped_column(String(8), info=not_personal())  # in_app | email
    title: Mapped[str] = mapped_column(String(200), info=not_personal())
    body: Mapped[str] = mapped_column(Text, info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    delivered_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    acknowledged_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    failure: Mapped[str] = mapped_column(String(200), default="", info=not_personal())


class NoticeMailer:
    """Sends through the operator's SMTP relay and nowhere else (P2)."""

    def __init__(self, config: PrivacyConfig) -> None:
        self._config = config

    @property
    def configured(self) -> bool:
        return bool(self._config.smtp_host)

    async def send(self, to: str, subject: str, body: str) -> None:
        if not self.configured:
            raise OSError("no SMTP relay configured (privacy.smtp_host)")
        message = EmailMessage()
        message["From"] = self._config.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        c = self._config
        with smtplib.SMTP(c.smtp_host, c.smtp_port, timeout=10) as smtp:
            if c.smtp_starttls:
                smtp.starttls()
            if c.smtp_username and c.smtp_password is not None:
                smtp.login(c.smtp_username, c.smtp_password.get_secret_value())
            smtp.send_message(message)

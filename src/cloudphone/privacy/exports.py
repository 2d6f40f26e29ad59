"""The export store: one sealed JSON file per access request, fetched through an expiring link.

The file is sealed under the subject's key, so erasing the subject makes any copy unreadable
(and erasure deletes the files too). The link carries a random token; only its hash is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal
from cloudphone.core.problems import NotFound
from cloudphone.privacy.sealing import SubjectVault
from cloudphone.store.db import Base, UTCDateTime, new_id


class SubjectExport(Base):
    __tablename__ = "subject_exports"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    account_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    request_id: Mapped[str | None] = mapped_column(String(32), nullable=True, info=not_personal())
    token_hash: Mapped[str] = mapped_column(String(64), info=not_personal())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True, info=not_personal())


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ExportStore:
    def __init__(self, root: Path, vault: SubjectVault) -> None:
        self.root = root
        self._vault = vault

    def _path(self, export_id: str) -> Path:
        return self.root / f"{export_id}.sealed"

    async def create(
        self,
        s: AsyncSession,
        document: dict[str, Any],
        *,
        account_id: str,
        tenant_id: str,
        now: datetime,
        lifetime: timedelta,
        request_id: str | None,
    ) -> tuple[SubjectExport, str]:
        """Store the document; returns the row and the link token (shown once)."""
        token = secrets.token_urlsafe(32)
        export = SubjectExport(
            id=new_id(),
            tenant_id=tenant_id,
            account_id=account_id,
            request_id=request_id,
            token_hash=_hash(token),
            created_at=now,
            expires_at=now + lifetime,
        )
        body = json.dumps(document, sort_keys=True, default=str)
        sealed_body = await s.run_sync(
            lambda ss: self._vault.seal(
                ss, account_id, tenant_id, "subject_exports", export.id, body
            )
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self._path(export.id).write_text(sealed_body)
        s.add(export)
        return export, token

    async def open(self, s: AsyncSession, export_id: str, token: str, now: datetime) -> bytes:
        export = await s.get(SubjectExport, export_id)
        if (
            export is None
            or export.expires_at <= now
            or not hmac.compare_digest(_hash(token), export.token_hash)
            or not self._path(export_id).exists()
        ):
            raise NotFound("no such export, or its link has expired")
        sealed_body = self._path(export_id).read_text()
        body = await s.run_sync(
            lambda ss: self._vault.open(
                ss, export.account_id, "subject_exports", export.id, sealed_body
            )
        )
        if body is None:
            raise NotFound("no such export, or its link has expired")
        return body.encode()

    async def remove_for_subject(self, s: AsyncSession, account_id: str) -> int:
        exports = (
            await s.scalars(select(SubjectExport).where(SubjectExport.account_id == account_id))
        ).all()
        return await self._remove(s, list(exports))

    async def remove_expired(self, s: AsyncSession, now: datetime) -> int:
        exports = (
            await s.scalars(select(SubjectExport).where(SubjectExport.expires_at <= now))
        ).all()
        return await self._remove(s, list(exports))

    async def _remove(self, s: AsyncSession, exports: list[SubjectExport]) -> int:
        for export in exports:
            self._path(export.id).unlink(missing_ok=True)
            await s.delete(export)
        return len(exports)

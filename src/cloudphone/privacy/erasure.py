"""What the data map finds for a subject: the export (access, P19) and the erasure (P19).

Both walk every table with personal columns and reach the subject's rows through
``subjects.subject_link`` — a table added later is covered as soon as its columns are declared.
Erasure also runs each domain's erasure hook first (the gateway ends push instances, which
unregisters upstream and erases their credentials), shreds the subject key, writes the ledger
and leaves an audit entry.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, delete, select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from cloudphone.core.logging import get_logger
from cloudphone.core.problems import Conflict
from cloudphone.privacy.audit import record_audit
from cloudphone.privacy.holds import is_held
from cloudphone.privacy.ledger import ErasureLedger
from cloudphone.privacy.sealing import SubjectKey, SubjectVault, is_sealed
from cloudphone.privacy.subjects import personal_columns, personal_tables, subject_link
from cloudphone.store.db import Database

log = get_logger(__name__)

ErasureHook = Callable[[str], Awaitable[None]]


class LegalHoldActive(Conflict):
    kind, title = "legal-hold", "A legal hold blocks this"


class ErasureHooks:
    """Per-domain work that must happen before a subject's rows go (e.g. unregistering a push
    instance upstream). A hook takes the subject (account) id and must be idempotent."""

    def __init__(self) -> None:
        self._hooks: dict[str, ErasureHook] = {}

    def register(self, domain: str, hook: ErasureHook) -> None:
        self._hooks[domain] = hook

    @property
    def domains(self) -> list[str]:
        return sorted(self._hooks)

    async def run(self, account_id: str) -> None:
        for domain in self.domains:
            await self._hooks[domain](account_id)


async def build_export(
    s: AsyncSession, metadata: MetaData, vault: SubjectVault, account_id: str
) -> dict[str, Any]:
    """Every personal column of every row of the subject, per table. Sealed fields are opened
    (the server holds their key for the subject); other encrypted fields stay ciphertext."""
    tables: dict[str, Any] = {}
    for table in personal_tables(metadata):
        link = subject_link(table, metadata)
        if link is None:
            continue  # a coverage gap; tests/privacy fail on it
        columns = personal_columns(table)
        (pk,) = table.primary_key.columns
        rows = (
            await s.execute(
                select(pk, *(c for c, _ in columns)).where(link == account_id).order_by(pk)
            )
        ).all()
        out_rows = []
        for row in rows:
            item: dict[str, Any] = {"id": row[0]}
            for (column, _decl), value in zip(columns, row[1:], strict=True):
                if is_sealed(column.info):
                    value = await s.run_sync(
                        _open, vault, account_id, table.name, column.name, value
                    )
                item[column.name] = value
            out_rows.append(item)
        tables[table.name] = {
            "columns": {
                column.name: {
                    "category": decl.category,
                    "purpose": decl.purpose,
                    "retention": decl.retention,
                    "encrypted": decl.encrypted,
                    # Sealed under the subject's key: opened for the subject. Otherwise
                    # encrypted: provided only in its encrypted form, as the policy says.
                    "provided_as": "ciphertext"
                    if decl.encrypted and not is_sealed(column.info)
                    else "plaintext",
                }
                for column, decl in columns
            },
            "rows": out_rows,
        }
    return {"subject": account_id, "tables": tables}


def _open(
    session: Session, vault: SubjectVault, subject: str, table: str, column: str, token: Any
) -> str | None:
    return vault.open(session, subject, table, column, token)


def _shred(session: Session, vault: SubjectVault, account_id: str) -> int:
    return vault.shred(session.connection(), [account_id])


async def _delete_subject_rows(s: AsyncSession, metadata: MetaData, account_id: str) -> list[str]:
    touched = []
    # Children before parents, so no foreign key is left dangling mid-transaction.
    for table in reversed(personal_tables(metadata)):
        link = subject_link(table, metadata)
        if link is None:
            continue
        result = await s.execute(delete(table).where(link == account_id))
        if result.rowcount:  # type: ignore[attr-defined]
            touched.append(table.name)
    return sorted(touched)


async def erase_subject(
    db: Database,
    metadata: MetaData,
    vault: SubjectVault,
    ledger: ErasureLedger,
    hooks: ErasureHooks,
    *,
    account_id: str,
    tenant_id: str,
    now: datetime,
    actor: str,
    reason: str,
    on_erase: Callable[[AsyncSession, str], Awaitable[None]] | None = None,
) -> list[str]:
    """Erase the subject everywhere the data map says; irreversible. Returns the tables
    touched. Refused (409) while a legal hold is active."""
    async with db.transaction() as s:
        if await is_held(s, account_id):
            raise LegalHoldActive("a legal hold on this subject blocks erasure")
    await hooks.run(account_id)
    # The ledger first: should the commit fail, a replay finishes the erasure later.
    ledger.append(account_id, now, personal_table_names(metadata))
    async with db.transaction() as s:
        touched = await _delete_subject_rows(s, metadata, account_id)
        if on_erase is not None:
            await on_erase(s, account_id)
        shredded = await s.run_sync(_shred, vault, account_id)
        if shredded:
            touched.append("subject_keys")
        await record_audit(
            s,
            action="subject.erased",
            actor=actor,
            tenant_id=tenant_id,
            object_type="account",
            object_id=account_id,
            reason=reason,
            at=now,
        )
    await _scrub(db, touched)
    log.info("subject erased", account_id=account_id, tables_count=len(touched))
    return touched


async def _scrub(db: Database, tables: list[str]) -> None:
    """Leave no copy of the erased rows in the live files. SQLite: secure_delete has zeroed
    the freed pages; fold the WAL back and truncate it. PostgreSQL: dead tuples stay until
    VACUUM, so vacuum the touched tables — FULL for the small key table, whose rewrite drops
    the wrapped key for good (WAL archives are the operator's to expire)."""
    await db.scrub_freed_pages()
    if db.dialect != "postgresql":
        return
    async with db.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.exec_driver_sql("VACUUM FULL subject_keys")
        for table in sorted(set(tables) - {"subject_keys"}):
            await auto.exec_driver_sql(f'VACUUM "{table}"')


def personal_table_names(metadata: MetaData) -> list[str]:
    return [t.name for t in personal_tables(metadata)]


async def replay_erasures(
    db: Database,
    metadata: MetaData,
    vault: SubjectVault,
    ledger: ErasureLedger,
    hooks: ErasureHooks,
    now: datetime,
    on_erase: Callable[[AsyncSession, str], Awaitable[None]] | None = None,
) -> list[str]:
    """After a restore: erase again every subject the ledger lists. Returns their ids."""
    erased = ledger.erased()
    if not erased:
        return []
    sources = [select(SubjectKey.subject_id)]
    for table in personal_tables(metadata):
        link = subject_link(table, metadata)
        if link is not None:
            sources.append(select(link.label("subject_id")))
    async with db.transaction() as s:
        present = set((await s.scalars(union(*sources))).all())
    again = sorted(i for i in present if i and ledger.subject_hash(i) in erased)
    for account_id in again:
        await hooks.run(account_id)
        async with db.transaction() as s:
            await _delete_subject_rows(s, metadata, account_id)
            if on_erase is not None:
                await on_erase(s, account_id)
            await s.run_sync(_shred, vault, account_id)
            await record_audit(
                s,
                action="subject.erasure_replayed",
                actor="replay",
                tenant_id=None,
                object_type="account",
                object_id=account_id,
                reason="restored from backup",
                at=now,
            )
    if again:
        await _scrub(db, ["subject_keys", *personal_table_names(metadata)])
    return again


__all__ = [
    "ErasureHooks",
    "LegalHoldActive",
    "build_export",
    "erase_subject",
    "replay_erasures",
]

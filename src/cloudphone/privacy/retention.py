"""Retention (P15): every rule of the data map is enforced, and every table is covered by
reading its declarations — nobody has to remember to add a new table here.

A table is governed by the retention rules of its personal columns, or by the rule it declares
with ``retained(...)``. Each rule has one enforcement:

- ``with_subject``: the rows live as long as their subject (account) and go with it — by the
  foreign-key cascade when the account is deleted, and by erasure;
- ``expires``: rows go once their ``expires_at`` (plus a grace) has passed, or once a
  "done" column (``used_at``) is set;
- ``age``: rows go once their time column is older than the limit, or once done.

The purge is batched (short transactions; the SQLite writer is never held for long) and
idempotent (a second run finds nothing). Rows of a subject under legal hold stay. Each batch
leaves an audit entry naming the table, the rule and the count.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, MetaData, Table, delete, false, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cloudphone.core.datamap import RETENTION_RULES
from cloudphone.core.logging import get_logger
from cloudphone.privacy.audit import PURGE_SETTING, record_audit
from cloudphone.privacy.declarations import hold_column, table_rule
from cloudphone.privacy.holds import held_subjects
from cloudphone.privacy.subjects import personal_columns, subject_link
from cloudphone.store.db import Database

log = get_logger(__name__)


@dataclass(frozen=True)
class Enforcement:
    kind: Literal["with_subject", "expires", "age"]
    column: str | None = None  # expires: the expiry time; age: the time the age counts from
    done_column: str | None = None  # a set value here means the purpose is served
    limit: timedelta = timedelta(0)  # age: the maximum age; expires: the grace after expiry

    def describe(self) -> str:
        if self.kind == "with_subject":
            return "erased with its subject"
        days = self.limit / timedelta(days=1)
        when = (
            f"{self.column} older than {days:g} days"
            if self.kind == "age"
            else f"{self.column} passed (grace {days:g} days)"
        )
        return when + (f" or {self.done_column} set" if self.done_column else "")


DEFAULT_ENFORCEMENT: dict[str, Enforcement] = {
    "account": Enforcement("with_subject"),
    "device": Enforcement("with_subject"),
    # The gateway ends instances on time (unregistering upstream first); this is the backstop.
    "push_instance": Enforcement("expires", "expires_at", limit=timedelta(hours=1)),
    "enrollment": Enforcement("expires", "expires_at", "used_at"),
    "stored_message": Enforcement("age", "created_at", "delivered_at", timedelta(days=7)),
    "audit": Enforcement("age", "at", limit=timedelta(days=365)),
}


def enforcement(overrides: dict[str, float] | None = None) -> dict[str, Enforcement]:
    """The built-in enforcement with the operator's day counts applied."""
    rules = dict(DEFAULT_ENFORCEMENT)
    for rule, days in (overrides or {}).items():
        rules[rule] = replace(rules[rule], limit=timedelta(days=days))
    return rules


def governed_tables(metadata: MetaData) -> list[tuple[Table, str]]:
    """(table, rule) for every rule that governs a table's rows."""
    pairs: list[tuple[Table, str]] = []
    for table in metadata.sorted_tables:
        rules = {decl.retention for _, decl in personal_columns(table)}
        declared = table_rule(table)
        if declared is not None:
            rules.add(declared)
        pairs.extend((table, rule) for rule in sorted(rules))
    return pairs


def coverage_problems(metadata: MetaData, rules: dict[str, Enforcement]) -> list[str]:
    """Everything that would leave data kept longer than its rule says."""
    problems = [
        f"retention rule {r!r} has no enforcement" for r in RETENTION_RULES if r not in rules
    ]
    for table, rule in governed_tables(metadata):
        e = rules.get(rule)
        if e is None:
            problems.append(f"{table.name}: rule {rule!r} has no enforcement")
            continue
        if len(table.primary_key.columns) != 1:
            problems.append(f"{table.name}: the purge needs a single-column primary key")
        if e.kind == "with_subject":
            if subject_link(table, metadata) is None:
                problems.append(f"{table.name}: rule {rule!r} needs a link to its subject")
            continue
        for needed in (e.column, e.done_column):
            if needed is not None and needed not in table.columns:
                problems.append(f"{table.name}: rule {rule!r} needs a column {needed!r}")
    return problems


@dataclass
class PurgeReport:
    now: datetime
    dry_run: bool
    # "table (rule)" -> rows purged, or that would be
    rows: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _due(table: Table, e: Enforcement, now: datetime) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    if e.kind == "expires" and e.column is not None:
        conditions.append(table.c[e.column] <= now - e.limit)
    elif e.kind == "age" and e.column is not None:
        conditions.append(table.c[e.column] < now - e.limit)
    if e.done_column is not None:
        conditions.append(table.c[e.done_column].is_not(None))
    return or_(*conditions) if conditions else false()


def _hold_column(table: Table, metadata: MetaData) -> ColumnElement[str] | None:
    link = subject_link(table, metadata)
    if link is not None:
        return link
    name = hold_column(table)
    return table.c[name] if name is not None else None


async def purge(
    db: Database,
    metadata: MetaData,
    rules: dict[str, Enforcement],
    now: datetime,
    *,
    batch_size: int = 500,
    dry_run: bool = False,
) -> PurgeReport:
    """Enforce every time-bound rule at ``now`` (the one clock, so tests move time)."""
    report = PurgeReport(now=now, dry_run=dry_run)
    async with db.transaction() as s:
        held = await held_subjects(s)
    for table, rule in governed_tables(metadata):
        e = rules[rule]
        if e.kind == "with_subject":
            continue
        label = f"{table.name} ({rule})"
        due = _due(table, e, now)
        subject = _hold_column(table, metadata)
        if held and subject is not None:
            async with db.transaction() as s:
                kept = await s.scalar(
                    select(func.count()).select_from(table).where(due, subject.in_(held))
                )
            if kept:
                report.held[label] = int(kept)
            due = due & or_(subject.is_(None), subject.not_in(held))
        if dry_run:
            async with db.transaction() as s:
                count = await s.scalar(select(func.count()).select_from(table).where(due))
            if count:
                report.rows[label] = int(count)
            continue
        purged = await _purge_table(db, table, rule, e, due, now, batch_size)
        if purged:
            report.rows[label] = purged
            log.info("retention purge", table=table.name, rule=rule, rows_count=purged)
    return report


async def _purge_table(
    db: Database,
    table: Table,
    rule: str,
    e: Enforcement,
    due: ColumnElement[bool],
    now: datetime,
    batch_size: int,
) -> int:
    (pk,) = table.primary_key.columns
    total = 0
    while True:
        async with db.transaction() as s:
            await _allow_audit_purge(s, table, e, now)
            ids = list((await s.scalars(select(pk).where(due).limit(batch_size))).all())
            if not ids:
                return total
            await s.execute(delete(table).where(pk.in_(ids)))
            total += len(ids)
            await record_audit(
                s,
                action="retention.purged",
                actor="retention",
                tenant_id=None,
                object_type="table",
                object_id=table.name,
                reason=f"{rule}: {len(ids)} rows",
                at=now,
            )


async def _allow_audit_purge(s: AsyncSession, table: Table, e: Enforcement, now: datetime) -> None:
    """The audit trail's PostgreSQL trigger lets DELETE through only below this cut-off."""
    if table.name == "audit_events" and s.get_bind().dialect.name == "postgresql":
        cutoff = (now - e.limit).isoformat()
        await s.execute(text(f"SET LOCAL {PURGE_SETTING} = '{cutoff}'"))

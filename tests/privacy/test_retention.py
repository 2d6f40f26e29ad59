"""Retention (P15): every rule enforced, every table covered from its declarations, the purge
batched, idempotent, audited and stopped by legal holds. Time moves on the fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Column, DateTime, MetaData, String, Table, func, select

from cloudphone.accounts.models import Enrollment
from cloudphone.core.clock import FakeClock
from cloudphone.core.datamap import RETENTION_RULES, not_personal, personal
from cloudphone.privacy.audit import AuditEvent, record_audit
from cloudphone.privacy.retention import (
    coverage_problems,
    enforcement,
    governed_tables,
    purge,
)
from cloudphone.privacy.sealing import SubjectKey
from cloudphone.runtime import Runtime
from cloudphone.schema import metadata
from tests.accounts.helpers import global_operator, make_world
from tests.conftest import make_settings


@pytest.mark.promise("P15")
def test_every_rule_and_every_governed_table_is_enforced() -> None:
    rules = enforcement()
    assert set(rules) == set(RETENTION_RULES)
    assert coverage_problems(metadata(), rules) == []
    governed = {(t.name, rule) for t, rule in governed_tables(metadata())}
    assert {
        ("audit_events", "audit"),
        ("enrollments", "enrollment"),
        ("accounts", "account"),
    } <= governed


@pytest.mark.promise("P15")
def test_a_table_whose_rule_cannot_be_enforced_fails() -> None:
    md = MetaData()
    Table(
        "messages",
        md,
        Column("id", String, primary_key=True, info=not_personal()),
        Column("sent_at", DateTime, info=not_personal()),  # the rule needs created_at
        Column(
            "body",
            String,
            info=personal("user.content", purpose="service", retention="stored_message"),
        ),
    )
    problems = coverage_problems(md, enforcement())
    assert "messages: rule 'stored_message' needs a column 'created_at'" in problems
    assert "messages: rule 'stored_message' needs a column 'delivered_at'" in problems
    assert "messages: rule 'stored_message' needs a link to its subject" not in problems
    incomplete = {k: v for k, v in enforcement().items() if k != "audit"}
    assert "retention rule 'audit' has no enforcement" in coverage_problems(md, incomplete)


async def _count(runtime: Runtime, model: type) -> int:
    async with runtime.db.transaction() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.promise("P15")
async def test_enrollments_go_once_expired_batched_idempotent_and_audited(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    for _ in range(5):
        r = await api.post(f"/v1/accounts/{world.account_id}/enrollments", headers=world.operator)
        assert r.status_code == 201
    clock.advance(timedelta(hours=23))
    dry = await runtime.privacy.retention(dry_run=True)
    assert dry.rows == {}
    clock.advance(timedelta(hours=2))
    dry = await runtime.privacy.retention(dry_run=True)
    assert dry.rows == {"enrollments (enrollment)": 5}
    assert await _count(runtime, Enrollment) == 5  # a dry run changes nothing

    rules = runtime.privacy.rules
    report = await purge(runtime.db, metadata(), rules, clock.now(), batch_size=2)
    assert report.rows == {"enrollments (enrollment)": 5}
    assert await _count(runtime, Enrollment) == 0
    again = await purge(runtime.db, metadata(), rules, clock.now(), batch_size=2)
    assert again.rows == {}
    async with runtime.db.transaction() as s:
        batches = (
            await s.scalars(
                select(AuditEvent.reason).where(AuditEvent.action == "retention.purged")
            )
        ).all()
    assert sorted(batches) == ["enrollment: 1 rows", "enrollment: 2 rows", "enrollment: 2 rows"]


@pytest.mark.promise("P15")
async def test_a_used_enrollment_goes_at_once(api: httpx.AsyncClient, runtime: Runtime) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    r = await api.post(f"/v1/accounts/{world.account_id}/enrollments", headers=world.operator)
    r = await api.post(
        "/v1/provisioning/claim",
        json={"code": r.json()["code"], "platform": "ios", "app_id": "com.example.phone"},
    )
    assert r.status_code == 201
    report = await runtime.privacy.retention(dry_run=False)
    assert report.rows == {"enrollments (enrollment)": 1}


async def _audit_at(runtime: Runtime, object_id: str) -> None:
    async with runtime.db.transaction() as s:
        await record_audit(
            s,
            action="x",
            actor="t",
            tenant_id=None,
            object_type="account",
            object_id=object_id,
            at=runtime.clock.now(),
        )


@pytest.mark.promise("P15")
async def test_audit_entries_are_kept_a_year_and_a_legal_hold_keeps_its_subjects(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    await _audit_at(runtime, "someone-else")
    await _audit_at(runtime, world.account_id)
    r = await api.post(
        f"/v1/accounts/{world.account_id}/legal-holds",
        headers=world.operator,
        json={"reason": "order 2026-17"},
    )
    hold_id = r.json()["id"]
    clock.advance(timedelta(days=364))
    assert (await runtime.privacy.retention(dry_run=True)).rows == {}
    clock.advance(timedelta(days=2))
    report = await runtime.privacy.retention(dry_run=False)
    assert report.rows == {"audit_events (audit)": 1}
    # the held subject's entries (its two: "x" and the hold itself) stay
    assert report.held == {"audit_events (audit)": 2}
    async with runtime.db.transaction() as s:
        left = set((await s.scalars(select(AuditEvent.object_id))).all())
    assert "someone-else" not in left and world.account_id in left

    await api.post(f"/v1/legal-holds/{hold_id}/release", headers=world.operator)
    report = await runtime.privacy.retention(dry_run=False)
    assert report.rows == {"audit_events (audit)": 2}


@pytest.mark.promise("P15")
async def test_the_operator_configures_the_limits(runtime: Runtime, clock: FakeClock) -> None:
    settings = make_settings(
        "sqlite+aiosqlite://", Path("unused"), privacy={"retention_days": {"audit": 30}}
    )
    rules = enforcement(settings.privacy.retention_days)
    assert rules["audit"].limit == timedelta(days=30)
    await _audit_at(runtime, "someone")
    clock.advance(timedelta(days=31))
    report = await purge(runtime.db, metadata(), rules, clock.now())
    assert report.rows == {"audit_events (audit)": 1}


def test_configuration_refuses_unknown_rules() -> None:
    from pydantic import ValidationError

    from cloudphone.privacy.config import PrivacyConfig

    with pytest.raises(ValidationError, match="unknown retention rules"):
        PrivacyConfig(retention_days={"forever": 1})


@pytest.mark.promise("P15")
async def test_the_service_runs_the_purge_by_itself(
    api: httpx.AsyncClient, runtime: Runtime, clock: FakeClock
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    await api.post(f"/v1/accounts/{world.account_id}/enrollments", headers=world.operator)
    clock.advance(timedelta(days=2))
    runtime.privacy.config.purge_interval_s = 0.01
    await runtime.privacy.start()
    try:
        for _ in range(200):
            if await _count(runtime, Enrollment) == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        await runtime.privacy.stop()
    assert await _count(runtime, Enrollment) == 0


@pytest.mark.promise("P15")
async def test_the_key_of_a_deleted_account_goes_with_it(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    world = await make_world(api, await global_operator(runtime), "acme")
    r = await api.delete(f"/v1/accounts/{world.account_id}", headers=world.operator)
    assert r.status_code == 204
    assert await _count(runtime, SubjectKey) == 1
    assert (await runtime.privacy.retention(dry_run=True)).rows == {"subject_keys (account)": 1}
    assert await _count(runtime, SubjectKey) == 1
    await runtime.privacy.retention(dry_run=False)
    assert await _count(runtime, SubjectKey) == 0

"""Policy versions, notices and the disclosure log (P17, P18): what users are told, when, and
the record that they were. ``NoticeService`` enforces tenant isolation like every service."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from cloudphone.accounts.credentials import Principal
from cloudphone.accounts.models import Account, Tenant
from cloudphone.core.clock import Clock
from cloudphone.core.logging import get_logger
from cloudphone.core.problems import InvalidInput, NotFound
from cloudphone.privacy.access import actor_of, require_operator, require_tenant
from cloudphone.privacy.audit import record_audit
from cloudphone.privacy.config import PrivacyConfig
from cloudphone.privacy.disclosures import Disclosure
from cloudphone.privacy.notices import Notice, NoticeMailer, PolicyVersion
from cloudphone.privacy.schemas import (
    DisclosureCreate,
    DisclosureOut,
    NoticeOut,
    PolicyCreate,
    PolicyOut,
    PublishReport,
)
from cloudphone.store.db import Database, new_id

log = get_logger(__name__)


class NoticeService:
    def __init__(
        self, db: Database, clock: Clock, config: PrivacyConfig, mailer: NoticeMailer
    ) -> None:
        self._db = db
        self._clock = clock
        self.config = config
        self.mailer = mailer

    # -- policy versions and notices (P18) ------------------------------------------------

    async def create_policy(
        self, who: Principal | None, tenant_id: str, body: PolicyCreate
    ) -> PolicyOut:
        require_operator(who)
        require_tenant(who, tenant_id)
        async with self._db.transaction() as s:
            if await s.get(Tenant, tenant_id) is None:
                raise NotFound("no such tenant")
            version = PolicyVersion(
                id=new_id(),
                tenant_id=tenant_id,
                version=body.version,
                summary=body.summary,
                changes_data_use=body.changes_data_use,
                effective_at=body.effective_at,
                created_at=self._clock.now(),
            )
            s.add(version)
            return _policy_out(version)

    async def list_policies(self, who: Principal | None, tenant_id: str) -> list[PolicyOut]:
        require_operator(who)
        require_tenant(who, tenant_id)
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(PolicyVersion)
                .where(PolicyVersion.tenant_id == tenant_id)
                .order_by(PolicyVersion.effective_at)
            )
            return [_policy_out(p) for p in rows.all()]

    async def publish_policy(self, who: Principal | None, version_id: str) -> PublishReport:
        """Announce a version to every account of the tenant, before it takes effect."""
        require_operator(who)
        now = self._clock.now()
        async with self._db.transaction() as s:
            version = await s.get(PolicyVersion, version_id)
            if version is None or (who is not None and not who.may_administer(version.tenant_id)):
                raise NotFound("no such policy version")
            lead = timedelta(days=self.config.notice_min_lead_days)
            if version.effective_at - lead <= now:
                raise InvalidInput(
                    "too late to announce: notices must go out before the effective date"
                    + (f" (at least {self.config.notice_min_lead_days:g} days)" if lead else "")
                )
            version.published_at = version.published_at or now
        return await self._announce_policy(version_id)

    async def _announce_policy(self, version_id: str) -> PublishReport:
        async with self._db.transaction() as s:
            version = await s.get(PolicyVersion, version_id)
            assert version is not None
            title = f"Privacy policy {version.version} takes effect {version.effective_at:%Y-%m-%d}"
            body = version.summary
            tenant_id = version.tenant_id
        if not version.changes_data_use:
            return PublishReport(version_id=version_id, in_app=0, emailed=0, email_failures=0)
        return await self._notify(tenant_id, None, "policy", version_id, title, body)

    async def _notify(
        self,
        tenant_id: str,
        account_ids: list[str] | None,
        topic: str,
        ref_id: str,
        title: str,
        body: str,
    ) -> PublishReport:
        """In-app notices for every affected account not yet told, and e-mail where the
        account has a notice address. Idempotent: a second run only adds what is missing."""
        now = self._clock.now()
        in_app = emailed = failures = 0
        async with self._db.transaction() as s:
            query = select(Account).where(Account.tenant_id == tenant_id)
            if account_ids is not None:
                query = query.where(Account.id.in_(account_ids))
            accounts = list((await s.scalars(query)).all())
            existing = {
                (n.account_id, n.channel): n
                for n in (
                    await s.scalars(
                        select(Notice).where(Notice.ref_id == ref_id, Notice.topic == topic)
                    )
                ).all()
            }
            mail: list[tuple[Notice, str]] = []
            for account in accounts:
                if (account.id, "in_app") not in existing:
                    s.add(self._notice(account, topic, ref_id, "in_app", title, body, now))
                    in_app += 1
                email_notice = existing.get((account.id, "email"))
                if account.notice_email and (
                    email_notice is None or email_notice.delivered_at is None
                ):
                    if email_notice is None:
                        email_notice = self._notice(
                            account, topic, ref_id, "email", title, body, now
                        )
                        s.add(email_notice)
                    mail.append((email_notice, account.notice_email))
        for notice, address in mail:
            try:
                await self.mailer.send(address, notice.title, notice.body)
                notice.delivered_at, notice.failure = self._clock.now(), ""
                emailed += 1
            except OSError as exc:
                notice.failure = type(exc).__name__
                failures += 1
            async with self._db.transaction() as s:
                await s.merge(notice)
        log.info(
            "notices sent",
            topic=topic,
            ref_id=ref_id,
            in_app_count=in_app,
            emailed_count=emailed,
            failures_count=failures,
        )
        return PublishReport(
            version_id=ref_id, in_app=in_app, emailed=emailed, email_failures=failures
        )

    @staticmethod
    def _notice(
        account: Account,
        topic: str,
        ref_id: str,
        channel: str,
        title: str,
        body: str,
        now: datetime,
    ) -> Notice:
        return Notice(
            id=new_id(),
            tenant_id=account.tenant_id,
            account_id=account.id,
            topic=topic,
            ref_id=ref_id,
            channel=channel,
            title=title,
            body=body,
            created_at=now,
            failure="",
        )

    async def deliver_pending_notices(self) -> int:
        """The job's part: accounts created after a publication, and failed e-mails, are
        caught up while the version is not yet in effect."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            ids = list(
                (
                    await s.scalars(
                        select(PolicyVersion.id).where(
                            PolicyVersion.published_at.is_not(None),
                            PolicyVersion.effective_at > now,
                        )
                    )
                ).all()
            )
        total = 0
        for version_id in ids:
            report = await self._announce_policy(version_id)
            total += report.in_app + report.emailed
        return total

    async def own_notices(self, who: Principal) -> list[NoticeOut]:
        """The app's notice endpoint; fetching it is the in-app delivery, recorded."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            rows = (
                await s.scalars(
                    select(Notice)
                    .where(Notice.account_id == (who.account_id or ""), Notice.channel == "in_app")
                    .order_by(Notice.created_at, Notice.id)
                )
            ).all()
            for notice in rows:
                notice.delivered_at = notice.delivered_at or now
            return [_notice_out(n) for n in rows]

    async def acknowledge_notice(self, who: Principal, notice_id: str) -> NoticeOut:
        now = self._clock.now()
        async with self._db.transaction() as s:
            notice = await s.get(Notice, notice_id)
            if notice is None or who.is_operator or notice.account_id != who.account_id:
                raise NotFound("no such notice")
            notice.delivered_at = notice.delivered_at or now
            notice.acknowledged_at = notice.acknowledged_at or now
            return _notice_out(notice)

    async def notices_for(self, who: Principal | None, ref_id: str) -> list[NoticeOut]:
        """The delivery record of one policy version or disclosure (operators)."""
        require_operator(who)
        async with self._db.transaction() as s:
            owner: PolicyVersion | Disclosure | None = await s.get(PolicyVersion, ref_id)
            if owner is None:
                owner = await s.get(Disclosure, ref_id)
            if owner is None or (who is not None and not who.may_administer(owner.tenant_id)):
                raise NotFound("no such policy version")
            rows = await s.scalars(
                select(Notice).where(Notice.ref_id == ref_id).order_by(Notice.created_at)
            )
            return [_notice_out(n) for n in rows.all()]

    # -- disclosures (P17) ----------------------------------------------------------------

    async def record_disclosure(
        self, who: Principal | None, tenant_id: str, body: DisclosureCreate
    ) -> DisclosureOut:
        require_operator(who)
        require_tenant(who, tenant_id)
        now = self._clock.now()
        async with self._db.transaction() as s:
            if body.account_ids:
                found = set(
                    (
                        await s.scalars(
                            select(Account.id).where(
                                Account.id.in_(body.account_ids), Account.tenant_id == tenant_id
                            )
                        )
                    ).all()
                )
                if found != set(body.account_ids):
                    raise NotFound("no such account")
            disclosure = Disclosure(
                id=new_id(),
                tenant_id=tenant_id,
                authority=body.authority,
                legal_basis=body.legal_basis,
                scope=body.scope,
                account_ids=sorted(set(body.account_ids)),
                disclosed_at=body.disclosed_at or now,
                recorded_at=now,
                recorded_by=actor_of(who),
            )
            s.add(disclosure)
            for account_id in disclosure.account_ids or [tenant_id]:
                await record_audit(
                    s,
                    action="disclosure.recorded",
                    actor=actor_of(who),
                    tenant_id=tenant_id,
                    object_type="account" if disclosure.account_ids else "tenant",
                    object_id=account_id,
                    reason=disclosure.id,
                    at=now,
                )
            return _disclosure_out(disclosure)

    async def list_disclosures(self, who: Principal | None, tenant_id: str) -> list[DisclosureOut]:
        require_operator(who)
        require_tenant(who, tenant_id)
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(Disclosure)
                .where(Disclosure.tenant_id == tenant_id)
                .order_by(Disclosure.disclosed_at)
            )
            return [_disclosure_out(d) for d in rows.all()]

    async def notify_disclosure(self, who: Principal | None, disclosure_id: str) -> PublishReport:
        """Tell the affected users (all of the tenant's, if the disclosure named none —
        e.g. a change of ownership)."""
        require_operator(who)
        async with self._db.transaction() as s:
            disclosure = await s.get(Disclosure, disclosure_id)
            if disclosure is None or (
                who is not None and not who.may_administer(disclosure.tenant_id)
            ):
                raise NotFound("no such disclosure")
            disclosure.notified_at = disclosure.notified_at or self._clock.now()
            tenant_id, ids = disclosure.tenant_id, list(disclosure.account_ids)
            title = f"Your data was disclosed to {disclosure.authority}"
            body = f"Legal basis: {disclosure.legal_basis}\nScope: {disclosure.scope}"
        return await self._notify(tenant_id, ids or None, "disclosure", disclosure_id, title, body)


def _policy_out(p: PolicyVersion) -> PolicyOut:
    return PolicyOut(
        id=p.id,
        tenant_id=p.tenant_id,
        version=p.version,
        summary=p.summary,
        changes_data_use=p.changes_data_use,
        effective_at=p.effective_at,
        created_at=p.created_at,
        published_at=p.published_at,
    )


def _notice_out(n: Notice) -> NoticeOut:
    return NoticeOut(
        id=n.id,
        topic=n.topic,
        ref_id=n.ref_id,
        channel=n.channel,
        title=n.title,
        body=n.body,
        created_at=n.created_at,
        delivered_at=n.delivered_at,
        acknowledged_at=n.acknowledged_at,
    )


def _disclosure_out(d: Disclosure) -> DisclosureOut:
    return DisclosureOut(
        id=d.id,
        tenant_id=d.tenant_id,
        authority=d.authority,
        legal_basis=d.legal_basis,
        scope=d.scope,
        account_ids=list(d.account_ids),
        disclosed_at=d.disclosed_at,
        recorded_at=d.recorded_at,
        notified_at=d.notified_at,
    )

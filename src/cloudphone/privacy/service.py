"""The privacy domain service: requests, exports, erasure, holds, retention, notices and
disclosures. Routers and the CLI call this; every method takes the caller's ``Principal``
(``None`` is the local CLI) and enforces tenant isolation: another tenant's object is "not
found", so its existence does not leak.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloudphone.accounts.credentials import Principal
from cloudphone.accounts.models import Account, Device
from cloudphone.accounts.schemas import AccountUpdate
from cloudphone.accounts.service import AccountsService
from cloudphone.core.clock import Clock
from cloudphone.core.crypto import Keyring
from cloudphone.core.logging import get_logger
from cloudphone.core.problems import Forbidden, InvalidInput, NotFound
from cloudphone.privacy.access import actor_of, require_operator, require_tenant
from cloudphone.privacy.audit import AuditEvent, audit_trail, record_audit
from cloudphone.privacy.config import PrivacyConfig
from cloudphone.privacy.erasure import (
    ErasureHooks,
    build_export,
    erase_subject,
    replay_erasures,
)
from cloudphone.privacy.exports import ExportStore, SubjectExport
from cloudphone.privacy.holds import LegalHold
from cloudphone.privacy.ledger import ErasureLedger
from cloudphone.privacy.notice_service import NoticeService
from cloudphone.privacy.notices import NoticeMailer
from cloudphone.privacy.requests import (
    PostMortemAction,
    PostMortemDirective,
    RequestKind,
    RequestState,
    SubjectRequest,
)
from cloudphone.privacy.retention import enforcement, purge
from cloudphone.privacy.schemas import (
    AuditOut,
    DirectiveIn,
    DirectiveOut,
    HoldCreate,
    HoldOut,
    RectifyChanges,
    RequestCreate,
    RequestOut,
    RequestProcess,
    RequestRefuse,
    RetentionOut,
)
from cloudphone.privacy.sealing import SubjectKey, SubjectVault
from cloudphone.privacy.subjects import personal_columns, personal_tables, subject_link
from cloudphone.store.db import Database, new_id

log = get_logger(__name__)


class PrivacyService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        keyring: Keyring,
        vault: SubjectVault,
        accounts: AccountsService,
        config: PrivacyConfig,
        data_dir: Path,
        public_url: str,
    ) -> None:
        from cloudphone.schema import metadata  # every domain's tables, resolved at run time

        self._db = db
        self._clock = clock
        self._vault = vault
        self._accounts = accounts
        self.config = config
        self.metadata = metadata()
        self.rules = enforcement(config.retention_days)
        self.ledger = ErasureLedger(
            config.erasure_ledger_file or data_dir / "erasure-ledger.jsonl", keyring
        )
        self.exports = ExportStore(data_dir / "exports", vault)
        self.erasure_hooks = ErasureHooks()
        self.mailer = NoticeMailer(config)
        self.notices = NoticeService(db, clock, config, self.mailer)
        self._public_url = public_url.rstrip("/")
        self._task: asyncio.Task[None] | None = None

    # -- the periodic job -----------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="privacy-housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.housekeeping()
            except Exception:  # the loop must survive one bad run; the next one retries
                log.exception("privacy housekeeping failed")
            await asyncio.sleep(self.config.purge_interval_s)

    async def housekeeping(self) -> RetentionOut:
        """One run of the job: erasures replayed (a restored backup is caught even if nobody
        ran ``replay-erasures``), retention purge, expired export links, pending notices."""
        await self.replay_erasures()
        report = await self.retention(dry_run=False)
        await self.notices.deliver_pending_notices()
        return report

    async def retention(self, *, dry_run: bool) -> RetentionOut:
        now = self._clock.now()
        report = await purge(
            self._db,
            self.metadata,
            self.rules,
            now,
            batch_size=self.config.purge_batch_size,
            dry_run=dry_run,
        )
        async with self._db.transaction() as s:
            if dry_run:
                removed = int(
                    await s.scalar(
                        select(func.count())
                        .select_from(SubjectExport)
                        .where(SubjectExport.expires_at <= now)
                    )
                    or 0
                )
            else:
                removed = await self.exports.remove_expired(s, now)
            # An account deleted outright (not erased) leaves its key behind; without its
            # subject the key serves nothing ("erased with it"), so it goes, with the
            # subject's exports.
            orphans = list(
                (
                    await s.scalars(
                        select(SubjectKey.subject_id).where(
                            SubjectKey.subject_id.not_in(select(Account.id))
                        )
                    )
                ).all()
            )
            if orphans and not dry_run:
                for subject_id in orphans:
                    await self.exports.remove_for_subject(s, subject_id)
                await s.run_sync(lambda ss: self._vault.shred(ss.connection(), orphans))
                await record_audit(
                    s,
                    action="retention.purged",
                    actor="retention",
                    tenant_id=None,
                    object_type="table",
                    object_id="subject_keys",
                    reason=f"account: {len(orphans)} keys of deleted accounts",
                    at=now,
                )
        if orphans:
            report.rows["subject_keys (account)"] = len(orphans)
        return RetentionOut(
            now=now, dry_run=dry_run, rows=report.rows, held=report.held, exports_removed=removed
        )

    # -- isolation helpers ----------------------------------------------------------------

    async def _account(
        self, s: AsyncSession, who: Principal | None, account_id: str, *, operator: bool = False
    ) -> Account:
        account = await s.get(Account, account_id)
        visible = account is not None and (
            who is None
            or (who.is_operator and who.may_administer(account.tenant_id))
            or (not operator and not who.is_operator and who.account_id == account_id)
        )
        if not visible:
            raise NotFound("no such account")
        assert account is not None
        return account

    async def _request(
        self, s: AsyncSession, who: Principal | None, request_id: str
    ) -> SubjectRequest:
        request = await s.get(SubjectRequest, request_id)
        if request is None or (
            who is not None
            and not (
                who.may_administer(request.tenant_id)
                or (not who.is_operator and who.account_id == request.account_id)
            )
        ):
            raise NotFound("no such request")
        return request

    # -- data-subject requests (P19, P20) -------------------------------------------------

    def _out(self, r: SubjectRequest, download_url: str | None = None) -> RequestOut:
        now = self._clock.now()
        return RequestOut(
            id=r.id,
            tenant_id=r.tenant_id,
            account_id=r.account_id,
            kind=RequestKind(r.kind),
            state=RequestState(r.state),
            source=r.source,
            received_at=r.received_at,
            due_at=r.due_at,
            verified_at=r.verified_at,
            closed_at=r.closed_at,
            refusal_reason=r.refusal_reason,
            result=r.result,
            overdue_soon=r.overdue_soon(now, timedelta(days=self.config.overdue_soon_days)),
            overdue=r.overdue(now),
            download_url=download_url,
        )

    def _new_request(self, account: Account, kind: RequestKind, source: str) -> SubjectRequest:
        now = self._clock.now()
        return SubjectRequest(
            id=new_id(),
            tenant_id=account.tenant_id,
            account_id=account.id,
            kind=kind.value,
            state=RequestState.UNVERIFIED.value,
            source=source,
            received_at=now,
            due_at=now + timedelta(days=self.config.request_due_days),
            refusal_reason="",
            result={},
        )

    async def submit_own_request(self, who: Principal, body: RequestCreate) -> RequestOut:
        """Intake from the signed-in app: the device credential is the identity check. What
        needs no operator judgement (confirm, access, rectify, a directive) is answered at
        once; an erasure waits for the operator to carry it out."""
        if who.account_id is None or who.is_operator:
            raise Forbidden("this operation is for a device credential")
        _check_inputs(body.kind, RequestProcess(changes=body.changes, directive=body.directive))
        async with self._db.transaction() as s:
            account = await self._account(s, who, who.account_id)
            request = self._new_request(account, body.kind, "app")
            request.move(RequestState.VERIFIED, self._clock.now())
            s.add(request)
        if body.kind is RequestKind.ERASE:
            return self._out(request)
        return await self.process_request(
            None, request.id, RequestProcess(changes=body.changes, directive=body.directive)
        )

    async def file_request(
        self, who: Principal | None, account_id: str, body: RequestCreate
    ) -> RequestOut:
        """An operator files a request on the user's behalf; identity is verified next."""
        require_operator(who)
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id, operator=True)
            request = self._new_request(account, body.kind, "operator")
            s.add(request)
        return self._out(request)

    async def verify_request(self, who: Principal | None, request_id: str) -> RequestOut:
        require_operator(who)
        async with self._db.transaction() as s:
            request = await self._request(s, who, request_id)
            request.move(RequestState.VERIFIED, self._clock.now())
            return self._out(request)

    async def refuse_request(
        self, who: Principal | None, request_id: str, body: RequestRefuse
    ) -> RequestOut:
        require_operator(who)
        async with self._db.transaction() as s:
            request = await self._request(s, who, request_id)
            request.move(RequestState.REFUSED, self._clock.now())
            request.refusal_reason = body.reason
            return self._out(request)

    async def get_request(self, who: Principal | None, request_id: str) -> RequestOut:
        async with self._db.transaction() as s:
            return self._out(await self._request(s, who, request_id))

    async def list_requests(
        self, who: Principal | None, tenant_id: str, *, open_only: bool = False
    ) -> list[RequestOut]:
        require_operator(who)
        require_tenant(who, tenant_id)
        query = select(SubjectRequest).where(SubjectRequest.tenant_id == tenant_id)
        if open_only:
            query = query.where(
                SubjectRequest.state.not_in([RequestState.DONE.value, RequestState.REFUSED.value])
            )
        async with self._db.transaction() as s:
            rows = await s.scalars(query.order_by(SubjectRequest.due_at, SubjectRequest.id))
            return [self._out(r) for r in rows.all()]

    async def own_requests(self, who: Principal) -> list[RequestOut]:
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(SubjectRequest)
                .where(SubjectRequest.account_id == (who.account_id or ""))
                .order_by(SubjectRequest.received_at, SubjectRequest.id)
            )
            return [self._out(r) for r in rows.all()]

    async def overdue_soon(self, who: Principal | None) -> list[RequestOut]:
        """Open requests from day 20 on (P20), oldest due first, across the caller's tenants."""
        now = self._clock.now()
        soon = now - timedelta(days=self.config.overdue_soon_days)
        query = select(SubjectRequest).where(
            SubjectRequest.state.not_in([RequestState.DONE.value, RequestState.REFUSED.value]),
            SubjectRequest.received_at <= soon,
        )
        require_operator(who)
        if who is not None and who.tenant_id is not None:
            query = query.where(SubjectRequest.tenant_id == who.tenant_id)
        async with self._db.transaction() as s:
            rows = await s.scalars(query.order_by(SubjectRequest.due_at))
            return [self._out(r) for r in rows.all()]

    async def process_request(
        self, who: Principal | None, request_id: str, body: RequestProcess
    ) -> RequestOut:
        """Carry out a verified request and close it. Should the work fail (a legal hold), the
        request stays in progress — open, counting towards its due date — and may be retried
        or refused."""
        require_operator(who)
        now = self._clock.now()
        async with self._db.transaction() as s:
            request = await self._request(s, who, request_id)
            kind, account_id = RequestKind(request.kind), request.account_id
            _check_inputs(kind, body)
            if request.state != RequestState.IN_PROGRESS.value:
                request.move(RequestState.IN_PROGRESS, now)
            tenant_id = request.tenant_id
        download_url = None
        result: dict[str, object]
        match kind:
            case RequestKind.CONFIRM:
                result = await self._confirm(account_id)
            case RequestKind.ACCESS:
                result, download_url = await self._export(account_id, tenant_id, request_id, who)
            case RequestKind.RECTIFY:
                result = await self._rectify(account_id, body.changes)
            case RequestKind.ERASE:
                tables = await self.erase(who, account_id, reason=f"request {request_id}")
                result = {"tables": tables}
            case RequestKind.POST_MORTEM:
                if body.directive is None:
                    raise InvalidInput("a post-mortem request needs its directive")
                await self.set_directive(None, account_id, body.directive)
                result = {"action": body.directive.action.value}
        async with self._db.transaction() as s:
            request = await self._request(s, None, request_id)
            request.result = result
            request.move(RequestState.DONE, self._clock.now())
            return self._out(request, download_url)

    async def _confirm(self, account_id: str) -> dict[str, object]:
        categories: set[str] = set()
        async with self._db.transaction() as s:
            for table in personal_tables(self.metadata):
                link = subject_link(table, self.metadata)
                if link is None:
                    continue
                if await s.scalar(
                    select(func.count()).select_from(table).where(link == account_id)
                ):
                    categories.update(decl.category for _, decl in personal_columns(table))
        return {"processing": bool(categories), "categories": sorted(categories)}

    async def _export(
        self, account_id: str, tenant_id: str, request_id: str | None, who: Principal | None
    ) -> tuple[dict[str, object], str]:
        now = self._clock.now()
        async with self._db.transaction() as s:
            document = await build_export(s, self.metadata, self._vault, account_id)
            document["generated_at"] = now.isoformat()
            export, token = await self.exports.create(
                s,
                document,
                account_id=account_id,
                tenant_id=tenant_id,
                now=now,
                lifetime=timedelta(hours=self.config.export_link_hours),
                request_id=request_id,
            )
            await record_audit(
                s,
                action="subject.exported",
                actor=actor_of(who),
                tenant_id=tenant_id,
                object_type="account",
                object_id=account_id,
                reason=f"export {export.id}",
                at=now,
            )
        url = f"{self._public_url}/v1/privacy/exports/{export.id}/download?token={token}"
        return {"export_id": export.id, "expires_at": export.expires_at.isoformat()}, url

    async def download_export(self, export_id: str, token: str) -> bytes:
        """The expiring link is the credential: whoever holds it gets the export."""
        now = self._clock.now()
        async with self._db.transaction() as s:
            body = await self.exports.open(s, export_id, token, now)
            export = await s.get(SubjectExport, export_id)
            assert export is not None
            await record_audit(
                s,
                action="export.downloaded",
                actor="link",
                tenant_id=export.tenant_id,
                object_type="export",
                object_id=export_id,
                at=now,
            )
        return body

    async def _rectify(self, account_id: str, changes: RectifyChanges | None) -> dict[str, object]:
        if changes is None or not changes.model_fields_set:
            raise InvalidInput("a rectification needs the corrected fields")
        # Through the owning domain's service, which validates and seals as it always does.
        await self._accounts.update_account(
            None,
            account_id,
            AccountUpdate(display_name=changes.display_name, notice_email=changes.notice_email),
        )
        return {"fields": sorted(changes.model_fields_set)}

    # -- erasure (P19) --------------------------------------------------------------------

    async def erase(self, who: Principal | None, account_id: str, *, reason: str) -> list[str]:
        require_operator(who)
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id, operator=True)
            tenant_id = account.tenant_id
        return await erase_subject(
            self._db,
            self.metadata,
            self._vault,
            self.ledger,
            self.erasure_hooks,
            account_id=account_id,
            tenant_id=tenant_id,
            now=self._clock.now(),
            actor=actor_of(who),
            reason=reason,
            on_erase=self._forget_exports,
        )

    async def _forget_exports(self, s: AsyncSession, account_id: str) -> None:
        await self.exports.remove_for_subject(s, account_id)

    async def replay_erasures(self) -> list[str]:
        """After restoring a backup (CLI only): erase again whoever the ledger lists."""
        return await replay_erasures(
            self._db,
            self.metadata,
            self._vault,
            self.ledger,
            self.erasure_hooks,
            self._clock.now(),
            on_erase=self._forget_exports,
        )

    # -- post-mortem directives -----------------------------------------------------------

    async def set_directive(
        self, who: Principal | None, account_id: str, body: DirectiveIn
    ) -> DirectiveOut:
        if body.action is PostMortemAction.EXPORT and not body.designated_contact:
            raise InvalidInput("an export directive needs the designated person's e-mail")
        now = self._clock.now()
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id)
            directive = await s.get(PostMortemDirective, account.id)
            if directive is None:
                directive = PostMortemDirective(account_id=account.id, tenant_id=account.tenant_id)
                s.add(directive)
            directive.action = body.action.value
            directive.designated_contact = body.designated_contact
            directive.updated_at = now
            return _directive_out(directive)

    async def get_directive(self, who: Principal | None, account_id: str) -> DirectiveOut:
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id)
            directive = await s.get(PostMortemDirective, account.id)
            if directive is None:
                raise NotFound("no post-mortem directive for this account")
            return _directive_out(directive)

    async def record_death(self, who: Principal | None, account_id: str) -> RequestOut:
        """An operator records the holder's death; the directive (default: keep) is carried
        out at once and the outcome kept as a closed post-mortem request."""
        require_operator(who)
        now = self._clock.now()
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id, operator=True)
            directive = await s.get(PostMortemDirective, account.id)
            action = PostMortemAction(directive.action) if directive else PostMortemAction.KEEP
            contact = directive.designated_contact if directive else None
            if directive is not None:
                directive.death_recorded_at = now
            request = self._new_request(account, RequestKind.POST_MORTEM, "operator")
            request.move(RequestState.VERIFIED, now)
            request.move(RequestState.IN_PROGRESS, now)
            s.add(request)
            tenant_id = account.tenant_id
            await record_audit(
                s,
                action="subject.death_recorded",
                actor=actor_of(who),
                tenant_id=tenant_id,
                object_type="account",
                object_id=account_id,
                reason=action.value,
                at=now,
            )
        result: dict[str, object] = {"action": action.value}
        if action is PostMortemAction.ERASE:
            result["tables"] = await self.erase(who, account_id, reason="post-mortem directive")
        elif action is PostMortemAction.EXPORT and contact:
            summary, url = await self._export(account_id, tenant_id, request.id, who)
            result.update(summary)
            try:
                await self.mailer.send(
                    contact,
                    "Data export you were designated to receive",
                    "You were designated to receive this account's data. The link expires "
                    f"{summary['expires_at']}:\n\n{url}\n",
                )
                result["sent"] = True
            except OSError:
                result["sent"] = False
        async with self._db.transaction() as s:
            request = await self._request(s, None, request.id)
            request.result = result
            request.move(RequestState.DONE, self._clock.now())
            return self._out(request)

    # -- legal holds ----------------------------------------------------------------------

    async def place_hold(self, who: Principal | None, account_id: str, body: HoldCreate) -> HoldOut:
        require_operator(who)
        now = self._clock.now()
        async with self._db.transaction() as s:
            account = await self._account(s, who, account_id, operator=True)
            hold = LegalHold(
                id=new_id(),
                tenant_id=account.tenant_id,
                account_id=account.id,
                reason=body.reason,
                placed_by=actor_of(who),
                placed_at=now,
            )
            s.add(hold)
            await record_audit(
                s,
                action="legal_hold.placed",
                actor=actor_of(who),
                tenant_id=account.tenant_id,
                object_type="account",
                object_id=account.id,
                reason=body.reason,
                at=now,
            )
            return _hold_out(hold)

    async def release_hold(self, who: Principal | None, hold_id: str) -> HoldOut:
        require_operator(who)
        now = self._clock.now()
        async with self._db.transaction() as s:
            hold = await s.get(LegalHold, hold_id)
            if hold is None or (who is not None and not who.may_administer(hold.tenant_id)):
                raise NotFound("no such legal hold")
            if hold.released_at is None:
                hold.released_at = now
                await record_audit(
                    s,
                    action="legal_hold.released",
                    actor=actor_of(who),
                    tenant_id=hold.tenant_id,
                    object_type="account",
                    object_id=hold.account_id,
                    reason=hold.id,
                    at=now,
                )
            return _hold_out(hold)

    async def list_holds(self, who: Principal | None, tenant_id: str) -> list[HoldOut]:
        require_operator(who)
        require_tenant(who, tenant_id)
        async with self._db.transaction() as s:
            rows = await s.scalars(
                select(LegalHold)
                .where(LegalHold.tenant_id == tenant_id)
                .order_by(LegalHold.placed_at, LegalHold.id)
            )
            return [_hold_out(h) for h in rows.all()]

    # -- audit ----------------------------------------------------------------------------

    async def audit(self, who: Principal | None, tenant_id: str | None) -> list[AuditOut]:
        require_operator(who)
        if tenant_id is None:
            if who is not None and not who.is_global_operator:
                raise Forbidden("only a global operator reads the whole audit trail")
        else:
            require_tenant(who, tenant_id)
        async with self._db.transaction() as s:
            return [_audit_out(e) for e in await audit_trail(s, tenant_id=tenant_id)]

    async def devices_of(self, account_id: str) -> list[str]:
        async with self._db.transaction() as s:
            return list(
                (await s.scalars(select(Device.id).where(Device.account_id == account_id))).all()
            )


def _check_inputs(kind: RequestKind, body: RequestProcess) -> None:
    """What a kind needs, checked before the request moves."""
    if kind is RequestKind.RECTIFY and (body.changes is None or not body.changes.model_fields_set):
        raise InvalidInput("a rectification needs the corrected fields")
    if kind is RequestKind.POST_MORTEM and body.directive is None:
        raise InvalidInput("a post-mortem request needs its directive")


def _directive_out(d: PostMortemDirective) -> DirectiveOut:
    return DirectiveOut(
        account_id=d.account_id,
        action=PostMortemAction(d.action),
        has_designated_contact=d.designated_contact is not None,
        updated_at=d.updated_at,
        death_recorded_at=d.death_recorded_at,
    )


def _hold_out(h: LegalHold) -> HoldOut:
    return HoldOut(
        id=h.id,
        tenant_id=h.tenant_id,
        account_id=h.account_id,
        reason=h.reason,
        placed_by=h.placed_by,
        placed_at=h.placed_at,
        released_at=h.released_at,
    )


def _audit_out(e: AuditEvent) -> AuditOut:
    return AuditOut(
        id=e.id,
        at=e.at,
        action=e.action,
        actor=e.actor,
        tenant_id=e.tenant_id,
        object_type=e.object_type,
        object_id=e.object_id,
        reason=e.reason,
    )

"""Privacy operations: data-subject requests, exports, post-mortem directives, legal holds,
policy versions and notices, the disclosure log and the audit trail. Thin adapters over
``PrivacyService``, which enforces tenant isolation."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from cloudphone.api.deps import DeviceDep, PrincipalDep, RuntimeDep
from cloudphone.privacy.schemas import (
    AuditOut,
    DirectiveIn,
    DirectiveOut,
    DisclosureCreate,
    DisclosureOut,
    HoldCreate,
    HoldOut,
    NoticeOut,
    PolicyCreate,
    PolicyOut,
    PublishReport,
    RequestCreate,
    RequestOut,
    RequestProcess,
    RequestRefuse,
)

router = APIRouter(prefix="/v1", tags=["privacy"])

# -- the app: the user's own requests and notices ------------------------------------------


@router.post("/privacy/requests", status_code=status.HTTP_201_CREATED, response_model=RequestOut)
async def submit_own_request(body: RequestCreate, rt: RuntimeDep, who: DeviceDep) -> RequestOut:
    """The signed-in user's request; the device credential is the identity check (P19)."""
    return await rt.privacy.submit_own_request(who, body)


@router.get("/privacy/requests", response_model=list[RequestOut])
async def own_requests(rt: RuntimeDep, who: DeviceDep) -> list[RequestOut]:
    return await rt.privacy.own_requests(who)


@router.get("/privacy/notices", response_model=list[NoticeOut])
async def own_notices(rt: RuntimeDep, who: DeviceDep) -> list[NoticeOut]:
    """In-app notices (P17, P18); fetching them records their delivery."""
    return await rt.privacy.notices.own_notices(who)


@router.post("/privacy/notices/{notice_id}/acknowledge", response_model=NoticeOut)
async def acknowledge_notice(notice_id: str, rt: RuntimeDep, who: DeviceDep) -> NoticeOut:
    return await rt.privacy.notices.acknowledge_notice(who, notice_id)


@router.get(
    "/privacy/exports/{export_id}/download",
    responses={200: {"content": {"application/json": {}}}},
)
async def download_export(export_id: str, rt: RuntimeDep, token: str = "") -> Response:
    """The expiring link from an access request; the token in it is the credential."""
    body = await rt.privacy.download_export(export_id, token)
    return Response(
        body,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="export-{export_id}.json"',
            "Cache-Control": "no-store",
        },
    )


# -- operators: requests on the user's behalf ------------------------------------------------


@router.post(
    "/accounts/{account_id}/privacy-requests",
    status_code=status.HTTP_201_CREATED,
    response_model=RequestOut,
)
async def file_request(
    account_id: str, body: RequestCreate, rt: RuntimeDep, who: PrincipalDep
) -> RequestOut:
    """Filed by an operator for the user; it starts unverified (P20)."""
    return await rt.privacy.file_request(who, account_id, body)


@router.get("/tenants/{tenant_id}/privacy-requests", response_model=list[RequestOut])
async def list_requests(
    tenant_id: str, rt: RuntimeDep, who: PrincipalDep, open_only: bool = False
) -> list[RequestOut]:
    return await rt.privacy.list_requests(who, tenant_id, open_only=open_only)


@router.get("/privacy-requests/overdue-soon", response_model=list[RequestOut])
async def overdue_soon(rt: RuntimeDep, who: PrincipalDep) -> list[RequestOut]:
    """Open requests from day 20 on, due first (P20)."""
    return await rt.privacy.overdue_soon(who)


@router.get("/privacy-requests/{request_id}", response_model=RequestOut)
async def get_request(request_id: str, rt: RuntimeDep, who: PrincipalDep) -> RequestOut:
    return await rt.privacy.get_request(who, request_id)


@router.post("/privacy-requests/{request_id}/verify", response_model=RequestOut)
async def verify_request(request_id: str, rt: RuntimeDep, who: PrincipalDep) -> RequestOut:
    return await rt.privacy.verify_request(who, request_id)


@router.post("/privacy-requests/{request_id}/process", response_model=RequestOut)
async def process_request(
    request_id: str, body: RequestProcess, rt: RuntimeDep, who: PrincipalDep
) -> RequestOut:
    """Carry out a verified request: confirm, export, rectify, erase or set the directive."""
    return await rt.privacy.process_request(who, request_id, body)


@router.post("/privacy-requests/{request_id}/refuse", response_model=RequestOut)
async def refuse_request(
    request_id: str, body: RequestRefuse, rt: RuntimeDep, who: PrincipalDep
) -> RequestOut:
    return await rt.privacy.refuse_request(who, request_id, body)


# -- post-mortem directives --------------------------------------------------------------------


@router.put("/accounts/{account_id}/post-mortem", response_model=DirectiveOut)
async def set_directive(
    account_id: str, body: DirectiveIn, rt: RuntimeDep, who: PrincipalDep
) -> DirectiveOut:
    """Set by the user (own account) or an operator on their behalf."""
    return await rt.privacy.set_directive(who, account_id, body)


@router.get("/accounts/{account_id}/post-mortem", response_model=DirectiveOut)
async def get_directive(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> DirectiveOut:
    return await rt.privacy.get_directive(who, account_id)


@router.post("/accounts/{account_id}/death", response_model=RequestOut)
async def record_death(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> RequestOut:
    """An operator records the holder's death; the directive is carried out."""
    return await rt.privacy.record_death(who, account_id)


# -- legal holds -------------------------------------------------------------------------------


@router.post(
    "/accounts/{account_id}/legal-holds",
    status_code=status.HTTP_201_CREATED,
    response_model=HoldOut,
)
async def place_hold(
    account_id: str, body: HoldCreate, rt: RuntimeDep, who: PrincipalDep
) -> HoldOut:
    return await rt.privacy.place_hold(who, account_id, body)


@router.get("/tenants/{tenant_id}/legal-holds", response_model=list[HoldOut])
async def list_holds(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[HoldOut]:
    return await rt.privacy.list_holds(who, tenant_id)


@router.post("/legal-holds/{hold_id}/release", response_model=HoldOut)
async def release_hold(hold_id: str, rt: RuntimeDep, who: PrincipalDep) -> HoldOut:
    return await rt.privacy.release_hold(who, hold_id)


# -- policy versions and notices (P18) -------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/policy-versions",
    status_code=status.HTTP_201_CREATED,
    response_model=PolicyOut,
)
async def create_policy(
    tenant_id: str, body: PolicyCreate, rt: RuntimeDep, who: PrincipalDep
) -> PolicyOut:
    return await rt.privacy.notices.create_policy(who, tenant_id, body)


@router.get("/tenants/{tenant_id}/policy-versions", response_model=list[PolicyOut])
async def list_policies(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[PolicyOut]:
    return await rt.privacy.notices.list_policies(who, tenant_id)


@router.post("/policy-versions/{version_id}/publish", response_model=PublishReport)
async def publish_policy(version_id: str, rt: RuntimeDep, who: PrincipalDep) -> PublishReport:
    """Notify every affected user, before the effective date (refused after it)."""
    return await rt.privacy.notices.publish_policy(who, version_id)


@router.get("/policy-versions/{version_id}/notices", response_model=list[NoticeOut])
async def policy_notices(version_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[NoticeOut]:
    """The delivery record of a version's notices."""
    return await rt.privacy.notices.notices_for(who, version_id)


# -- disclosure log (P17) ----------------------------------------------------------------------


@router.post(
    "/tenants/{tenant_id}/disclosures",
    status_code=status.HTTP_201_CREATED,
    response_model=DisclosureOut,
)
async def record_disclosure(
    tenant_id: str, body: DisclosureCreate, rt: RuntimeDep, who: PrincipalDep
) -> DisclosureOut:
    return await rt.privacy.notices.record_disclosure(who, tenant_id, body)


@router.get("/tenants/{tenant_id}/disclosures", response_model=list[DisclosureOut])
async def list_disclosures(
    tenant_id: str, rt: RuntimeDep, who: PrincipalDep
) -> list[DisclosureOut]:
    return await rt.privacy.notices.list_disclosures(who, tenant_id)


@router.post("/disclosures/{disclosure_id}/notify", response_model=PublishReport)
async def notify_disclosure(disclosure_id: str, rt: RuntimeDep, who: PrincipalDep) -> PublishReport:
    return await rt.privacy.notices.notify_disclosure(who, disclosure_id)


# -- audit -------------------------------------------------------------------------------------


@router.get("/tenants/{tenant_id}/audit", response_model=list[AuditOut])
async def tenant_audit(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[AuditOut]:
    return await rt.privacy.audit(who, tenant_id)

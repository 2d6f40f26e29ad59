"""What the app itself calls: claim an enrollment code, fetch provisioning, set push tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloudphone.accounts.schemas import (
    DeviceIssued,
    DeviceOut,
    EnrollmentClaim,
    ProvisioningDocument,
    PushTokens,
)
from cloudphone.api.deps import DeviceDep, RuntimeDep

router = APIRouter(prefix="/v1", tags=["app"])


@router.post(
    "/provisioning/claim", status_code=status.HTTP_201_CREATED, response_model=DeviceIssued
)
async def claim_enrollment(body: EnrollmentClaim, rt: RuntimeDep) -> DeviceIssued:
    return await rt.accounts.claim_enrollment(body)


@router.get("/provisioning", response_model=ProvisioningDocument)
async def provisioning(rt: RuntimeDep, who: DeviceDep) -> ProvisioningDocument:
    return await rt.accounts.provisioning(who)


@router.put("/device/push-tokens", response_model=DeviceOut)
async def set_push_tokens(body: PushTokens, rt: RuntimeDep, who: DeviceDep) -> DeviceOut:
    return await rt.accounts.set_push_tokens(who, body)

"""Push instances: the app hands its SIP account over (HTTPS only), operators watch state."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from cloudphone.api.deps import DeviceDep, PrincipalDep, RuntimeDep
from cloudphone.gateway.schemas import PushInstanceCreate, PushInstanceIssued, PushInstanceOut

router = APIRouter(prefix="/v1", tags=["push gateway"])


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lifetime_days: int | None = Field(default=None, ge=1, le=6)


@router.put(
    "/device/push-instance", status_code=status.HTTP_201_CREATED, response_model=PushInstanceIssued
)
async def create_push_instance(
    body: PushInstanceCreate, rt: RuntimeDep, who: DeviceDep
) -> PushInstanceIssued:
    """Create or replace this device's push instance."""
    return await rt.gateway.instances.create(who, body)


@router.get("/device/push-instance", response_model=PushInstanceOut)
async def get_push_instance(rt: RuntimeDep, who: DeviceDep) -> PushInstanceOut:
    return await rt.gateway.instances.get_own(who)


@router.post("/device/push-instance/refresh", response_model=PushInstanceOut)
async def refresh_push_instance(
    body: RefreshBody, rt: RuntimeDep, who: DeviceDep
) -> PushInstanceOut:
    return await rt.gateway.instances.refresh(who, body.lifetime_days)


@router.delete("/device/push-instance", status_code=status.HTTP_204_NO_CONTENT)
async def disable_push_instance(rt: RuntimeDep, who: DeviceDep) -> None:
    """Disable push: unregister upstream and erase the credentials now."""
    await rt.gateway.instances.disable(who)


@router.get("/tenants/{tenant_id}/push-instances", response_model=list[PushInstanceOut])
async def list_push_instances(
    tenant_id: str, rt: RuntimeDep, who: PrincipalDep
) -> list[PushInstanceOut]:
    return await rt.gateway.instances.list_for_tenant(who, tenant_id)


@router.get("/push-instances/{instance_id}", response_model=PushInstanceOut)
async def get_push_instance_by_id(
    instance_id: str, rt: RuntimeDep, who: PrincipalDep
) -> PushInstanceOut:
    return await rt.gateway.instances.get(who, instance_id)

"""Tenants, accounts, devices and operator tokens: operator-facing routes."""

from __future__ import annotations

from fastapi import APIRouter, status

from cloudphone.accounts.schemas import (
    AccountCreate,
    AccountOut,
    AccountUpdate,
    DeviceCreate,
    DeviceIssued,
    DeviceOut,
    EnrollmentIssued,
    OperatorTokenCreate,
    OperatorTokenIssued,
    TenantCreate,
    TenantOut,
    TenantUpdate,
)
from cloudphone.api.deps import PrincipalDep, RuntimeDep

router = APIRouter(prefix="/v1", tags=["accounts"])


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantOut)
async def create_tenant(body: TenantCreate, rt: RuntimeDep, who: PrincipalDep) -> TenantOut:
    return await rt.accounts.create_tenant(who, body)


@router.get("/tenants", response_model=list[TenantOut])
async def list_tenants(rt: RuntimeDep, who: PrincipalDep) -> list[TenantOut]:
    return await rt.accounts.list_tenants(who)


@router.get("/tenants/{tenant_id}", response_model=TenantOut)
async def get_tenant(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> TenantOut:
    return await rt.accounts.get_tenant(who, tenant_id)


@router.patch("/tenants/{tenant_id}", response_model=TenantOut)
async def update_tenant(
    tenant_id: str, body: TenantUpdate, rt: RuntimeDep, who: PrincipalDep
) -> TenantOut:
    return await rt.accounts.update_tenant(who, tenant_id, body)


@router.delete("/tenants/{tenant_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tenant(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> None:
    await rt.accounts.delete_tenant(who, tenant_id)


@router.post(
    "/tenants/{tenant_id}/operator-tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=OperatorTokenIssued,
)
async def issue_operator_token(
    tenant_id: str, body: OperatorTokenCreate, rt: RuntimeDep, who: PrincipalDep
) -> OperatorTokenIssued:
    return await rt.accounts.issue_operator_token(who, tenant_id, body.label)


@router.post(
    "/tenants/{tenant_id}/accounts", status_code=status.HTTP_201_CREATED, response_model=AccountOut
)
async def create_account(
    tenant_id: str, body: AccountCreate, rt: RuntimeDep, who: PrincipalDep
) -> AccountOut:
    return await rt.accounts.create_account(who, tenant_id, body)


@router.get("/tenants/{tenant_id}/accounts", response_model=list[AccountOut])
async def list_accounts(tenant_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[AccountOut]:
    return await rt.accounts.list_accounts(who, tenant_id)


@router.get("/accounts/{account_id}", response_model=AccountOut)
async def get_account(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> AccountOut:
    return await rt.accounts.get_account(who, account_id)


@router.patch("/accounts/{account_id}", response_model=AccountOut)
async def update_account(
    account_id: str, body: AccountUpdate, rt: RuntimeDep, who: PrincipalDep
) -> AccountOut:
    return await rt.accounts.update_account(who, account_id, body)


@router.delete("/accounts/{account_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_account(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> None:
    await rt.accounts.delete_account(who, account_id)


@router.post(
    "/accounts/{account_id}/devices",
    status_code=status.HTTP_201_CREATED,
    response_model=DeviceIssued,
)
async def create_device(
    account_id: str, body: DeviceCreate, rt: RuntimeDep, who: PrincipalDep
) -> DeviceIssued:
    return await rt.accounts.create_device(who, account_id, body)


@router.get("/accounts/{account_id}/devices", response_model=list[DeviceOut])
async def list_devices(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> list[DeviceOut]:
    return await rt.accounts.list_devices(who, account_id)


@router.post(
    "/accounts/{account_id}/enrollments",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollmentIssued,
)
async def create_enrollment(account_id: str, rt: RuntimeDep, who: PrincipalDep) -> EnrollmentIssued:
    return await rt.accounts.create_enrollment(who, account_id)


@router.get("/devices/{device_id}", response_model=DeviceOut)
async def get_device(device_id: str, rt: RuntimeDep, who: PrincipalDep) -> DeviceOut:
    return await rt.accounts.get_device(who, device_id)


@router.delete("/devices/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_device(device_id: str, rt: RuntimeDep, who: PrincipalDep) -> None:
    await rt.accounts.delete_device(who, device_id)

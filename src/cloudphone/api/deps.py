"""Request dependencies: the runtime, the caller's identity, the HTTPS rule (promise P3)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloudphone.accounts.credentials import Principal
from cloudphone.core.problems import Forbidden, HttpsRequired, Unauthorized
from cloudphone.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="Operator token or device credential")


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def require_https(request: Request, rt: RuntimeDep) -> None:
    """Promise P3: account details travel only over HTTPS. Plain HTTP is refused before any
    body is read, unless the operator explicitly runs in development mode. A TLS-terminating
    proxy listed in ``trusted_proxies`` is believed through uvicorn's proxy headers."""
    if request.url.scheme != "https" and not rt.settings.development_mode:
        raise HttpsRequired(
            "this API is served over HTTPS only; plain HTTP is refused (development mode is off)"
        )


async def principal(
    rt: RuntimeDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None:
        raise Unauthorized("send an operator token or a device credential as a Bearer token")
    return await rt.accounts.authenticate(creds.credentials)


PrincipalDep = Annotated[Principal, Depends(principal)]


async def device_principal(who: PrincipalDep) -> Principal:
    if who.device_id is None:
        raise Forbidden("this operation is for a device credential")
    return who


DeviceDep = Annotated[Principal, Depends(device_principal)]

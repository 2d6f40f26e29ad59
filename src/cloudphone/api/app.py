"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel

from cloudphone import __version__
from cloudphone.api import problems
from cloudphone.api.deps import require_https
from cloudphone.api.routes import accounts, gateway, health, privacy, provisioning
from cloudphone.runtime import Runtime


class ProblemSchema(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def create_app(rt: Runtime, *, own_runtime: bool = False) -> FastAPI:
    """``own_runtime``: close the runtime's resources when the app shuts down."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if own_runtime:
            await rt.gateway.start()
            await rt.privacy.start()  # retention purge, notices
        yield
        if own_runtime:
            await rt.close()

    app = FastAPI(
        title="cloudphone",
        version=__version__,
        description="Server side of a white-label softphone app: provisioning, push gateway, "
        "privacy operations. Errors are RFC 9457 problem documents.",
        lifespan=lifespan,
        responses=problems.PROBLEM_RESPONSES,
    )
    app.state.runtime = rt
    problems.install(app)
    app.include_router(health.router)
    # Everything under /v1 may carry account details: HTTPS only (P3).
    for router in (accounts.router, provisioning.router, gateway.router, privacy.router):
        app.include_router(router, dependencies=[Depends(require_https)])

    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
            ProblemSchema.model_json_schema()
        )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app

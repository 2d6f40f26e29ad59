"""Health, readiness, version and the shape of errors (RFC 9457)."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from cloudphone import __version__
from cloudphone.runtime import Runtime


async def test_healthz_readyz_version(api: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready"}
    version = (await api.get("/version")).json()
    assert version["version"] == __version__
    assert version["database"] == runtime.db.dialect


async def test_readyz_reports_a_dead_database(api: httpx.AsyncClient, runtime: Runtime) -> None:
    working = runtime.db.engine
    runtime.db.engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        r = await api.get("/readyz")
    finally:
        await runtime.db.engine.dispose()
        runtime.db.engine = working
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/not-ready")


async def test_unknown_route_and_method_are_problem_documents(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    r = await api.delete("/healthz")
    assert r.status_code == 405
    assert r.json()["status"] == 405


async def test_malformed_json_is_a_422_problem(api: httpx.AsyncClient, runtime: Runtime) -> None:
    token = (await runtime.accounts.issue_operator_token(None, None)).token
    r = await api.post(
        "/v1/tenants",
        headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 422
    body = r.json()
    assert body["type"].endswith("/invalid-input")
    assert body["errors"]


async def test_openapi_document_lists_routes_and_problem_schema(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "/v1/provisioning" in spec["paths"]
    assert "/v1/tenants/{tenant_id}/accounts" in spec["paths"]
    assert "Problem" in spec["components"]["schemas"]

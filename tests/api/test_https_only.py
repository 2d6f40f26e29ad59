"""Promise P3: SIP account details reach the server only over HTTPS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cloudphone.accounts.models import Tenant
from cloudphone.api.app import create_app
from cloudphone.core.clock import FakeClock
from cloudphone.runtime import Runtime
from cloudphone.store.migrate import upgrade
from tests.accounts.helpers import global_operator
from tests.conftest import make_settings


async def _client(rt: Runtime, scheme: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(rt))
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://cloudphone.test")


@pytest.fixture
async def dev_runtime(
    database_url: str, tmp_path: Path, runtime: Runtime
) -> AsyncIterator[Runtime]:
    """A second runtime on the same database, in explicit development mode."""
    rt = Runtime.build(
        make_settings(database_url, tmp_path / "dev", development_mode=True), clock=FakeClock()
    )
    await upgrade(rt.db)
    yield rt
    await rt.close()


@pytest.mark.promise("P3")
async def test_plain_http_is_refused_and_nothing_is_stored(runtime: Runtime) -> None:
    root = await global_operator(runtime)
    async with await _client(runtime, "http") as plain:
        r = await plain.post("/v1/tenants", headers=root, json={"name": "over-http"})
    assert r.status_code == 403
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/https-required")
    async with runtime.db.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(Tenant)) == 0


@pytest.mark.promise("P3")
async def test_every_v1_route_refuses_plain_http(runtime: Runtime) -> None:
    async with await _client(runtime, "http") as plain:
        spec = (await plain.get("/openapi.json")).json()
        for path, operations in spec["paths"].items():
            if not path.startswith("/v1/"):
                continue
            for method in operations:
                r = await plain.request(method.upper(), path.replace("{", "x").replace("}", ""))
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["type"].endswith("/https-required")


@pytest.mark.promise("P3")
async def test_https_is_accepted(runtime: Runtime) -> None:
    root = await global_operator(runtime)
    async with await _client(runtime, "https") as secure:
        r = await secure.post("/v1/tenants", headers=root, json={"name": "over-https"})
    assert r.status_code == 201


@pytest.mark.promise("P3")
async def test_plain_http_only_in_explicit_development_mode(dev_runtime: Runtime) -> None:
    root = await global_operator(dev_runtime)
    async with await _client(dev_runtime, "http") as plain:
        r = await plain.post("/v1/tenants", headers=root, json={"name": "dev-http"})
    assert r.status_code == 201

"""Shared fixtures: the database backends (SQLite always, PostgreSQL where reachable), a runtime
per test, an HTTPS API client, and the promise report (``pytest --promises``)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import create_async_engine

from cloudphone.api.app import create_app
from cloudphone.core.clock import FakeClock
from cloudphone.core.crypto import Keyring
from cloudphone.core.settings import Settings
from cloudphone.gateway.upstream import Upstream
from cloudphone.runtime import Runtime
from cloudphone.schema import metadata
from cloudphone.store.migrate import upgrade
from cloudphone.testing.peers import missing_peer

PG_ADMIN_URL = os.environ.get(
    "CLOUDPHONE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
TEST_KEYRING = Keyring.generate_entry("test1")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--promises", action="store_true", help="print which promises passing tests prove"
    )
    parser.addoption(
        "--backend",
        action="append",
        choices=["sqlite", "postgresql"],
        help="database backends to run on (default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        backends = metafunc.config.getoption("--backend") or ["sqlite", "postgresql"]
        only = metafunc.definition.get_closest_marker("only_backend")
        if only is not None:
            # A test about one backend's own mechanism runs there only (not a skip elsewhere).
            backends = [b for b in backends if b == only.args[0]]
        metafunc.parametrize("backend", backends, scope="session", indirect=True)


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


async def _pg_admin(statement: str) -> None:
    engine = create_async_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(statement)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One migrated database per backend for the whole session; tests empty it afterwards."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "cloudphone.db"
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = f"cloudphone_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # OSError, asyncpg errors: the peer is not there
        missing_peer(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "master_key": TEST_KEYRING,
        "public_url": "https://cloudphone.test",
        "gateway": {"sip_port": 0},  # an ephemeral port: tests run side by side
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream() -> Upstream | None:
    """The gateway's registration engine; None builds the real one. Overridden where a test
    drives the instance lifecycle without a provider."""
    return None


@pytest.fixture
async def runtime(
    database_url: str, tmp_path: Path, clock: FakeClock, upstream: Upstream | None
) -> AsyncIterator[Runtime]:
    rt = Runtime.build(
        make_settings(database_url, tmp_path / "data"), clock=clock, upstream=upstream
    )
    await upgrade(rt.db)
    try:
        yield rt
    finally:
        await empty_database(rt)
        await rt.close()


async def empty_database(rt: Runtime) -> None:
    """Leave the session's database empty for the next test."""
    async with rt.db.transaction() as s:
        if rt.db.dialect == "postgresql":
            # The audit trail refuses DELETE (append-only) unless a purge cut-off is set.
            await s.execute(text("SET LOCAL cloudphone.audit_purge_before = 'infinity'"))
        for table in reversed(metadata().sorted_tables):
            await s.execute(delete(table))


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTPS client on the app (the scheme is what the P3 rule looks at)."""
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="https://cloudphone.test") as c:
        yield c


# -- the promise report ---------------------------------------------------------------------

_proven: dict[str, set[str]] = defaultdict(set)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for promise in getattr(report, "promises", ()):
            _proven[promise].add(report.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.promises = [m.args[0] for m in item.iter_markers("promise")]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not config.getoption("--promises"):
        return
    terminalreporter.section("privacy promises proven by passing tests")
    for promise in sorted(_proven, key=lambda p: int(p[1:])):
        tests = sorted(_proven[promise])
        terminalreporter.write_line(f"{promise}: {len(tests)} tests")
        for nodeid in tests:
            terminalreporter.write_line(f"    {nodeid}")


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI on embedded defaults in a throwaway data directory, with the test keyring."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDPHONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLOUDPHONE_MASTER_KEY", TEST_KEYRING)
    monkeypatch.delenv("CLOUDPHONE_DATABASE_URL", raising=False)

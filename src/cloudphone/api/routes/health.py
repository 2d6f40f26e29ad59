"""Liveness, readiness and version: unauthenticated, no personal data."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from cloudphone import __version__
from cloudphone.api.deps import RuntimeDep
from cloudphone.core.problems import Problem

router = APIRouter(tags=["health"])


class Status(BaseModel):
    status: str


class Version(BaseModel):
    name: str = "cloudphone"
    version: str
    database: str


class NotReady(Problem):
    status, kind, title = 503, "not-ready", "Not ready"


@router.get("/healthz", response_model=Status)
async def healthz() -> Status:
    return Status(status="ok")


@router.get("/readyz", response_model=Status)
async def readyz(rt: RuntimeDep) -> Status:
    try:
        await rt.db.ping()
    except Exception as exc:
        raise NotReady("the database is not reachable") from exc
    return Status(status="ready")


@router.get("/version", response_model=Version)
async def version(rt: RuntimeDep) -> Version:
    return Version(version=__version__, database=rt.db.dialect)

"""Shapes the privacy domain accepts and returns (also the API's bodies)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudphone.privacy.requests import PostMortemAction, RequestKind, RequestState

_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class RectifyChanges(BaseModel):
    """Corrections, applied through the accounts service; not kept in the request."""

    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, max_length=200)
    notice_email: str | None = Field(default=None, max_length=254, pattern=_EMAIL)


class DirectiveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: PostMortemAction
    designated_contact: str | None = Field(
        default=None, max_length=254, pattern=_EMAIL, description="E-mail for action=export."
    )


class DirectiveOut(BaseModel):
    account_id: str
    action: PostMortemAction
    has_designated_contact: bool
    updated_at: datetime
    death_recorded_at: datetime | None


class RequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: RequestKind
    changes: RectifyChanges | None = Field(default=None, description="For kind=rectify.")
    directive: DirectiveIn | None = Field(default=None, description="For kind=post_mortem.")


class RequestProcess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    changes: RectifyChanges | None = None
    directive: DirectiveIn | None = None


class RequestRefuse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="Names no one.")


class RequestOut(BaseModel):
    id: str
    tenant_id: str
    account_id: str
    kind: RequestKind
    state: RequestState
    source: str
    received_at: datetime
    due_at: datetime
    verified_at: datetime | None
    closed_at: datetime | None
    refusal_reason: str
    result: dict[str, Any]
    overdue_soon: bool
    overdue: bool
    download_url: str | None = Field(
        default=None, description="An access export's expiring link; shown once."
    )


class HoldCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=500, description="The order's reference.")


class HoldOut(BaseModel):
    id: str
    tenant_id: str
    account_id: str
    reason: str
    placed_by: str
    placed_at: datetime
    released_at: datetime | None


class PolicyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str = Field(min_length=1, max_length=64)
    summary: str = Field(min_length=1, max_length=20_000)
    effective_at: datetime
    changes_data_use: bool = True


class PolicyOut(BaseModel):
    id: str
    tenant_id: str
    version: str
    summary: str
    changes_data_use: bool
    effective_at: datetime
    created_at: datetime
    published_at: datetime | None


class PublishReport(BaseModel):
    version_id: str
    in_app: int
    emailed: int
    email_failures: int


class NoticeOut(BaseModel):
    id: str
    topic: str
    ref_id: str
    channel: str
    title: str
    body: str
    created_at: datetime
    delivered_at: datetime | None
    acknowledged_at: datetime | None


class DisclosureCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    authority: str = Field(min_length=1, max_length=200)
    legal_basis: str = Field(min_length=1, max_length=500)
    scope: str = Field(min_length=1, max_length=5000)
    account_ids: list[str] = Field(default_factory=list, max_length=10_000)
    disclosed_at: datetime | None = None


class DisclosureOut(BaseModel):
    id: str
    tenant_id: str
    authority: str
    legal_basis: str
    scope: str
    account_ids: list[str]
    disclosed_at: datetime
    recorded_at: datetime
    notified_at: datetime | None


class AuditOut(BaseModel):
    id: str
    at: datetime
    action: str
    actor: str
    tenant_id: str | None
    object_type: str
    object_id: str
    reason: str


class RetentionOut(BaseModel):
    now: datetime
    dry_run: bool
    rows: dict[str, int]
    held: dict[str, int]
    exports_removed: int

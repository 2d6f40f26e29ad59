"""Data-subject requests (P19, P20) and post-mortem directives.

A request moves through a small state table; the due date is fixed at intake (received + 30
days, never later than the policy's promise) and the request counts as overdue-soon from day
20. Nothing personal is stored in a request: the changes a rectification asks for are applied
when it is processed and not kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloudphone.core.datamap import not_personal, personal
from cloudphone.core.problems import Conflict
from cloudphone.privacy.sealing import SealedField, sealed
from cloudphone.store.db import Base, UTCDateTime, new_id


class RequestKind(StrEnum):
    CONFIRM = "confirm"
    ACCESS = "access"
    RECTIFY = "rectify"
    ERASE = "erase"
    POST_MORTEM = "post_mortem"


class RequestState(StrEnum):
    UNVERIFIED = "unverified"
    VERIFIED = "verified"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    REFUSED = "refused"


TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.UNVERIFIED: frozenset({RequestState.VERIFIED, RequestState.REFUSED}),
    RequestState.VERIFIED: frozenset({RequestState.IN_PROGRESS, RequestState.REFUSED}),
    RequestState.IN_PROGRESS: frozenset({RequestState.DONE, RequestState.REFUSED}),
    RequestState.DONE: frozenset(),
    RequestState.REFUSED: frozenset(),
}


class InvalidTransition(Conflict):
    kind, title = "invalid-transition", "Not possible in the request's state"


class SubjectRequest(Base):
    __tablename__ = "subject_requests"

    id: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=new_id, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    # A plain id, no foreign key: the record of an answered request outlives the erasure.
    account_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    kind: Mapped[str] = mapped_column(String(16), info=not_personal())
    state: Mapped[str] = mapped_column(String(16), info=not_personal())
    source: Mapped[str] = mapped_column(String(16), info=not_personal())  # app | operator
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True, info=not_personal())
    verified_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    closed_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )
    # Operator notes name no one: "identity not confirmed", a ticket reference.
    refusal_reason: Mapped[str] = mapped_column(String(500), default="", info=not_personal())
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, info=not_personal())

    def move(self, to: RequestState, now: datetime) -> None:
        current = RequestState(self.state)
        if to not in TRANSITIONS[current]:
            raise InvalidTransition(f"a request that is {current.value} cannot become {to.value}")
        self.state = to.value
        if to is RequestState.VERIFIED:
            self.verified_at = now
        if to in (RequestState.DONE, RequestState.REFUSED):
            self.closed_at = now

    def is_open(self) -> bool:
        return self.state not in (RequestState.DONE.value, RequestState.REFUSED.value)

    def overdue_soon(self, now: datetime, soon_after: timedelta) -> bool:
        return self.is_open() and now >= self.received_at + soon_after

    def overdue(self, now: datetime) -> bool:
        return self.is_open() and now > self.due_at


class PostMortemAction(StrEnum):
    ERASE = "erase"
    EXPORT = "export"  # to the designated person
    KEEP = "keep"


class PostMortemDirective(Base):
    """How the account holder wants their data handled after their death (P19)."""

    __tablename__ = "post_mortem_directives"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True, info=not_personal()
    )
    tenant_id: Mapped[str] = mapped_column(String(32), index=True, info=not_personal())
    action: Mapped[str] = mapped_column(String(16), info=not_personal())
    _designated_contact: Mapped[str | None] = mapped_column(
        "designated_contact",
        Text,
        nullable=True,
        info=personal("user.contact.email", purpose="service", retention="account", encrypted=True)
        | sealed(),
    )
    designated_contact: SealedField[str | None] = SealedField(
        "_designated_contact", subject_attr="account_id"
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, info=not_personal())
    death_recorded_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, info=not_personal()
    )

"""What happened to a push: exactly one of four typed outcomes."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class Delivered:
    """The push service accepted the push."""

    latency: float  # seconds from handing the push to the service to its answer
    service_id: str | None = None  # e.g. apns-id or the FCM message name


@dataclass(frozen=True, slots=True)
class Retry:
    """A temporary failure; the service (or our own capacity cap) asks to wait ``after`` s."""

    after: float
    reason: str


@dataclass(frozen=True, slots=True)
class TokenDead:
    """The device token / subscription is no longer valid and must not be used again.

    ``timestamp`` is when the service last knew the token to be invalid (APNs 410), or when we
    learned of it. A token re-registered *after* that moment is alive again: see
    :func:`token_is_dead`.
    """

    reason: str
    timestamp: dt.datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    """A permanent failure for this push (bad payload, bad credentials, refused destination)."""

    reason: str


Outcome = Delivered | Retry | TokenDead | Rejected


def token_is_dead(outcome: TokenDead, token_registered_at: dt.datetime) -> bool:
    """Whether a token registered at ``token_registered_at`` is the one the outcome killed.

    APNs answers 410 with the time it learned the token was invalid; a device that registered
    the same token again after that moment is reachable, so its record must not be cleared.
    """
    return token_registered_at <= outcome.timestamp


def token_fingerprint(token: str) -> str:
    """A short, non-reversible name for a device token, safe for logs and error messages."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())

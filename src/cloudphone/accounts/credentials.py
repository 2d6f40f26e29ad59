"""Bearer credentials: operator tokens, device credentials, enrollment codes.

A credential reads ``<kind>.<id>.<secret>``: the id finds the row, the secret is compared with
a stored SHA-256 (secrets are 256 random bits, so a slow hash buys nothing). Only the hash is
stored; the secret is shown once, when issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from cloudphone.store.db import new_id


class CredentialKind(StrEnum):
    OPERATOR = "cpo"
    DEVICE = "cpd"
    ENROLLMENT = "cpe"


@dataclass(frozen=True)
class IssuedCredential:
    id: str
    secret_hash: str
    bearer: str  # show once, never store


@dataclass(frozen=True)
class PresentedCredential:
    kind: CredentialKind
    id: str
    secret: str

    def matches(self, secret_hash: str) -> bool:
        return hmac.compare_digest(hash_secret(self.secret), secret_hash)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(kind: CredentialKind) -> IssuedCredential:
    row_id, secret = new_id(), secrets.token_urlsafe(32)
    return IssuedCredential(row_id, hash_secret(secret), f"{kind.value}.{row_id}.{secret}")


def parse_bearer(bearer: str) -> PresentedCredential | None:
    parts = bearer.strip().split(".")
    if len(parts) != 3:
        return None
    kind, row_id, secret = parts
    try:
        return PresentedCredential(CredentialKind(kind), row_id, secret)
    except ValueError:
        return None


@dataclass(frozen=True)
class Principal:
    """Who is calling: a global operator, a tenant's operator, or one device."""

    kind: CredentialKind
    tenant_id: str | None = None  # None only for a global operator
    account_id: str | None = None
    device_id: str | None = None

    @property
    def is_global_operator(self) -> bool:
        return self.kind is CredentialKind.OPERATOR and self.tenant_id is None

    @property
    def is_operator(self) -> bool:
        return self.kind is CredentialKind.OPERATOR

    def may_administer(self, tenant_id: str) -> bool:
        return self.is_operator and (self.tenant_id is None or self.tenant_id == tenant_id)

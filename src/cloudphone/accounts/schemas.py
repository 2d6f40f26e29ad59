"""Shapes the accounts domain accepts and returns (also the API's request/response bodies)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cloudphone.accounts.features import FeatureConfig, FeatureOverrides

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_AOR = re.compile(r"^sips?:[^@\s<>\"]+@[A-Za-z0-9.\-\[\]:]+$")


def _hosts(values: list[str]) -> list[str]:
    cleaned = []
    for value in values:
        value = value.strip().lower()
        if not _HOST.match(value):
            raise ValueError(f"not a host name or address: {value!r}")
        cleaned.append(value)
    return sorted(set(cleaned))


class Platform(StrEnum):
    IOS = "ios"
    ANDROID = "android"
    WEB = "web"


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    sip_domains: list[str] = Field(default_factory=list, max_length=100)
    registrar_hosts: list[str] = Field(default_factory=list, max_length=100)
    feature_defaults: FeatureConfig = Field(default_factory=FeatureConfig)

    _check_domains = field_validator("sip_domains", "registrar_hosts")(_hosts)


class TenantUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    sip_domains: list[str] | None = Field(default=None, max_length=100)
    registrar_hosts: list[str] | None = Field(default=None, max_length=100)
    feature_defaults: FeatureConfig | None = None

    @field_validator("sip_domains", "registrar_hosts")
    @classmethod
    def _check(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _hosts(values)


class TenantOut(BaseModel):
    id: str
    name: str
    sip_domains: list[str]
    registrar_hosts: list[str]
    feature_defaults: FeatureConfig
    created_at: datetime


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address_of_record: str = Field(
        max_length=255, description="The SIP address of record, e.g. sip:alice@sip.example.com"
    )
    display_name: str = Field(default="", max_length=200)
    notice_email: str | None = Field(
        default=None, max_length=254, pattern=_EMAIL, description="Where notices are mailed."
    )
    feature_overrides: FeatureOverrides = Field(default_factory=FeatureOverrides)

    @field_validator("address_of_record")
    @classmethod
    def _check_aor(cls, value: str) -> str:
        if not _AOR.match(value):
            raise ValueError("address of record must look like sip:user@domain")
        return value


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(default=None, max_length=200)
    notice_email: str | None = Field(default=None, max_length=254, pattern=_EMAIL)
    feature_overrides: FeatureOverrides | None = None


class AccountOut(BaseModel):
    id: str
    tenant_id: str
    address_of_record: str
    display_name: str
    notice_email: str | None = None
    feature_overrides: FeatureOverrides
    features: FeatureConfig
    created_at: datetime


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: Platform
    app_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")


class PushTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")
    call_push_token: str | None = Field(default=None, max_length=4096)
    notice_push_token: str | None = Field(default=None, max_length=4096)


class DeviceOut(BaseModel):
    id: str
    account_id: str
    tenant_id: str
    platform: Platform
    app_id: str
    has_call_push_token: bool
    has_notice_push_token: bool
    created_at: datetime


class DeviceIssued(BaseModel):
    device: DeviceOut
    credential: str = Field(description="Shown once; the app sends it as a Bearer token.")


class EnrollmentIssued(BaseModel):
    enrollment_id: str
    code: str = Field(description="One-time code; shown once.")
    expires_at: datetime
    qr_payload: str


class EnrollmentClaim(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=10, max_length=200)
    platform: Platform
    app_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")


class OperatorTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=200)


class OperatorTokenIssued(BaseModel):
    id: str
    tenant_id: str | None
    token: str = Field(description="Shown once.")


class ProvisioningDocument(BaseModel):
    """What the app needs to configure itself: its account and which features run."""

    schema_version: int = 1
    account_id: str
    device_id: str
    address_of_record: str
    display_name: str
    sip_domains: list[str]
    features: FeatureConfig
    api_base_url: str

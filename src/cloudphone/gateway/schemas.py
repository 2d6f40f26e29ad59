"""What the app sends to hand its SIP account over, and what it gets back."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from cloudphone.accounts.schemas import Platform

_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")
_AOR = re.compile(r"^sips?:[^@\s<>\"]+@[A-Za-z0-9.\-\[\]:]+$")


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class InstanceState(StrEnum):
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILING = "failing"
    EXPIRED = "expired"


class SipAccountHandOver(BaseModel):
    """The SIP account details. They travel only over HTTPS (P3) and are sealed at rest."""

    model_config = ConfigDict(extra="forbid")

    address_of_record: str = Field(max_length=255)
    auth_username: str = Field(min_length=1, max_length=255)
    password: SecretStr = Field(min_length=1, max_length=255)
    registrar: str = Field(max_length=300, description="host[:port] of the provider's registrar")
    outbound_proxy: str | None = Field(default=None, max_length=300)
    transport: Transport = Transport.UDP
    expiry: int = Field(default=600, ge=60, le=86400, description="wished REGISTER expiry (s)")

    @field_validator("address_of_record")
    @classmethod
    def _aor(cls, value: str) -> str:
        if not _AOR.match(value):
            raise ValueError("address of record must look like sip:user@domain")
        return value

    @field_validator("registrar", "outbound_proxy")
    @classmethod
    def _hostport(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTPORT.match(value.strip()):
            raise ValueError("expected host[:port]")
        return None if value is None else value.strip().lower()


class InstancePushTokens(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Platform
    app_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    call_push_token: str = Field(min_length=1, max_length=4096)
    notice_push_token: str | None = Field(default=None, max_length=4096)


class PushInstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sip: SipAccountHandOver
    push: InstancePushTokens
    lifetime_days: int | None = Field(
        default=None, ge=1, le=6, description="wished lifetime; capped by the account's maximum"
    )


class EdgeCredentials(BaseModel):
    """What the app uses to connect to the gateway's SIP side: random, never the SIP password."""

    username: str
    password: str
    realm: str
    outbound_proxies: list[str] = Field(
        default_factory=list,
        description="SIP URIs of the gateway's edge, most secure first: the app's outbound proxy.",
    )


class PushInstanceOut(BaseModel):
    id: str
    device_id: str
    account_id: str
    state: InstanceState
    last_sip_status: int | None
    registrar: str
    transport: Transport
    created_at: datetime
    expires_at: datetime
    registered_until: datetime | None


class PushInstanceIssued(BaseModel):
    instance: PushInstanceOut
    edge: EdgeCredentials = Field(description="Shown once.")

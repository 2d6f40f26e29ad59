"""Per-app push configuration: which push services an app uses and how to reach them.

Self-contained pydantic models; the global settings object embeds :class:`PushConfig`. The
endpoints named here are the *only* destinations the push senders may contact (promise P2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

APNS_PRODUCTION = "https://api.push.apple.com"
APNS_SANDBOX = "https://api.sandbox.push.apple.com"
FCM_ENDPOINT = "https://fcm.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
# Hosts of the common browser push services; UnifiedPush distributors are added per app.
WEBPUSH_DEFAULT_HOSTS = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    "*.notify.windows.com",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _https(url: str | None) -> str | None:
    # Push credentials and payloads travel only over TLS (promises P3/P16); the senders
    # refuse anything else at run time too.
    if url is not None and not url.startswith("https://"):
        raise ValueError(f"push endpoints must be https:// URLs, got {url.split('://')[0]}://")
    return url


HttpsUrl = Annotated[str, AfterValidator(_https)]


class ApnsTokenAuth(_Model):
    """Token-based provider authentication: an ES256 ``.p8`` key from the developer account."""

    kind: Literal["token"] = "token"
    team_id: str
    key_id: str
    key_path: Path
    # Apple: refresh no more than every 20 and no less than every 60 minutes.
    refresh_after_s: Annotated[float, Field(ge=20 * 60, le=60 * 60)] = 50 * 60


class ApnsCertificateAuth(_Model):
    """Certificate-based provider authentication (a TLS client certificate per app)."""

    kind: Literal["certificate"] = "certificate"
    cert_path: Path
    key_path: Path | None = None  # None when the key is inside ``cert_path``


class ApnsConfig(_Model):
    bundle_id: str
    environment: Literal["production", "sandbox"] = "production"
    # Override for a local server; otherwise derived from ``environment``.
    endpoint: HttpsUrl | None = None
    auth: Annotated[ApnsTokenAuth | ApnsCertificateAuth, Field(discriminator="kind")]
    ca_file: Path | None = None  # extra trust anchor, for local servers only
    max_concurrency: Annotated[int, Field(ge=1)] = 200
    idle_timeout_s: Annotated[float, Field(gt=0)] = 300.0
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @property
    def url(self) -> str:
        if self.endpoint:
            return self.endpoint.rstrip("/")
        return APNS_SANDBOX if self.environment == "sandbox" else APNS_PRODUCTION


class FcmConfig(_Model):
    project_id: str
    service_account_file: Path
    endpoint: HttpsUrl = FCM_ENDPOINT
    # None: the service account's own ``token_uri`` (which must then be an allowed destination:
    # it is, only if it equals Google's default).
    token_uri: HttpsUrl | None = None
    ca_file: Path | None = None
    max_concurrency: Annotated[int, Field(ge=1)] = 200
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @property
    def resolved_token_uri(self) -> str:
        return self.token_uri or GOOGLE_TOKEN_URI


class WebPushConfig(_Model):
    vapid_private_key_path: Path  # PEM, EC P-256
    vapid_subject: str  # "mailto:ops@example.org" or an https URL (RFC 8292 §2.1)
    # Hosts subscriptions may point at: exact names, or "*.suffix" for a domain's subdomains.
    # "host:port" pins a port (local servers).
    allowed_hosts: tuple[str, ...] = WEBPUSH_DEFAULT_HOSTS
    ca_file: Path | None = None
    call_ttl_s: Annotated[int, Field(ge=1)] = 60  # cap on TTL for call pushes
    alert_ttl_s: Annotated[int, Field(ge=0)] = 24 * 3600
    max_concurrency: Annotated[int, Field(ge=1)] = 200
    request_timeout_s: Annotated[float, Field(gt=0)] = 10.0


class AppPushConfig(_Model):
    """How one white-label app's devices are reached.

    ``sender`` picks the real services or a development stand-in: ``log`` keeps pushes in
    memory and in the log, ``webhook`` POSTs each push as JSON to ``webhook_url``.
    """

    sender: Literal["services", "log", "webhook"] = "log"
    apns: ApnsConfig | None = None
    fcm: FcmConfig | None = None
    webpush: WebPushConfig | None = None
    webhook_url: HttpsUrl | None = None
    webhook_ca_file: Path | None = None
    log_keep_last: Annotated[int, Field(ge=1)] = 100

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> AppPushConfig:
        if self.sender == "webhook" and not self.webhook_url:
            raise ValueError("sender 'webhook' needs webhook_url")
        return self


class PushConfig(_Model):
    """App id → that app's push configuration."""

    apps: dict[str, AppPushConfig] = Field(default_factory=dict)
    # For app ids not listed in ``apps``; None refuses them. The embedded default is the
    # ``log`` sender, so a development set-up needs no Apple/Google keys.
    default_app: AppPushConfig | None = Field(default_factory=AppPushConfig)

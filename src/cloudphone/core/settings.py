"""The one settings object: defaults < TOML file < ``CLOUDPHONE_*`` environment variables.

The TOML file is ``$CLOUDPHONE_CONFIG`` if set, else ``cloudphone.toml`` in the working
directory if present. Nested sections use ``__`` in environment names
(``CLOUDPHONE_PUSH__SENDER=log``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cloudphone.privacy.config import PrivacyConfig
from cloudphone.push.config import PushConfig


class GatewaySettings(BaseModel):
    """The push gateway's SIP side and instance lifecycle."""

    model_config = ConfigDict(extra="forbid")

    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=5062, ge=0, le=65535, description="0 picks a free port")
    sip_transports: list[str] = Field(default_factory=lambda: ["udp", "tcp"])
    expiry_warning_hours: list[float] = Field(default_factory=lambda: [24.0, 12.0])
    failing_max_age_hours: float = Field(default=12.0, gt=0)
    sweep_interval_s: float = Field(default=30.0, gt=0)
    startup_registrations_per_s: float = Field(
        default=500.0, gt=0, description="bound on re-registration rate at start-up (no storm)"
    )
    # The app-facing SIP edge (issue 6): where apps REGISTER with their per-instance login.
    edge_host: str = "127.0.0.1"
    edge_udp_port: int | None = Field(default=None, ge=0, le=65535, description="dev only")
    edge_tcp_port: int | None = Field(default=5063, ge=0, le=65535)
    edge_tls_port: int | None = Field(default=None, ge=0, le=65535)
    edge_tls_cert_file: Path | None = None
    edge_tls_key_file: Path | None = None
    edge_digest_algorithms: list[str] = Field(
        default_factory=lambda: ["SHA-256", "MD5"],
        description="offered in this order (RFC 8760); clients that take the first offer "
        "and know only MD5 (SIPp, older stacks) need MD5 alone",
    )
    call_hold_s: float = Field(
        default=120.0, gt=0, description="how long an INVITE waits for a woken app to connect"
    )
    message_ttl_days: float = Field(default=7.0, gt=0)
    message_max_bytes: int = Field(default=16384, gt=0)


def _config_file() -> Path | None:
    explicit = os.environ.get("CLOUDPHONE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("cloudphone.toml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Everything an operator can set. Secrets are ``SecretStr`` so they print masked."""

    model_config = SettingsConfigDict(
        env_prefix="CLOUDPHONE_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Field(default=Path("data"), description="Where embedded state lives.")
    database_url: str = Field(
        default="", description="SQLAlchemy async URL; empty means SQLite in data_dir."
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    public_url: str = Field(
        default="", description="Base URL the app reaches the API at (for provisioning QR)."
    )
    development_mode: bool = Field(
        default=False,
        description="Allow plain HTTP (promise P3 only holds with this off).",
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses whose X-Forwarded-Proto is believed (a TLS-terminating proxy).",
    )
    master_key: SecretStr | None = Field(
        default=None,
        description="Base64 keyring 'kid:key[,kid:key]'; the first key encrypts new data.",
    )
    master_key_file: Path | None = Field(
        default=None, description="File holding the keyring; never kept in the database."
    )
    log_level: str = "info"
    log_format: str = Field(default="json", pattern="^(json|console)$")
    push: PushConfig = Field(
        default_factory=PushConfig,
        description="Per-app push services (APNs/FCM/Web Push) or development senders.",
    )
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig,
        description="Retention, data-subject requests, notices (SMTP), erasure ledger.",
    )

    @model_validator(mode="after")
    def _fill_derived(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'cloudphone.db'}"
        if not self.public_url:
            scheme = "http" if self.development_mode and not self.tls_cert_file else "https"
            self.public_url = f"{scheme}://{self.http_host}:{self.http_port}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _config_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def masked(self) -> dict[str, Any]:
        """The effective settings as plain data, secrets replaced by ``'**********'``."""
        shown = self.model_dump(mode="json")
        for name in ("master_key",):
            if getattr(self, name) is not None:
                shown[name] = "**********"
        if self.database_url and "@" in self.database_url:
            shown["database_url"] = _mask_url_password(self.database_url)
        return shown


def _mask_url_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:**********@{host}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

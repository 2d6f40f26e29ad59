"""The operator's privacy settings (``[privacy]`` in cloudphone.toml, ``CLOUDPHONE_PRIVACY__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from cloudphone.core.datamap import RETENTION_RULES


class PrivacyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_days: dict[str, float] = Field(
        default_factory=dict,
        description="Per retention rule: the age limit (age rules) or the grace after expiry "
        "(expiry rules), in days, replacing the built-in value.",
    )
    purge_interval_s: float = Field(default=3600.0, gt=0)
    purge_batch_size: int = Field(default=500, ge=1, le=100_000)
    request_due_days: int = Field(default=30, ge=1, le=30, description="P20: at most 30.")
    overdue_soon_days: int = Field(default=20, ge=1)
    export_link_hours: float = Field(default=72.0, gt=0)
    notice_min_lead_days: float = Field(
        default=0.0,
        ge=0,
        description="How long before its effective date a policy change "
        "must at least be announced (P18).",
    )
    erasure_ledger_file: Path | None = Field(
        default=None,
        description="Default <data_dir>/erasure-ledger.jsonl; keep it outside database backups.",
    )
    blind_index_key_file: Path | None = Field(
        default=None, description="Default <data_dir>/blind-index.key; outside backups."
    )
    smtp_host: str = Field(default="", description="The operator's SMTP relay for notices.")
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    smtp_from: str = "privacy@localhost"

    @field_validator("retention_days")
    @classmethod
    def _known_rules(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(RETENTION_RULES)
        if unknown:
            raise ValueError(f"unknown retention rules: {sorted(unknown)}")
        if any(days < 0 for days in value.values()):
            raise ValueError("retention days cannot be negative")
        return value

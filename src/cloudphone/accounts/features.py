"""The account's feature configuration and the one policy gate (promise P1).

Whether a feature runs, and so whether its personal data is ever touched, depends solely on
this configuration: the tenant's defaults, overridden per account.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloudphone.core.problems import FeatureDisabled


class IncomingCallMode(StrEnum):
    PUSH = "push"  # the gateway registers on the app's behalf and wakes it (SIPIS)
    BACKGROUND = "background"  # the app keeps its own registration; the gateway sees nothing
    RFC8599 = "rfc8599"  # the app registers through the gateway with pn-* params, no password
    OFF = "off"  # outgoing calls only


class LocationMode(StrEnum):
    OFF = "off"
    EMERGENCY = "emergency"  # dispatchable location, acquired when an emergency number is dialled
    REGISTER = "register"  # location conveyed in SIP REGISTER


class Feature(StrEnum):
    """What the gate checks. Each maps to one switch in ``FeatureConfig``."""

    PUSH = "push"
    PUSH_INSTANCE = "push_instance"  # credential hand-over to the gateway: push mode only (P5)
    SMART_CONTACTS = "smart_contacts"
    BLF = "blf"
    EMERGENCY_LOCATION = "emergency_location"
    REGISTER_LOCATION = "register_location"
    ATTACHMENTS = "attachments"
    CALENDAR = "calendar"
    ANALYTICS = "analytics"
    DEBUG_LOGS = "debug_logs"


class FeatureConfig(BaseModel):
    """The effective configuration of one account. Defaults are privacy-protective: only
    push (the product's reason to exist) is on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    incoming_call_mode: IncomingCallMode = IncomingCallMode.PUSH
    push_instance_lifetime_days: int = Field(default=3, ge=3, le=6)
    smart_contacts: bool = False
    blf: bool = False
    location: LocationMode = LocationMode.OFF
    attachments: bool = False
    calendar: bool = False
    analytics: bool = False
    debug_logs: bool = False

    def enables(self, feature: Feature) -> bool:
        match feature:
            case Feature.PUSH:
                return self.incoming_call_mode in (IncomingCallMode.PUSH, IncomingCallMode.RFC8599)
            case Feature.PUSH_INSTANCE:
                return self.incoming_call_mode is IncomingCallMode.PUSH
            case Feature.EMERGENCY_LOCATION:
                return self.location is LocationMode.EMERGENCY
            case Feature.REGISTER_LOCATION:
                return self.location is LocationMode.REGISTER
            case _:
                return bool(getattr(self, feature.value))


class FeatureOverrides(BaseModel):
    """An account's departures from its tenant's defaults; unset fields inherit."""

    model_config = ConfigDict(extra="forbid")

    incoming_call_mode: IncomingCallMode | None = None
    push_instance_lifetime_days: int | None = Field(default=None, ge=3, le=6)
    smart_contacts: bool | None = None
    blf: bool | None = None
    location: LocationMode | None = None
    attachments: bool | None = None
    calendar: bool | None = None
    analytics: bool | None = None
    debug_logs: bool | None = None

    def set_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def effective_config(defaults: dict[str, Any], overrides: dict[str, Any]) -> FeatureConfig:
    return FeatureConfig.model_validate({**defaults, **overrides})


def require_feature(config: FeatureConfig, feature: Feature) -> None:
    """The policy gate. Call it before accepting or reading any personal data for a feature;
    it raises a 403 problem naming the feature, before anything is stored."""
    if not config.enables(feature):
        raise FeatureDisabled(feature.value)

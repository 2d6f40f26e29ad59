"""Constants and builders shared by the push tests (imported by conftest and test modules)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from cloudphone.push import (
    ApnsConfig,
    ApnsTokenAuth,
    AppPushConfig,
    Caller,
    IncomingCall,
    Notification,
    Outcome,
    PushConfig,
    PushDispatcher,
    TokenDead,
)
from cloudphone.push.service import Platform, PushToken
from cloudphone.testing.apns import ApnsTestKey, LocalApns
from cloudphone.testing.tls import TestCertificates

BUNDLE = "org.example.phone"
FCM_PROJECT = "example-phone"
APP = "example"
DEVICE = "a" * 64


def apns_config(server: LocalApns, key: ApnsTestKey, certs: TestCertificates) -> ApnsConfig:
    return ApnsConfig(
        bundle_id=BUNDLE,
        environment="sandbox",
        endpoint=server.base_url,
        auth=ApnsTokenAuth(team_id=key.team_id, key_id=key.key_id, key_path=key.key_path),
        ca_file=certs.ca_file,
        request_timeout_s=5,
    )


class RecordingHook:
    """Stands in for the foundation's device-record hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Platform, PushToken, TokenDead]] = []

    async def on_token_dead(
        self, app_id: str, platform: Platform, token: PushToken, outcome: TokenDead
    ) -> None:
        self.calls.append((app_id, platform, token, outcome))


def incoming_call(ring_seconds: int = 30) -> IncomingCall:
    now = dt.datetime.now(dt.UTC)
    return IncomingCall(
        caller=Caller("sip:alice@example.org", "Alice"),
        call_id="call-1@example.org",
        sent_at=now,
        ring_until=now + dt.timedelta(seconds=ring_seconds),
    )


@asynccontextmanager
async def dispatcher_for(
    app: AppPushConfig, registry: CollectorRegistry | None = None
) -> AsyncIterator[PushDispatcher]:
    """A dispatcher serving only ``app`` (as APP), closed afterwards."""
    dispatcher = PushDispatcher(
        PushConfig(apps={APP: app}), registry=registry or CollectorRegistry()
    )
    try:
        yield dispatcher
    finally:
        await dispatcher.aclose()


async def send_once(
    app: AppPushConfig, platform: Platform, token: PushToken, notification: Notification
) -> Outcome:
    """One push through a fresh dispatcher serving only ``app``."""
    async with dispatcher_for(app) as dispatcher:
        return await dispatcher.send(APP, platform, token, notification)

"""The development senders: ``log`` (default) and ``webhook``."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from push_helpers import APP, DEVICE, RecordingHook

from cloudphone.core.clock import FakeClock
from cloudphone.push import (
    AppPushConfig,
    Caller,
    Delivered,
    IncomingCall,
    PushConfig,
    PushDispatcher,
    PushToken,
    RegistrationWakeUp,
    Rejected,
    Retry,
    TokenDead,
)
from cloudphone.testing.tls import H2Request, H2Response, H2TestServer, TestCertificates


class WebhookReceiver(H2TestServer):
    def __init__(self, certs: TestCertificates) -> None:
        super().__init__(certs)
        self.bodies: list[dict[str, object]] = []
        self.status = 200

    def handler(self, request: H2Request) -> H2Response:
        self.bodies.append(json.loads(request.body))
        headers = [("retry-after", "4")] if self.status == 503 else []
        return H2Response(self.status, headers)


@pytest.fixture
async def receiver(certs: TestCertificates) -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver(certs) as server:
        yield server


async def test_log_sender_is_the_default_and_keeps_the_last_pushes(call: IncomingCall) -> None:
    config = PushConfig(apps={APP: AppPushConfig(log_keep_last=2)})
    dispatcher = PushDispatcher(config, registry=CollectorRegistry())

    for _ in range(3):
        assert isinstance(await dispatcher.send(APP, "apns", PushToken(DEVICE), call), Delivered)
    await dispatcher.send(APP, "fcm", PushToken("fcm-token"), RegistrationWakeUp())

    recent = dispatcher.recent_pushes(APP)
    assert [p.kind for p in recent] == ["incoming_call", "registration_wake_up"]
    assert recent[0].delivery == "voip" and recent[1].delivery == "background"
    assert recent[0].payload["call_id"] == call.call_id
    assert DEVICE not in repr(recent)  # the token is kept only as a fingerprint
    assert dispatcher.recent_pushes("other-app") == []
    await dispatcher.aclose()


async def test_unknown_app_is_rejected_without_a_default(call: IncomingCall) -> None:
    dispatcher = PushDispatcher(PushConfig(default_app=None), registry=CollectorRegistry())
    outcome = await dispatcher.send("nope", "apns", PushToken(DEVICE), call)
    assert outcome.__class__.__name__ == "Rejected"


async def test_unlisted_app_uses_the_default_log_sender(call: IncomingCall) -> None:
    dispatcher = PushDispatcher(PushConfig(), registry=CollectorRegistry())
    outcome = await dispatcher.send("dev-app", "fcm", PushToken("t"), call)
    assert isinstance(outcome, Delivered)
    assert [p.app_id for p in dispatcher.recent_pushes()] == ["dev-app"]


async def test_webhook_posts_json_and_maps_statuses(
    receiver: WebhookReceiver, certs: TestCertificates, call: IncomingCall
) -> None:
    hook = RecordingHook()
    config = PushConfig(
        apps={
            APP: AppPushConfig(
                sender="webhook",
                webhook_url=f"{receiver.base_url}/hook",
                webhook_ca_file=certs.ca_file,
            )
        }
    )
    dispatcher = PushDispatcher(config, on_token_dead=hook, registry=CollectorRegistry())
    try:
        assert isinstance(await dispatcher.send(APP, "apns", PushToken(DEVICE), call), Delivered)
        receiver.status = 410
        assert isinstance(await dispatcher.send(APP, "apns", PushToken(DEVICE), call), TokenDead)
        receiver.status = 503
        assert await dispatcher.send(APP, "apns", PushToken(DEVICE), call) == Retry(4.0, "HTTP 503")
    finally:
        await dispatcher.aclose()

    body = receiver.bodies[0]
    assert body["platform"] == "apns" and body["delivery"] == "voip"
    assert body["kind"] == "incoming_call" and body["token"] == DEVICE
    assert len(hook.calls) == 1


async def test_a_call_whose_ring_window_is_over_is_never_pushed() -> None:
    clock = FakeClock(dt.datetime.now(dt.UTC))
    dispatcher = PushDispatcher(PushConfig(), registry=CollectorRegistry(), clock=clock)
    call = IncomingCall(
        Caller("sip:a@b"), "late", clock.now(), clock.now() + dt.timedelta(seconds=30)
    )
    clock.advance(dt.timedelta(seconds=31))

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert outcome == Rejected("ring window over")
    assert dispatcher.recent_pushes() == []

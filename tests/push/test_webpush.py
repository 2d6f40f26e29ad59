"""Web Push / UnifiedPush sender against the local receiver, which decrypts every push."""

from __future__ import annotations

import datetime as dt

import pytest
from push_helpers import APP, RecordingHook

from cloudphone.push import (
    Caller,
    CallMissed,
    Delivered,
    IncomingCall,
    Message,
    PushDispatcher,
    PushToken,
    Rejected,
    Retry,
    TokenDead,
)
from cloudphone.testing.webpush import LocalWebPush, Subscription


def token(subscription: Subscription) -> PushToken:
    return PushToken(subscription.endpoint, subscription.p256dh, subscription.auth)


async def test_call_push_is_encrypted_urgent_and_short_lived(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    subscription = local_webpush.subscribe()

    outcome = await dispatcher.send(APP, "webpush", token(subscription), call)

    assert isinstance(outcome, Delivered), local_webpush.refused
    assert outcome.service_id and "/message/" in outcome.service_id
    [push] = local_webpush.received
    # The receiver decrypted it with the subscription's private key: RFC 8291 done right.
    assert push.payload == call.payload()
    assert push.urgency == "high"
    assert 28 <= push.ttl <= 30
    assert push.vapid_subject == "mailto:ops@example.org"


async def test_call_ttl_is_capped_by_configuration(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush
) -> None:
    now = dt.datetime.now(dt.UTC)
    long_ring = IncomingCall(Caller("sip:a@b"), "c", now, now + dt.timedelta(minutes=10))

    await dispatcher.send(APP, "webpush", token(local_webpush.subscribe()), long_ring)

    assert local_webpush.received[0].ttl == 60


async def test_alert_is_normal_urgency_with_a_topic(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush
) -> None:
    await dispatcher.send(
        APP, "webpush", token(local_webpush.subscribe()), CallMissed("c1", Caller("sip:a@b"))
    )
    [push] = local_webpush.received
    assert push.urgency == "normal"
    assert push.topic is not None and len(push.topic) <= 32


async def test_revoked_subscription_is_dead(
    dispatcher: PushDispatcher,
    local_webpush: LocalWebPush,
    hook: RecordingHook,
    call: IncomingCall,
) -> None:
    subscription = local_webpush.subscribe()
    local_webpush.unsubscribe(subscription)

    outcome = await dispatcher.send(APP, "webpush", token(subscription), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "HTTP 410"
    assert [c[1] for c in hook.calls] == ["webpush"]


async def test_unknown_subscription_is_dead(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    real = local_webpush.subscribe()
    gone = PushToken(real.endpoint + "-gone", real.p256dh, real.auth)

    outcome = await dispatcher.send(APP, "webpush", gone, call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "HTTP 404"


async def test_rate_limit_asks_for_a_retry_after(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    local_webpush.fail_next(429, retry_after="5")

    outcome = await dispatcher.send(APP, "webpush", token(local_webpush.subscribe()), call)

    assert outcome == Retry(5.0, "HTTP 429")


async def test_subscription_without_keys_is_rejected(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    endpoint = local_webpush.subscribe().endpoint

    outcome = await dispatcher.send(APP, "webpush", PushToken(endpoint), call)

    assert isinstance(outcome, Rejected)
    assert local_webpush.received == [] and local_webpush.refused == []


async def test_garbage_subscription_keys_mean_a_dead_subscription(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    endpoint = local_webpush.subscribe().endpoint

    outcome = await dispatcher.send(APP, "webpush", PushToken(endpoint, "AAAA", "AAAA"), call)

    assert isinstance(outcome, TokenDead)


async def test_oversized_payload_is_rejected_before_sending(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush
) -> None:
    outcome = await dispatcher.send(
        APP, "webpush", token(local_webpush.subscribe()), Message("m", "x" * 4000)
    )

    assert outcome == Rejected("PayloadTooLarge")
    assert local_webpush.received == [] and local_webpush.refused == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [(400, "HTTP 400"), (401, "HTTP 401"), (403, "HTTP 403"), (413, "PayloadTooLarge")],
)
async def test_client_errors_are_rejected(
    dispatcher: PushDispatcher,
    local_webpush: LocalWebPush,
    call: IncomingCall,
    status: int,
    reason: str,
) -> None:
    local_webpush.fail_next(status)

    outcome = await dispatcher.send(APP, "webpush", token(local_webpush.subscribe()), call)

    assert outcome == Rejected(reason)


async def test_receiver_catches_wrong_encryption(
    dispatcher: PushDispatcher, local_webpush: LocalWebPush, call: IncomingCall
) -> None:
    # Keys of one subscription, endpoint of another: the receiver cannot decrypt it.
    a, b = local_webpush.subscribe(), local_webpush.subscribe()

    outcome = await dispatcher.send(APP, "webpush", PushToken(b.endpoint, a.p256dh, a.auth), call)

    assert outcome == Rejected("HTTP 400")
    [refusal] = local_webpush.refused
    assert refusal.startswith("decryption failed")
    assert local_webpush.received == []

"""FCM HTTP v1 sender against the local FCM and OAuth servers."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from push_helpers import APP, RecordingHook

from cloudphone.core.clock import FakeClock
from cloudphone.push import (
    CallCancelled,
    Caller,
    Delivered,
    IncomingCall,
    PushDispatcher,
    PushToken,
    RegistrationWakeUp,
    Rejected,
    Retry,
    TokenDead,
)
from cloudphone.push.destinations import AllowedDestinations, guarded_client
from cloudphone.push.fcm import ServiceAccountToken
from cloudphone.testing.fcm import LocalFcm, ServiceAccount
from cloudphone.testing.tls import TestCertificates

REG_TOKEN = "fcm-registration-token-" + "x" * 40


async def test_incoming_call_is_a_high_priority_data_message_living_for_the_ring_window(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert isinstance(outcome, Delivered)
    assert outcome.service_id and outcome.service_id.startswith("projects/example-phone/")
    [received] = local_fcm.received
    message = received.message
    assert "notification" not in message  # data-only: the app decides how to ring
    assert message["android"]["priority"] == "high"
    ttl = int(message["android"]["ttl"].removesuffix("s"))
    assert 28 <= ttl <= 30
    assert message["data"]["call_id"] == call.call_id
    assert message["data"]["type"] == "incoming_call"
    assert all(isinstance(v, str) for v in message["data"].values())


async def test_background_wake_up_is_normal_priority(
    dispatcher: PushDispatcher, local_fcm: LocalFcm
) -> None:
    await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), RegistrationWakeUp())
    assert local_fcm.received[0].message["android"]["priority"] == "normal"


async def test_cancel_collapses_with_the_call(
    dispatcher: PushDispatcher, local_fcm: LocalFcm
) -> None:
    await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), CallCancelled("c9", Caller("sip:a@b")))
    assert local_fcm.received[0].message["android"]["collapse_key"] == "call-c9"


async def test_access_token_is_granted_once_and_reused(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    for _ in range(3):
        assert isinstance(await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call), Delivered)
    assert local_fcm.grants == 1


async def test_access_token_is_renewed_five_minutes_before_expiry(
    local_fcm: LocalFcm, service_account: ServiceAccount, certs: TestCertificates
) -> None:
    local_fcm.token_lifetime = 310  # fresh for 10 s, then inside the five-minute margin
    clock = FakeClock(dt.datetime.now(dt.UTC))
    client = guarded_client(
        AllowedDestinations([local_fcm.base_url]), verify=certs.client_context()
    )
    token = ServiceAccountToken(
        json.loads(service_account.path.read_text()),
        local_fcm.token_uri,
        client,
        clock=clock,
    )
    try:
        first = await token.get()
        clock.advance(dt.timedelta(seconds=9))
        assert await token.get() == first
        clock.advance(dt.timedelta(seconds=2))
        assert await token.get() != first
    finally:
        await client.aclose()
    assert local_fcm.grants == 2


async def test_unauthenticated_refreshes_the_token_once(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)
    local_fcm.expire_access_tokens()

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert isinstance(outcome, Delivered)
    assert local_fcm.grants == 2


async def test_unauthenticated_twice_is_rejected(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    local_fcm.fail_next(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", count=2)

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert outcome == Rejected("THIRD_PARTY_AUTH_ERROR")
    assert local_fcm.grants == 2


async def test_unregistered_token_is_dead(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, hook: RecordingHook, call: IncomingCall
) -> None:
    local_fcm.unregister(REG_TOKEN)

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "UNREGISTERED"
    assert abs(outcome.timestamp - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
    assert [(c[0], c[1], c[2].value) for c in hook.calls] == [(APP, "fcm", REG_TOKEN)]


async def test_invalid_registration_token_is_dead(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    outcome = await dispatcher.send(APP, "fcm", PushToken("short!"), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "INVALID_ARGUMENT"


async def test_other_invalid_argument_is_rejected_not_dead(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    local_fcm.fail_next(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT")

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert outcome == Rejected("INVALID_ARGUMENT")


async def test_sender_id_mismatch_is_dead(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    local_fcm.fail_next(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH")

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "SENDER_ID_MISMATCH"


@pytest.mark.parametrize(
    ("status", "name", "code", "retry_after", "after"),
    [
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "12", 12.0),
        (503, "UNAVAILABLE", "UNAVAILABLE", "3", 3.0),
        (500, "INTERNAL", "INTERNAL", None, 1.0),
    ],
)
async def test_overload_asks_for_a_retry_after(
    dispatcher: PushDispatcher,
    local_fcm: LocalFcm,
    call: IncomingCall,
    status: int,
    name: str,
    code: str,
    retry_after: str | None,
    after: float,
) -> None:
    local_fcm.fail_next(status, name, code, retry_after=retry_after)

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert outcome == Retry(after, code)


async def test_token_endpoint_outage_is_a_retry(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    local_fcm.fail_next_grant(503, retry_after="2")

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert outcome == Retry(2.0, "token endpoint answered 503")
    assert isinstance(await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call), Delivered)


async def test_refused_service_account_is_rejected(
    dispatcher: PushDispatcher, local_fcm: LocalFcm, call: IncomingCall
) -> None:
    local_fcm.fail_next_grant(400)

    outcome = await dispatcher.send(APP, "fcm", PushToken(REG_TOKEN), call)

    assert outcome == Rejected("token endpoint answered 400")

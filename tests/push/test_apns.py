"""APNs sender against the local APNs server: headers, auth, outcomes, connection handling."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import structlog.testing
from prometheus_client import CollectorRegistry
from push_helpers import (
    APP,
    BUNDLE,
    DEVICE,
    RecordingHook,
    apns_config,
    dispatcher_for,
    incoming_call,
    send_once,
)

from cloudphone.core.clock import FakeClock
from cloudphone.push import (
    ApnsCertificateAuth,
    ApnsConfig,
    ApnsTokenAuth,
    AppPushConfig,
    CallAnsweredElsewhere,
    CallCancelled,
    Caller,
    CallMissed,
    Delivered,
    IncomingCall,
    InstanceExpiring,
    Message,
    PushDispatcher,
    PushToken,
    RegistrationWakeUp,
    Rejected,
    Retry,
    TokenDead,
    token_is_dead,
)
from cloudphone.push.apns import ApnsConnection, ApnsService, ProviderToken, ssl_context_for
from cloudphone.push.destinations import AllowedDestinations
from cloudphone.testing.apns import ApnsTestKey, LocalApns
from cloudphone.testing.tls import TestCertificates

CALLER = Caller("sip:bob@example.org", "Bob")


async def test_incoming_call_is_a_voip_push_that_expires_with_the_ring_window(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert isinstance(outcome, Delivered)
    assert outcome.latency > 0 and outcome.service_id
    [push] = local_apns.received
    assert push.topic == f"{BUNDLE}.voip"
    assert push.push_type == "voip"
    assert push.priority == 10
    assert push.expiration == int(call.ring_until.timestamp())
    assert push.payload["call_id"] == call.call_id
    assert push.payload["caller_uri"] == "sip:alice@example.org"
    assert push.auth == "token:TEAM123456"


@pytest.mark.parametrize(
    ("notification", "push_type", "priority"),
    [
        (CallCancelled("c1", CALLER), "alert", 10),
        (CallMissed("c1", CALLER), "alert", 10),
        (CallAnsweredElsewhere("c1"), "alert", 10),
        (Message("m1", "sip:bob@example.org"), "alert", 10),
        (InstanceExpiring(dt.datetime(2030, 1, 1, tzinfo=dt.UTC)), "alert", 10),
        (RegistrationWakeUp(), "background", 5),
    ],
)
async def test_every_other_kind_stays_off_the_voip_topic(
    dispatcher: PushDispatcher,
    local_apns: LocalApns,
    notification: CallCancelled,
    push_type: str,
    priority: int,
) -> None:
    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), notification)

    assert isinstance(outcome, Delivered)
    [push] = local_apns.received
    assert push.topic == BUNDLE
    assert push.push_type == push_type
    assert push.priority == priority
    if push_type == "background":
        assert push.payload["aps"] == {"content-available": 1}
    else:
        assert push.payload["aps"]["alert"]["loc-key"].startswith("push.")


async def test_call_related_alerts_collapse_per_call(
    dispatcher: PushDispatcher, local_apns: LocalApns
) -> None:
    await dispatcher.send(APP, "apns", PushToken(DEVICE), CallMissed("abc", CALLER))
    assert local_apns.received[0].collapse_id == "call-abc"


async def test_subclassing_a_kind_cannot_smuggle_a_push_through(
    dispatcher: PushDispatcher,
) -> None:
    class Sneaky(Message):  # type: ignore[misc]  # the kinds are @final
        pass

    with pytest.raises(TypeError):
        await dispatcher.send(APP, "apns", PushToken(DEVICE), Sneaky("m", "sip:x@y"))


async def test_provider_token_is_reused_and_refreshed_after_its_interval(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates
) -> None:
    config = apns_config(local_apns, apns_key, certs)
    clock = FakeClock()
    assert isinstance(config.auth, ApnsTokenAuth)
    provider = ProviderToken(config.auth, clock)
    first = provider.header()
    clock.advance(dt.timedelta(minutes=19))
    assert provider.header() == first  # Apple throttles refreshes under 20 minutes
    clock.advance(dt.timedelta(minutes=31))  # 50 minutes: the configured refresh interval
    assert provider.header() != first


async def test_expired_provider_token_is_refreshed_once(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    assert isinstance(await dispatcher.send(APP, "apns", PushToken(DEVICE), call), Delivered)
    local_apns.expire_provider_tokens()

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert isinstance(outcome, Delivered)
    assert len(local_apns.received) == 2


async def test_provider_token_expired_twice_is_rejected_not_looped(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    local_apns.fail_next(403, "ExpiredProviderToken", count=2)

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert outcome == Rejected("ExpiredProviderToken")
    assert local_apns.requests == 2


async def test_unregistered_token_is_dead_since_the_410_timestamp(
    dispatcher: PushDispatcher, local_apns: LocalApns, hook: RecordingHook, call: IncomingCall
) -> None:
    at_ms = local_apns.unregister(DEVICE, at_ms=1_700_000_000_123)

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert isinstance(outcome, TokenDead)
    assert outcome.reason == "Unregistered"
    assert outcome.timestamp == dt.datetime.fromtimestamp(at_ms / 1000, dt.UTC)
    # The device registered before APNs noticed: clear it. Registered again after: keep it.
    assert token_is_dead(outcome, outcome.timestamp - dt.timedelta(days=1))
    assert not token_is_dead(outcome, outcome.timestamp + dt.timedelta(seconds=1))
    [(app_id, platform, token, reported)] = hook.calls
    assert (app_id, platform, token.value, reported) == (APP, "apns", DEVICE, outcome)


async def test_bad_device_token_from_the_server_is_dead(
    dispatcher: PushDispatcher, local_apns: LocalApns, hook: RecordingHook, call: IncomingCall
) -> None:
    outcome = await dispatcher.send(APP, "apns", PushToken("ab" * 10), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "BadDeviceToken"
    assert local_apns.requests == 1
    assert len(hook.calls) == 1


async def test_malformed_token_is_dead_without_a_request(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    outcome = await dispatcher.send(APP, "apns", PushToken("not hex/../x"), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "BadDeviceToken"
    assert local_apns.requests == 0


async def test_token_of_another_app_is_dead(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    local_apns.bind_token_to_topic(DEVICE, "org.example.other")

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert isinstance(outcome, TokenDead) and outcome.reason == "DeviceTokenNotForTopic"


async def test_topic_not_allowed_for_the_team_is_dead(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    config = apns_config(local_apns, apns_key, certs).model_copy(
        update={"bundle_id": "org.example.not-ours"}
    )
    outcome = await send_once(
        AppPushConfig(sender="services", apns=config), "apns", PushToken(DEVICE), call
    )

    assert isinstance(outcome, TokenDead) and outcome.reason == "TopicDisallowed"


@pytest.mark.parametrize(
    ("status", "reason", "retry_after", "expected_after"),
    [
        (429, "TooManyRequests", "7", 7.0),
        (500, "InternalServerError", None, 1.0),
        (503, "ServiceUnavailable", "2", 2.0),
    ],
)
async def test_temporary_failures_ask_for_a_retry(
    dispatcher: PushDispatcher,
    local_apns: LocalApns,
    call: IncomingCall,
    status: int,
    reason: str,
    retry_after: str | None,
    expected_after: float,
) -> None:
    local_apns.fail_next(status, reason, retry_after=retry_after)

    outcome = await dispatcher.send(APP, "apns", PushToken(DEVICE), call)

    assert outcome == Retry(expected_after, reason)


async def test_oversized_payload_is_rejected_before_sending(
    dispatcher: PushDispatcher, local_apns: LocalApns
) -> None:
    outcome = await dispatcher.send(
        APP, "apns", PushToken(DEVICE), Message("m", "sip:" + "x" * 5000)
    )

    assert outcome == Rejected("PayloadTooLarge")
    assert local_apns.requests == 0


async def test_voip_payload_may_use_five_kilobytes(
    dispatcher: PushDispatcher, local_apns: LocalApns
) -> None:
    now = dt.datetime.now(dt.UTC)
    big = IncomingCall(
        Caller("sip:" + "x" * 4500 + "@example.org"),
        "c",
        now,
        now + dt.timedelta(seconds=30),
    )
    assert isinstance(await dispatcher.send(APP, "apns", PushToken(DEVICE), big), Delivered)
    assert isinstance(
        await dispatcher.send(APP, "apns", PushToken(DEVICE), CallMissed("c", big.caller)),
        Rejected,
    )


async def test_certificate_auth(
    local_apns: LocalApns, certs: TestCertificates, call: IncomingCall
) -> None:
    cert, key = certs.issue_client_certificate(BUNDLE)
    local_apns.trust_certificate(BUNDLE, BUNDLE)
    config = ApnsConfig(
        bundle_id=BUNDLE,
        endpoint=local_apns.base_url,
        auth=ApnsCertificateAuth(cert_path=cert, key_path=key),
        ca_file=certs.ca_file,
    )
    outcome = await send_once(
        AppPushConfig(sender="services", apns=config), "apns", PushToken(DEVICE), call
    )

    assert isinstance(outcome, Delivered)
    assert local_apns.received[0].auth == f"certificate:{BUNDLE}"


async def test_concurrent_pushes_share_one_connection(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    tokens = [f"{i:064x}" for i in range(100)]

    outcomes = await asyncio.gather(
        *(dispatcher.send(APP, "apns", PushToken(t), call) for t in tokens)
    )

    assert all(isinstance(o, Delivered) for o in outcomes)
    assert {p.device_token for p in local_apns.received} == set(tokens)
    assert local_apns.connection_count == 1


def _service(
    server: LocalApns, key: ApnsTestKey, certs: TestCertificates, **update: object
) -> tuple[ApnsService, ApnsConnection]:
    config = apns_config(server, key, certs).model_copy(update=update)
    connection = ApnsConnection(
        config.url,
        AllowedDestinations([config.url]),
        ssl_context=ssl_context_for(config),
        idle_timeout=config.idle_timeout_s,
    )
    assert isinstance(config.auth, ApnsTokenAuth)
    return ApnsService(config, connection, ProviderToken(config.auth)), connection


async def test_reconnects_after_the_connection_drops(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    service, connection = _service(local_apns, apns_key, certs)
    try:
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
        local_apns.drop_connections()
        await asyncio.sleep(0.05)
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
        local_apns.send_goaway()
        await asyncio.sleep(0.05)
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
    finally:
        await connection.aclose()
    assert connection.connects == 3


async def test_request_refused_by_goaway_is_resent_on_a_new_connection(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    service, connection = _service(local_apns, apns_key, certs)
    try:
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
        local_apns.goaway_before_next_request()
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
    finally:
        await connection.aclose()
    assert connection.connects == 2
    assert len(local_apns.received) == 2


async def test_concurrent_expired_token_answers_mint_one_new_token(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    await dispatcher.send(APP, "apns", PushToken(DEVICE), call)
    local_apns.expire_provider_tokens()

    outcomes = await asyncio.gather(
        *(dispatcher.send(APP, "apns", PushToken(DEVICE), call) for _ in range(20))
    )

    assert all(isinstance(o, Delivered) for o in outcomes)
    assert local_apns.distinct_provider_tokens == 2  # the first one and a single refresh


async def test_idle_connection_is_closed_and_reopened_on_demand(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    service, connection = _service(local_apns, apns_key, certs, idle_timeout_s=0.2)
    try:
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
        await asyncio.sleep(0.5)
        assert local_apns.connection_count == 0
        assert isinstance(await service.send(PushToken(DEVICE), call), Delivered)
    finally:
        await connection.aclose()
    assert connection.connects == 2


async def test_concurrency_cap_fails_fast_instead_of_queueing(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    config = apns_config(local_apns, apns_key, certs).model_copy(update={"max_concurrency": 2})
    registry = CollectorRegistry()
    async with dispatcher_for(AppPushConfig(sender="services", apns=config), registry) as d:
        outcomes = await asyncio.gather(
            *(d.send(APP, "apns", PushToken(DEVICE), call) for _ in range(5))
        )

    assert sum(isinstance(o, Delivered) for o in outcomes) == 2
    assert [o for o in outcomes if isinstance(o, Retry)] == [
        Retry(0.1, "concurrency cap reached")
    ] * 3
    assert registry.get_sample_value("cloudphone_push_shed_total", {"service": "apns"}) == 3


async def test_metrics_count_outcomes_and_latency(
    local_apns: LocalApns, apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    registry = CollectorRegistry()
    config = apns_config(local_apns, apns_key, certs)
    local_apns.unregister("b" * 64)
    async with dispatcher_for(AppPushConfig(sender="services", apns=config), registry) as d:
        await d.send(APP, "apns", PushToken(DEVICE), call)
        await d.send(APP, "apns", PushToken("b" * 64), call)

    sent = "cloudphone_push_sent_total"
    labels = {"service": "apns", "kind": "incoming_call"}
    assert registry.get_sample_value(sent, {**labels, "outcome": "delivered"}) == 1
    assert registry.get_sample_value(sent, {**labels, "outcome": "tokendead"}) == 1
    assert registry.get_sample_value("cloudphone_push_latency_seconds_count", labels) == 1


async def test_timeout_is_a_retry(
    apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall, tmp_path: Path
) -> None:
    # A TLS listener that never answers: the push must not hang past its timeout.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(silent, "127.0.0.1", 0, ssl=certs.server_context())
    port = server.sockets[0].getsockname()[1]
    fake = LocalApns(certs)
    fake.port = port
    config = apns_config(fake, apns_key, certs).model_copy(update={"request_timeout_s": 0.3})
    try:
        outcome = await send_once(
            AppPushConfig(sender="services", apns=config), "apns", PushToken(DEVICE), call
        )
    finally:
        server.close()
    assert outcome == Retry(0.0, "timeout")


async def test_timed_out_connection_is_replaced_for_the_next_push(
    apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    accepted = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read(-1)

    server = await asyncio.start_server(silent, "127.0.0.1", 0, ssl=certs.server_context())
    fake = LocalApns(certs)
    fake.port = server.sockets[0].getsockname()[1]
    service, connection = _service(fake, apns_key, certs, request_timeout_s=0.2)
    try:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await service.send(PushToken(DEVICE), call)
    finally:
        await connection.aclose()
        server.close()
    assert connection.connects == 2 and accepted == 2


async def test_refused_connection_is_a_retry(
    apns_key: ApnsTestKey, certs: TestCertificates, call: IncomingCall
) -> None:
    fake = LocalApns(certs)
    fake.port = 9  # discard port: nothing listens on 127.0.0.1:9 here
    config = apns_config(fake, apns_key, certs)
    outcome = await send_once(
        AppPushConfig(sender="services", apns=config), "apns", PushToken(DEVICE), call
    )
    assert isinstance(outcome, Retry) and outcome.reason.startswith("connection failed")


def test_incoming_call_needs_a_ring_window() -> None:
    with pytest.raises(ValueError):
        incoming_call(ring_seconds=-1)


async def test_logs_never_carry_the_device_token(
    dispatcher: PushDispatcher, local_apns: LocalApns, call: IncomingCall
) -> None:
    local_apns.unregister(DEVICE)
    with structlog.testing.capture_logs() as logs:
        await dispatcher.send(APP, "apns", PushToken(DEVICE), call)
        await dispatcher.send(APP, "apns", PushToken("c" * 64), call)

    assert logs, "the dead token is logged (as a fingerprint)"
    assert DEVICE not in repr(logs) and "c" * 64 not in repr(logs)

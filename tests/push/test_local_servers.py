"""The local push services answer like the real ones (so the sender tests mean something)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest
from push_helpers import BUNDLE, DEVICE, apns_config, send_once

from cloudphone.push import (
    AppPushConfig,
    IncomingCall,
    PushToken,
    Rejected,
)
from cloudphone.testing.apns import ApnsTestKey, LocalApns, make_apns_key
from cloudphone.testing.fcm import LocalFcm, make_service_account
from cloudphone.testing.tls import TestCertificates
from cloudphone.testing.webpush import LocalWebPush


@pytest.fixture
async def client(certs: TestCertificates) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(http2=True, verify=certs.client_context()) as c:
        yield c


def _jwt(key: ApnsTestKey) -> str:
    pem = key.key_path.read_text()
    return jwt.encode(
        {"iss": key.team_id, "iat": int(time.time())},
        pem,
        algorithm="ES256",
        headers={"kid": key.key_id},
    )


def _apns_headers(key: ApnsTestKey, **overrides: str) -> dict[str, str]:
    headers = {
        "authorization": f"bearer {_jwt(key)}",
        "apns-topic": f"{BUNDLE}.voip",
        "apns-push-type": "voip",
        "apns-priority": "10",
    }
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v}


@pytest.mark.parametrize(
    ("overrides", "body", "status", "reason"),
    [
        ({"authorization": ""}, b"{}", 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, b"{}", 403, "InvalidProviderToken"),
        ({"apns-topic": ""}, b"{}", 400, "MissingTopic"),
        ({"apns-topic": "com.someone.else"}, b"{}", 400, "TopicDisallowed"),
        ({"apns-topic": BUNDLE}, b"{}", 400, "InvalidPushType"),
        ({"apns-priority": "7"}, b"{}", 400, "BadPriority"),
        ({"apns-expiration": "soon"}, b"{}", 400, "BadExpirationDate"),
        ({"apns-collapse-id": "x" * 65}, b"{}", 400, "BadCollapseId"),
        ({}, b"{" + b" " * 5120 + b"}", 413, "PayloadTooLarge"),
        ({"apns-topic": BUNDLE, "apns-push-type": "alert"}, b"{" + b" " * 4096 + b"}", 413, ""),
        ({}, b"", 400, "PayloadEmpty"),
    ],
)
async def test_local_apns_checks_what_apple_checks(
    local_apns: LocalApns,
    apns_key: ApnsTestKey,
    client: httpx.AsyncClient,
    overrides: dict[str, str],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    response = await client.post(
        f"{local_apns.base_url}/3/device/{DEVICE}",
        headers=_apns_headers(apns_key, **overrides),
        content=body,
    )
    assert response.http_version == "HTTP/2"
    assert response.status_code == status
    assert response.json()["reason"] == (reason or "PayloadTooLarge")
    assert response.headers["apns-id"]


async def test_local_apns_answers_410_with_a_millisecond_timestamp(
    local_apns: LocalApns, apns_key: ApnsTestKey, client: httpx.AsyncClient
) -> None:
    local_apns.unregister(DEVICE, at_ms=1_700_000_000_000)
    response = await client.post(
        f"{local_apns.base_url}/3/device/{DEVICE}", headers=_apns_headers(apns_key), content=b"{}"
    )
    assert response.status_code == 410
    assert response.json() == {"reason": "Unregistered", "timestamp": 1_700_000_000_000}


async def test_provider_key_apns_does_not_know_is_rejected(
    local_apns: LocalApns, certs: TestCertificates, tmp_path: Path, call: IncomingCall
) -> None:
    stranger = make_apns_key(tmp_path, key_id="OTHERKEY01")
    config = apns_config(local_apns, stranger, certs)
    outcome = await send_once(
        AppPushConfig(sender="services", apns=config), "apns", PushToken(DEVICE), call
    )
    assert outcome == Rejected("InvalidProviderToken")


async def test_local_fcm_refuses_a_forged_assertion(
    local_fcm: LocalFcm, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    unknown = make_service_account(tmp_path, "not-trusted")
    info = json.loads(unknown.path.read_text())
    assertion = jwt.encode(
        {
            "iss": info["client_email"],
            "aud": local_fcm.token_uri,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": 0,
            "exp": 1,
        },
        info["private_key"],
        algorithm="RS256",
    )
    response = await client.post(
        local_fcm.token_uri,
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant"}


async def test_local_fcm_requires_an_access_token(
    local_fcm: LocalFcm, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        f"{local_fcm.base_url}/v1/projects/p/messages:send",
        json={"message": {"token": "x" * 30}},
    )
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-encoding": "aes128gcm"}, 400),  # no TTL
        ({"ttl": "10", "content-encoding": "aes128gcm"}, 403),  # no VAPID
        ({"ttl": "10", "urgency": "asap", "content-encoding": "aes128gcm"}, 400),
    ],
)
async def test_local_webpush_enforces_rfc_8030_and_vapid(
    local_webpush: LocalWebPush,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    status: int,
) -> None:
    subscription = local_webpush.subscribe()
    response = await client.post(subscription.endpoint, headers=headers, content=b"x")
    assert response.status_code == status
    assert local_webpush.received == []

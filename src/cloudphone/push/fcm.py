"""Firebase Cloud Messaging, HTTP v1 API, with service-account OAuth2.

The OAuth2 JWT bearer grant (RFC 7523) is done here with PyJWT + httpx rather than with
google-auth: google-auth refreshes synchronously (it would block the event loop in the middle
of a call push), its early-refresh margin is a module constant (3m45s) where we want five
minutes, and its async transport needs aiohttp. The grant itself is a dozen lines.
Reference: firebase.google.com/docs/reference/fcm/rest/v1/projects.messages and
firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog

from cloudphone.core.clock import Clock, SystemClock
from cloudphone.push.config import FcmConfig
from cloudphone.push.destinations import AllowedDestinations, guarded_client
from cloudphone.push.notifications import (
    Delivery,
    IncomingCall,
    Notification,
    collapse_key,
    delivery_of,
)
from cloudphone.push.outcomes import (
    Delivered,
    Outcome,
    Rejected,
    Retry,
    TokenDead,
    parse_retry_after,
)
from cloudphone.push.service import PushToken

log = structlog.get_logger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_REFRESH_MARGIN = 5 * 60  # renew access tokens five minutes before they expire
_ASSERTION_LIFETIME = 3600
_ALERT_TTL = "86400s"
_BACKGROUND_TTL = "300s"
_RETRY_STATUSES = frozenset({429, 500, 503})


class OAuthError(Exception):
    """The token endpoint did not grant a token."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"token endpoint answered {status}")
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        return self.status == 429 or self.status >= 500


class ServiceAccountToken:
    """An OAuth2 access token for the FCM scope, cached and renewed early, minted once."""

    def __init__(
        self,
        service_account: dict[str, Any],
        token_uri: str,
        client: httpx.AsyncClient,
        clock: Clock | None = None,
    ) -> None:
        self._email = str(service_account["client_email"])
        self._key_id = str(service_account.get("private_key_id", ""))
        self._private_key = str(service_account["private_key"])
        # The configured URI, never the file's own token_uri: the file is not a destination list.
        self._token_uri = token_uri
        self._client = client
        self._clock = clock or SystemClock()
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.grants = 0

    async def get(self) -> str:
        if self._fresh():
            return self._token
        async with self._lock:
            if self._fresh():
                return self._token
            await self._grant()
            return self._token

    def _fresh(self) -> bool:
        return bool(self._token) and self._clock.now().timestamp() < (
            self._expires_at - _REFRESH_MARGIN
        )

    async def refresh(self, stale: str) -> str:
        """A new token after FCM answered 401 to ``stale``; concurrent 401s share one grant."""
        async with self._lock:
            if self._token == stale:
                await self._grant()
            return self._token

    async def _grant(self) -> None:
        now = int(self._clock.now().timestamp())
        assertion = jwt.encode(
            {
                "iss": self._email,
                "scope": FCM_SCOPE,
                "aud": self._token_uri,
                "iat": now,
                "exp": now + _ASSERTION_LIFETIME,
            },
            self._private_key,
            algorithm="RS256",
            headers={"kid": self._key_id} if self._key_id else None,
        )
        response = await self._client.post(
            self._token_uri, data={"grant_type": _JWT_BEARER, "assertion": assertion}
        )
        if response.status_code != 200:
            raise OAuthError(response.status_code, response.headers.get("retry-after"))
        body = response.json()
        self._token = str(body["access_token"])
        self._expires_at = now + float(body.get("expires_in", 3600))
        self.grants += 1
        log.info("fcm access token granted", expires_in=body.get("expires_in"))


class FcmService:
    """Pushes data-only messages to the Android devices of one app."""

    name = "fcm"

    def __init__(
        self,
        config: FcmConfig,
        allowed: AllowedDestinations,
        *,
        clock: Clock | None = None,
    ) -> None:
        allowed.check(config.endpoint)
        allowed.check(config.resolved_token_uri)
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._client = guarded_client(
            allowed,
            verify=verify,
            timeout=config.request_timeout_s,
            max_connections=config.max_concurrency,
        )
        info = json.loads(Path(config.service_account_file).read_text())
        self._clock = clock or SystemClock()
        self.access_token = ServiceAccountToken(
            info, config.resolved_token_uri, self._client, self._clock
        )
        self._url = f"{config.endpoint.rstrip('/')}/v1/projects/{config.project_id}/messages:send"
        self.max_concurrency = config.max_concurrency

    def message(self, token: PushToken, notification: Notification) -> dict[str, Any]:
        """The HTTP v1 request body: data-only, so the app decides how to present it."""
        delivery = delivery_of(notification)
        if delivery is Delivery.VOIP:
            assert isinstance(notification, IncomingCall)
            android: dict[str, Any] = {
                "priority": "high",
                "ttl": f"{notification.ring_seconds(self._clock.now())}s",
            }
        elif delivery is Delivery.ALERT:
            android = {"priority": "high", "ttl": _ALERT_TTL}
        else:
            android = {"priority": "normal", "ttl": _BACKGROUND_TTL}
        collapse = collapse_key(notification)
        if collapse is not None:
            android["collapse_key"] = collapse
        # FCM data values must be strings.
        data = {k: str(v) for k, v in notification.payload().items()}
        return {"message": {"token": token.value, "data": data, "android": android}}

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        body = self.message(token, notification)
        started = time.monotonic()
        try:
            access = await self.access_token.get()
            response = await self._post(body, access)
            if response.status_code == 401:
                response = await self._post(body, await self.access_token.refresh(access))
        except OAuthError as exc:
            if exc.transient:
                return Retry(parse_retry_after(exc.retry_after), str(exc))
            # The service account itself is refused (revoked key, wrong audience).
            log.error("fcm service account refused", status=exc.status)
            return Rejected(str(exc))
        return self._outcome(response, time.monotonic() - started)

    async def _post(self, body: dict[str, Any], access: str) -> httpx.Response:
        return await self._client.post(
            self._url, json=body, headers={"authorization": f"Bearer {access}"}
        )

    def _outcome(self, response: httpx.Response, latency: float) -> Outcome:
        status = response.status_code
        if status == 200:
            return Delivered(latency, str(response.json().get("name", "")) or None)
        error_code, error_status, message, token_field = _error(response)
        now = self._clock.now()
        if error_code == "UNREGISTERED" or (status == 404 and error_status == "NOT_FOUND"):
            return TokenDead("UNREGISTERED", now)
        if error_code == "SENDER_ID_MISMATCH":
            return TokenDead("SENDER_ID_MISMATCH", now)
        if status == 400 and (token_field or "registration token" in message.lower()):
            return TokenDead("INVALID_ARGUMENT", now)
        if status in _RETRY_STATUSES:
            return Retry(
                parse_retry_after(response.headers.get("retry-after")),
                error_code or error_status or f"HTTP {status}",
            )
        log.warning("fcm rejected push", status=status, error=error_code or error_status)
        return Rejected(error_code or error_status or f"HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()


def _error(response: httpx.Response) -> tuple[str, str, str, bool]:
    """(FcmError errorCode, google.rpc status, message, whether message.token was at fault)."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return "", "", "", False
    code = ""
    token_field = False
    for detail in error.get("details", []):
        if detail.get("@type", "").endswith("FcmError"):
            code = str(detail.get("errorCode", ""))
        for violation in detail.get("fieldViolations", []):
            token_field = token_field or violation.get("field") == "message.token"
    return code, str(error.get("status", "")), str(error.get("message", "")), token_field

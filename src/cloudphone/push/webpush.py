"""Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

Also the transport for UnifiedPush distributors, which speak the same protocol. Encryption is
``http_ece`` (the library pywebpush itself uses); the request is sent with our guarded httpx
client rather than pywebpush, whose transport is blocking ``requests`` (or aiohttp) and whose
result is a raw response, not an outcome. The VAPID JWT is signed with PyJWT and reused per
push-service origin until close to its expiry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import http_ece
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloudphone.core.clock import Clock, SystemClock
from cloudphone.push.config import WebPushConfig
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

# RFC 8291 §4: push services must accept 4096 octets of body; minus the 86-byte header with a
# 65-byte key id, one padding delimiter octet and the 16-byte tag, 3993 octets of plaintext.
MAX_PLAINTEXT = 3993
_VAPID_LIFETIME = 12 * 3600  # RFC 8292 §2: no more than 24 hours
_VAPID_RENEW_MARGIN = 3600
_URGENCY = {Delivery.VOIP: "high", Delivery.ALERT: "normal", Delivery.BACKGROUND: "low"}


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encrypt(payload: bytes, p256dh: bytes, auth_secret: bytes) -> bytes:
    """RFC 8291 message encryption with a fresh sender key pair and salt per message."""
    sender_key = ec.generate_private_key(ec.SECP256R1())
    result: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=sender_key,
        dh=p256dh,
        auth_secret=auth_secret,
        version="aes128gcm",
    )
    return result


class VapidSigner:
    """``Authorization: vapid t=…, k=…`` headers (RFC 8292 §3), one JWT per origin, reused."""

    def __init__(self, private_key_path: Path, subject: str, clock: Clock | None = None) -> None:
        key = serialization.load_pem_private_key(Path(private_key_path).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("VAPID key must be an EC P-256 private key")
        self._key = key
        self._subject = subject
        self._clock = clock or SystemClock()
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url_encode(public)
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        audience = f"{parts.scheme}://{parts.netloc}"
        now = self._clock.now().timestamp()
        cached = self._cache.get(audience)
        if cached is None or cached[1] - now < _VAPID_RENEW_MARGIN:
            expires = now + _VAPID_LIFETIME
            token = jwt.encode(
                {"aud": audience, "exp": int(expires), "sub": self._subject},
                self._key,
                algorithm="ES256",
            )
            cached = (token, expires)
            self._cache[audience] = cached
        return f"vapid t={cached[0]}, k={self.public_key}"


class WebPushService:
    """Pushes to browser and UnifiedPush subscriptions of one app."""

    name = "webpush"

    def __init__(
        self,
        config: WebPushConfig,
        allowed: AllowedDestinations,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self._allowed = allowed
        self._clock = clock or SystemClock()
        self._vapid = VapidSigner(config.vapid_private_key_path, config.vapid_subject, self._clock)
        verify: ssl.SSLContext | bool = True
        if config.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(config.ca_file))
        self._client = guarded_client(
            allowed,
            verify=verify,
            timeout=config.request_timeout_s,
            max_connections=config.max_concurrency,
        )
        self.max_concurrency = config.max_concurrency

    def _ttl(self, notification: Notification) -> int:
        delivery = delivery_of(notification)
        if delivery is Delivery.VOIP:
            assert isinstance(notification, IncomingCall)
            return min(notification.ring_seconds(self._clock.now()), self._config.call_ttl_s)
        if delivery is Delivery.BACKGROUND:
            return 0  # RFC 8030 §5.2: deliver now or not at all
        return self._config.alert_ttl_s

    async def send(self, token: PushToken, notification: Notification) -> Outcome:
        endpoint = token.value
        # P2 before any work: the endpoint came from a device, not from the operator.
        self._allowed.check(endpoint)
        if not token.p256dh or not token.auth:
            return Rejected("subscription lacks p256dh/auth keys")
        plaintext = json.dumps(notification.payload(), separators=(",", ":")).encode()
        if len(plaintext) > MAX_PLAINTEXT:
            return Rejected("PayloadTooLarge")
        try:
            body = encrypt(plaintext, b64url_decode(token.p256dh), b64url_decode(token.auth))
        except (ValueError, http_ece.ECEException) as exc:
            log.info("web push subscription keys unusable", error=type(exc).__name__)
            return TokenDead("invalid subscription keys", self._clock.now())
        headers: dict[str, str] = {
            "ttl": str(self._ttl(notification)),
            "urgency": _URGENCY[delivery_of(notification)],
            "content-encoding": "aes128gcm",
            "content-type": "application/octet-stream",
            "authorization": self._vapid.header(endpoint),
        }
        collapse = collapse_key(notification)
        if collapse is not None:
            # RFC 8030 §5.4: a Topic is at most 32 base64url characters.
            headers["topic"] = b64url_encode(hashlib.sha256(collapse.encode()).digest())[:32]
        started = time.monotonic()
        response = await self._client.post(endpoint, content=body, headers=headers)
        return self._outcome(response.status_code, response.headers, time.monotonic() - started)

    def _outcome(self, status: int, headers: Any, latency: float) -> Outcome:
        if status in (200, 201, 202):
            return Delivered(latency, headers.get("location"))
        if status in (404, 410):
            # RFC 8030 §7.3: the subscription expired or was removed.
            return TokenDead(f"HTTP {status}", self._clock.now())
        if status == 429 or status >= 500:
            return Retry(parse_retry_after(headers.get("retry-after")), f"HTTP {status}")
        if status == 413:
            return Rejected("PayloadTooLarge")
        log.warning("web push rejected", status=status)
        return Rejected(f"HTTP {status}")

    async def aclose(self) -> None:
        await self._client.aclose()

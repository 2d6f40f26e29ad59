"""A local Web Push service (RFC 8030) that proves the sender got RFC 8291 and 8292 right.

:meth:`LocalWebPush.subscribe` plays the browser/UnifiedPush distributor: it creates the
subscription key pair and auth secret. Every push is checked for the VAPID JWT (signature with
the ``k`` key, audience, expiry, subject), the RFC 8030 headers, and is *decrypted* with the
subscription's private key: a push that decrypts is a push that was encrypted correctly.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloudphone.testing.tls import H2Request, H2Response, H2TestServer, TestCertificates

_URGENCIES = {"very-low", "low", "normal", "high"}
_MAX_BODY = 4096
_MAX_VAPID_LIFETIME = 24 * 3600


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Subscription:
    """What a browser's ``PushSubscription.toJSON()`` hands the app server."""

    endpoint: str
    p256dh: str
    auth: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    auth_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReceivedWebPush:
    subscription_id: str
    ttl: int
    urgency: str
    topic: str | None
    vapid_subject: str
    payload: dict[str, Any]


class LocalWebPush(H2TestServer):
    def __init__(self, certificates: TestCertificates | None = None) -> None:
        super().__init__(certificates)
        self.received: list[ReceivedWebPush] = []
        self.refused: list[str] = []  # reasons of refused pushes, for assertions
        self._subscriptions: dict[str, Subscription] = {}
        self._gone: set[str] = set()
        self._failures: deque[tuple[int, str | None]] = deque()

    @property
    def host(self) -> str:
        """The allow-list entry (host:port) a WebPushConfig needs for this server."""
        return f"127.0.0.1:{self.port}"

    def subscribe(self) -> Subscription:
        subscription_id = secrets.token_urlsafe(16)
        key = ec.generate_private_key(ec.SECP256R1())
        auth_secret = os.urandom(16)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        subscription = Subscription(
            f"{self.base_url}/push/{subscription_id}",
            _b64url(public),
            _b64url(auth_secret),
            key,
            auth_secret,
        )
        self._subscriptions[subscription_id] = subscription
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """The user revoked permission: pushes now get 410 Gone."""
        self._gone.add(subscription.endpoint.rsplit("/", 1)[1])

    def fail_next(self, status: int, *, retry_after: str | None = None) -> None:
        self._failures.append((status, retry_after))

    def _refuse(self, status: int, reason: str) -> H2Response:
        self.refused.append(reason)
        return H2Response(status, [("content-type", "text/plain")], reason.encode())

    def handler(self, request: H2Request) -> H2Response:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return self._refuse(404, "no such resource")
        subscription_id = request.path[len("/push/") :]
        if subscription_id in self._gone:
            return self._refuse(410, "subscription gone")
        subscription = self._subscriptions.get(subscription_id)
        if subscription is None:
            return self._refuse(404, "unknown subscription")
        h = request.headers
        try:
            ttl = int(h["ttl"])  # RFC 8030 §5.2: TTL is mandatory
        except (KeyError, ValueError):
            return self._refuse(400, "missing or bad TTL")
        urgency = h.get("urgency", "normal")
        if urgency not in _URGENCIES:
            return self._refuse(400, "bad Urgency")
        topic = h.get("topic")
        if topic is not None and (len(topic) > 32 or not _is_b64url(topic)):
            return self._refuse(400, "bad Topic")
        vapid_subject, problem = self._check_vapid(h.get("authorization", ""))
        if problem:
            return self._refuse(401 if "JWT" in problem else 403, problem)
        if h.get("content-encoding") != "aes128gcm":
            return self._refuse(415, "Content-Encoding must be aes128gcm")
        if len(request.body) > _MAX_BODY:
            return self._refuse(413, "payload too large")
        try:
            plaintext = http_ece.decrypt(
                request.body,
                private_key=subscription.private_key,
                auth_secret=subscription.auth_secret,
                version="aes128gcm",
            )
            payload = json.loads(plaintext)
        except (http_ece.ECEException, ValueError) as exc:
            return self._refuse(400, f"decryption failed: {type(exc).__name__}")
        if self._failures:
            status, retry_after = self._failures.popleft()
            headers = [("retry-after", retry_after)] if retry_after else []
            return H2Response(status, headers)
        self.received.append(
            ReceivedWebPush(subscription_id, ttl, urgency, topic, vapid_subject, payload)
        )
        location = f"{self.base_url}/message/{secrets.token_urlsafe(8)}"
        return H2Response(201, [("location", location), ("ttl", str(ttl))])

    def _check_vapid(self, authorization: str) -> tuple[str, str]:
        """RFC 8292 §3: ``vapid t=<JWT>, k=<P-256 public key>``; returns (subject, problem)."""
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            return "", "missing vapid authorization"
        params = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name] = value
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), _unb64url(params["k"])
            )
            claims = jwt.decode(
                params["t"],
                key,
                algorithms=["ES256"],
                audience=self.base_url,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (KeyError, ValueError, jwt.PyJWTError) as exc:
            return "", f"bad VAPID JWT: {type(exc).__name__}"
        if claims["exp"] > time.time() + _MAX_VAPID_LIFETIME:
            return "", "bad VAPID JWT: expiry more than 24 hours ahead"
        subject = str(claims["sub"])
        if not subject.startswith(("mailto:", "https:")):
            return "", "bad VAPID JWT: sub must be mailto: or https:"
        return subject, ""


def _is_b64url(text: str) -> bool:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    return all(c in alphabet for c in text)


def make_vapid_key(directory: Path) -> Path:
    """Write a fresh VAPID (EC P-256) private key as PEM, the form WebPushConfig expects."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "vapid.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path

"""A local APNs: HTTP/2 over TLS on 127.0.0.1 that answers like Apple's servers.

It checks what Apple checks (provider token or client certificate, topic, push type, priority,
expiration, collapse id, payload size, device token) and answers with Apple's status codes and
JSON reasons, including ``403 ExpiredProviderToken`` and ``410 Unregistered`` with its
millisecond ``timestamp``. Tests script failures with :meth:`LocalApns.fail_next`,
:meth:`LocalApns.unregister` and :meth:`LocalApns.expire_provider_tokens`.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloudphone.testing.tls import H2Request, H2Response, H2TestServer, TestCertificates

_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_PUSH_TYPES = {"alert", "background", "voip", "complication", "fileprovider", "mdm", "location"}
_PROVIDER_TOKEN_LIFETIME = 3600  # Apple refuses provider tokens older than one hour


@dataclass(frozen=True, slots=True)
class ApnsTestKey:
    """A team's signing key: the ``.p8`` file a provider configures, and its public half."""

    team_id: str
    key_id: str
    key_path: Path
    public_key: ec.EllipticCurvePublicKey


def make_apns_key(
    directory: Path, team_id: str = "TEAM123456", key_id: str = "KEY1234567"
) -> ApnsTestKey:
    """Write a fresh P-256 ``.p8`` key (PKCS#8 PEM, like Apple's) into ``directory``."""
    private = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"AuthKey_{key_id}.p8"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ApnsTestKey(team_id, key_id, path, private.public_key())


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """One push the server accepted."""

    device_token: str
    topic: str
    push_type: str
    priority: int
    expiration: int | None
    collapse_id: str | None
    payload: dict[str, Any]
    auth: str  # "token:<team>" or "certificate:<common name>"


@dataclass(slots=True)
class _ScriptedFailure:
    status: int
    reason: str
    retry_after: str | None
    remaining: int


class LocalApns(H2TestServer):
    """The local APNs server; ``topics`` maps each team (or certificate CN) to its topics."""

    def __init__(
        self,
        certificates: TestCertificates | None = None,
        *,
        record: bool = True,
    ) -> None:
        super().__init__(certificates, request_client_cert=True)
        self.record = record
        self.received: list[ReceivedPush] = []
        self.requests = 0
        self._keys: dict[tuple[str, str], ec.EllipticCurvePublicKey] = {}
        self._topics: dict[str, set[str]] = {}
        self._verified: dict[str, tuple[str, int]] = {}  # JWT → (team, iat): verify once
        self._expired: set[str] = set()
        self._unregistered: dict[str, int] = {}
        self._token_topics: dict[str, str] = {}
        self._failures: deque[_ScriptedFailure] = deque()

    # set-up

    def trust_key(self, key: ApnsTestKey, bundle_ids: list[str]) -> None:
        """Accept provider tokens signed by ``key`` for these apps (and their .voip topics)."""
        self._keys[(key.team_id, key.key_id)] = key.public_key
        self._topics[f"token:{key.team_id}"] = {t for b in bundle_ids for t in (b, f"{b}.voip")}

    def trust_certificate(self, common_name: str, bundle_id: str) -> None:
        """Accept a client certificate whose subject CN is ``common_name`` for one app."""
        self._topics[f"certificate:{common_name}"] = {bundle_id, f"{bundle_id}.voip"}

    # scripting

    def unregister(self, device_token: str, at_ms: int | None = None) -> int:
        """Make the token answer 410 Unregistered with ``at_ms`` (default now) as timestamp."""
        at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
        self._unregistered[device_token.lower()] = at_ms
        return at_ms

    def bind_token_to_topic(self, device_token: str, topic: str) -> None:
        """The token belongs to another app: pushes on other topics get DeviceTokenNotForTopic."""
        self._token_topics[device_token.lower()] = topic

    def fail_next(
        self, status: int, reason: str, *, retry_after: str | None = None, count: int = 1
    ) -> None:
        """Answer the next ``count`` otherwise-valid pushes with this error."""
        self._failures.append(_ScriptedFailure(status, reason, retry_after, count))

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far now gets 403 ExpiredProviderToken."""
        self._expired.update(self._verified)

    @property
    def distinct_provider_tokens(self) -> int:
        """How many different provider tokens (JWTs) clients have presented."""
        return len(self._verified)

    def pushes_for(self, device_token: str) -> list[ReceivedPush]:
        return [p for p in self.received if p.device_token == device_token.lower()]

    # the protocol

    def handler(self, request: H2Request) -> H2Response:
        self.requests += 1
        apns_id = request.headers.get("apns-id") or str(uuid.uuid4()).upper()
        status, reason, extra = self._check(request, apns_id)
        headers = [("apns-id", apns_id)]
        if status == 200:
            return H2Response(200, headers)
        body: dict[str, Any] = {"reason": reason}
        if "timestamp" in extra:
            body["timestamp"] = extra["timestamp"]
        if "retry-after" in extra:
            headers.append(("retry-after", extra["retry-after"]))
        headers.append(("content-type", "application/json"))
        return H2Response(status, headers, json.dumps(body).encode())

    def _check(self, request: H2Request, apns_id: str) -> tuple[int, str, dict[str, Any]]:
        h = request.headers
        if request.method != "POST":
            return 405, "MethodNotAllowed", {}
        if not request.path.startswith("/3/device/"):
            return 404, "BadPath", {}
        device_token = request.path[len("/3/device/") :].lower()

        principal, error = self._authenticate(request)
        if error:
            return 403, error, {}

        topic = h.get("apns-topic")
        if not topic:
            return 400, "MissingTopic", {}
        if topic not in self._topics.get(principal, set()):
            return 400, "TopicDisallowed", {}
        push_type = h.get("apns-push-type", "")
        if push_type not in _PUSH_TYPES:
            return 400, "InvalidPushType", {}
        if (push_type == "voip") != topic.endswith(".voip"):
            return 400, "InvalidPushType", {}
        priority_text = h.get("apns-priority", "10")
        if priority_text not in {"1", "5", "10"}:
            return 400, "BadPriority", {}
        if push_type == "background" and priority_text != "5":
            return 400, "BadPriority", {}
        expiration: int | None = None
        if "apns-expiration" in h:
            try:
                expiration = int(h["apns-expiration"])
            except ValueError:
                return 400, "BadExpirationDate", {}
        collapse_id = h.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            return 400, "BadCollapseId", {}
        limit = 5120 if push_type == "voip" else 4096
        if len(request.body) > limit:
            return 413, "PayloadTooLarge", {}
        if not request.body:
            return 400, "PayloadEmpty", {}
        try:
            payload = json.loads(request.body)
        except ValueError:
            return 400, "BadPayload", {}
        if not isinstance(payload, dict):
            return 400, "BadPayload", {}

        if not _TOKEN.fullmatch(device_token):
            return 400, "BadDeviceToken", {}
        if device_token in self._unregistered:
            return 410, "Unregistered", {"timestamp": self._unregistered[device_token]}
        bound = self._token_topics.get(device_token)
        if bound is not None and topic.removesuffix(".voip") != bound:
            return 400, "DeviceTokenNotForTopic", {}

        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.popleft()
            extra = {"retry-after": failure.retry_after} if failure.retry_after else {}
            return failure.status, failure.reason, extra

        if self.record:
            self.received.append(
                ReceivedPush(
                    device_token,
                    topic,
                    push_type,
                    int(priority_text),
                    expiration,
                    collapse_id,
                    payload,
                    principal,
                )
            )
        return 200, "", {}

    def _authenticate(self, request: H2Request) -> tuple[str, str]:
        """The principal ("token:<team>" / "certificate:<cn>") or an APNs 403 reason."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            if request.client_cert_cn is not None:
                return f"certificate:{request.client_cert_cn}", ""
            return "", "MissingProviderToken"
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return "", "InvalidProviderToken"
        cached = self._verified.get(token)
        if cached is None:
            try:
                header = jwt.get_unverified_header(token)
                unverified = jwt.decode(token, options={"verify_signature": False})
                key = self._keys.get((str(unverified.get("iss")), str(header.get("kid"))))
                if key is None or header.get("alg") != "ES256":
                    return "", "InvalidProviderToken"
                claims = jwt.decode(
                    token, key, algorithms=["ES256"], options={"require": ["iss", "iat"]}
                )
            except jwt.PyJWTError:
                return "", "InvalidProviderToken"
            cached = (str(claims["iss"]), int(claims["iat"]))
            self._verified[token] = cached
        team, issued_at = cached
        now = int(time.time())
        if token in self._expired or now - issued_at > _PROVIDER_TOKEN_LIFETIME:
            return "", "ExpiredProviderToken"
        return f"token:{team}", ""

"""A local FCM HTTP v1 endpoint plus the OAuth2 token endpoint it trusts.

``POST /token`` performs the JWT bearer grant (RFC 7523) for the test service account and hands
out opaque access tokens; ``POST /v1/projects/<id>/messages:send`` accepts only those tokens and
answers with FCM's status codes and ``google.rpc.Status`` error bodies (``UNREGISTERED``,
``INVALID_ARGUMENT`` for a bad token, ``QUOTA_EXCEEDED`` with ``Retry-After``, ...).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudphone.testing.tls import H2Request, H2Response, H2TestServer, TestCertificates

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_TTL = re.compile(r"\d+(\.\d{1,9})?s")
# Real registration tokens are long base64url-ish strings; anything else is INVALID_ARGUMENT.
_REGISTRATION_TOKEN = re.compile(r"[A-Za-z0-9_:\-]{20,4096}")
_MAX_DATA_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A test service account: the JSON file a provider configures, and its public key."""

    path: Path
    client_email: str
    public_key: rsa.RSAPublicKey


def make_service_account(
    directory: Path, project_id: str, token_uri: str = "https://oauth2.googleapis.com/token"
) -> ServiceAccount:
    """Write a Google-style service-account JSON file with a fresh RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    email = f"push@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "client_email": email,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = directory / f"{project_id}-service-account.json"
    path.write_text(json.dumps(info))
    path.chmod(0o600)
    return ServiceAccount(path, email, key.public_key())


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    project_id: str
    token: str
    message: dict[str, Any]


@dataclass(slots=True)
class _ScriptedFailure:
    status: int
    status_name: str
    error_code: str
    retry_after: str | None
    remaining: int


def _error(
    status: int,
    status_name: str,
    message: str,
    error_code: str | None = None,
    token_violation: bool = False,
) -> H2Response:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append(
            {
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": error_code,
            }
        )
    if token_violation:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": "message.token", "description": "Invalid registration token"}
                ],
            }
        )
    body = {"error": {"code": status, "message": message, "status": status_name}}
    if details:
        body["error"]["details"] = details
    return H2Response(status, [("content-type", "application/json")], json.dumps(body).encode())


class LocalFcm(H2TestServer):
    """FCM and its OAuth token endpoint on one local HTTP/2 server."""

    def __init__(
        self, certificates: TestCertificates | None = None, *, token_lifetime: int = 3600
    ) -> None:
        super().__init__(certificates)
        self.token_lifetime = token_lifetime
        self.received: list[ReceivedMessage] = []
        self.grants = 0
        self._accounts: dict[str, tuple[ServiceAccount, str]] = {}  # email → (account, project)
        self._access: dict[str, tuple[str, float]] = {}  # token → (project, expires at)
        self._unregistered: set[str] = set()
        self._failures: deque[_ScriptedFailure] = deque()
        self._grant_failures: deque[tuple[int, str | None]] = deque()

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    def trust(self, account: ServiceAccount, project_id: str) -> None:
        self._accounts[account.client_email] = (account, project_id)

    def unregister(self, registration_token: str) -> None:
        """The app was uninstalled: pushes to the token get 404 UNREGISTERED."""
        self._unregistered.add(registration_token)

    def expire_access_tokens(self) -> None:
        """Every access token issued so far now gets 401 UNAUTHENTICATED."""
        self._access.clear()

    def fail_next(
        self,
        status: int,
        status_name: str,
        error_code: str = "",
        *,
        retry_after: str | None = None,
        count: int = 1,
    ) -> None:
        self._failures.append(_ScriptedFailure(status, status_name, error_code, retry_after, count))

    def fail_next_grant(self, status: int, *, retry_after: str | None = None) -> None:
        """Answer the next token request with ``status`` (e.g. 503 while Google is down)."""
        self._grant_failures.append((status, retry_after))

    def handler(self, request: H2Request) -> H2Response:
        if request.method != "POST":
            return _error(405, "INVALID_ARGUMENT", "method not allowed")
        if request.path == "/token":
            if self._grant_failures:
                status, retry_after = self._grant_failures.popleft()
                headers = [("retry-after", retry_after)] if retry_after else []
                return H2Response(status, headers, b'{"error":"temporarily_unavailable"}')
            return self._grant(request)
        match = re.fullmatch(r"/v1/projects/([^/]+)/messages:send", request.path)
        if match is None:
            return _error(404, "NOT_FOUND", "not found")
        return self._send(request, match.group(1))

    def _grant(self, request: H2Request) -> H2Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._oauth_error("unsupported_grant_type")
        assertion = form.get("assertion", "")
        try:
            email = str(jwt.decode(assertion, options={"verify_signature": False})["iss"])
            account, project = self._accounts[email]
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                # Google tolerates some clock skew between provider and token endpoint.
                leeway=60,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except (jwt.PyJWTError, KeyError):
            return self._oauth_error("invalid_grant")
        if FCM_SCOPE not in str(claims["scope"]).split():
            return self._oauth_error("invalid_scope")
        token = "ya29.test-" + secrets.token_urlsafe(24)
        self._access[token] = (project, time.time() + self.token_lifetime)
        self.grants += 1
        body = {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        return H2Response(200, [("content-type", "application/json")], json.dumps(body).encode())

    @staticmethod
    def _oauth_error(error: str) -> H2Response:
        return H2Response(
            400, [("content-type", "application/json")], json.dumps({"error": error}).encode()
        )

    def _send(self, request: H2Request, project_id: str) -> H2Response:
        scheme, _, access = request.headers.get("authorization", "").partition(" ")
        granted = self._access.get(access) if scheme.lower() == "bearer" else None
        if granted is None or granted[1] < time.time():
            return _error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
                "THIRD_PARTY_AUTH_ERROR",
            )
        if granted[0] != project_id:
            return _error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH")
        try:
            message = json.loads(request.body)["message"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        problem = self._validate(message)
        if problem:
            return _error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
        token = str(message.get("token", ""))
        if not _REGISTRATION_TOKEN.fullmatch(token):
            return _error(
                400,
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "INVALID_ARGUMENT",
                token_violation=True,
            )
        if token in self._unregistered:
            return _error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if self._failures:
            failure = self._failures[0]
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.popleft()
            response = _error(
                failure.status, failure.status_name, "scripted failure", failure.error_code
            )
            if failure.retry_after:
                response.headers.append(("retry-after", failure.retry_after))
            return response
        self.received.append(ReceivedMessage(project_id, token, message))
        name = f"projects/{project_id}/messages/{secrets.randbelow(10**16)}"
        return H2Response(
            200, [("content-type", "application/json")], json.dumps({"name": name}).encode()
        )

    @staticmethod
    def _validate(message: dict[str, Any]) -> str:
        targets = [k for k in ("token", "topic", "condition") if k in message]
        if len(targets) != 1:
            return "Exactly one of token, topic or condition must be specified"
        data = message.get("data", {})
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            return "Invalid value at 'message.data': values must be strings"
        if len(json.dumps(data).encode()) > _MAX_DATA_BYTES:
            return "Message is too big"
        android = message.get("android", {})
        if android.get("priority", "normal") not in {"normal", "high", "NORMAL", "HIGH"}:
            return "Invalid value at 'message.android.priority'"
        ttl = android.get("ttl")
        if ttl is not None and not _TTL.fullmatch(str(ttl)):
            return "Invalid value at 'message.android.ttl'"
        return ""

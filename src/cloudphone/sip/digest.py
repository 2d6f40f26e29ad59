"""HTTP Digest authentication for SIP: RFC 3261 §22, RFC 7616, RFC 8760.

Algorithms MD5, SHA-256 and SHA-512-256 (and their ``-sess`` variants), ``qop=auth``.
The server side is stateless: a nonce carries its creation time and an HMAC over it, so any
process holding the key can check it and tell a stale nonce (§22.1 ``stale=true``) from a
forged one. Randomness (cnonce) and time are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from cloudphone.sip.errors import SIPSyntaxError
from cloudphone.sip.headers import quote, unquote_string
from cloudphone.sip.message import Request, Response

__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "digest_response",
    "parse_challenge",
]

_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
# Strongest first: the order in which a server offers challenges (RFC 8760 §2.4, RFC 7616 §3.7).
ALGORITHMS = ("SHA-512-256", "SHA-256", "MD5")

_AUTH_PARAM_RE = re.compile(
    r'[ \t]*([A-Za-z0-9\-_.!%*+`\'~]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^,\s]*)[ \t]*(?:,|$)'
)


def _hash(algorithm: str, text: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    return hashlib.new(_HASHES[base], text.encode("utf-8")).hexdigest()


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """``Digest k=v, k="v"`` → (scheme, {lower-case name: unquoted value}) (§25.1)."""
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _AUTH_PARAM_RE.match(rest, pos)
        if match is None or match.end() == pos:
            raise SIPSyntaxError("malformed authentication parameters")
        params[match.group(1).lower()] = unquote_string(match.group(2))
        pos = match.end()
    return scheme, params


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False

    @property
    def supported(self) -> bool:
        base = self.algorithm.upper().removesuffix("-SESS")
        return base in _HASHES and (not self.qop or "auth" in self.qop)


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge | None:
    """A Digest challenge, or None for another scheme (e.g. Basic, which SIP forbids)."""
    scheme, params = parse_auth_header(value)
    if scheme.lower() != "digest":
        return None
    if "realm" not in params or "nonce" not in params:
        raise SIPSyntaxError("Digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    ha1: str | None = None,
) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (and RFC 2617 without qop)."""
    if ha1 is None:
        ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password; ``realm`` None means "answer any realm" (§22.1)."""

    username: str
    password: str
    realm: str | None = None


class DigestClient:
    """Answers challenges in 401/407 responses by adding credentials to the next request."""

    def __init__(
        self,
        credentials: Credentials | Iterable[Credentials],
        *,
        cnonce: Callable[[], str] = lambda: secrets.token_hex(8),
        algorithms: Sequence[str] = ALGORITHMS,
    ) -> None:
        self._credentials = (
            [credentials] if isinstance(credentials, Credentials) else list(credentials)
        )
        self._cnonce = cnonce
        self._algorithms = {a.upper() for a in algorithms}
        self._nc: dict[str, int] = {}

    def _for_realm(self, realm: str) -> Credentials | None:
        for creds in self._credentials:
            if creds.realm == realm:
                return creds
        return next((c for c in self._credentials if c.realm is None), None)

    def challenges(self, response: Response) -> list[Challenge]:
        """Digest challenges of a 401 or 407, in the order the server gave them."""
        out: list[Challenge] = []
        for header, proxy in (("www-authenticate", False), ("proxy-authenticate", True)):
            for value in response.headers.get_all(header):
                challenge = parse_challenge(value, proxy=proxy)
                if challenge is not None:
                    out.append(challenge)
        return out

    def authorize(self, request: Request, response: Response) -> bool:
        """Add Authorization / Proxy-Authorization for each realm challenged in ``response``.

        Returns False when the challenge cannot be answered: no credentials for the realm, no
        supported algorithm, or the request already carried credentials for this very nonce
        (wrong password — unless the server says ``stale``, §22.1).
        """
        chosen: dict[tuple[str, bool], Challenge] = {}
        for challenge in self.challenges(response):
            key = (challenge.realm, challenge.proxy)
            if key in chosen or not challenge.supported:
                continue
            if challenge.algorithm.upper().removesuffix("-SESS") not in self._algorithms:
                continue
            chosen[key] = challenge  # first supported one wins: server lists preferred first
        if not chosen:
            return False
        # nonces our previous attempt (the request's current credentials) already used
        used: set[str] = set()
        for header in ("authorization", "proxy-authorization"):
            for value in request.headers.get_all(header):
                try:
                    used.add(parse_auth_header(value)[1].get("nonce", ""))
                except SIPSyntaxError:
                    continue
            request.headers.remove(header)
        for challenge in chosen.values():
            creds = self._for_realm(challenge.realm)
            if creds is None:
                return False
            if challenge.nonce in used and not challenge.stale:
                return False  # the same nonce refused twice: wrong credentials
            name = "Proxy-Authorization" if challenge.proxy else "Authorization"
            request.headers.add(name, self._credentials_header(request, challenge, creds))
        return True

    def _credentials_header(self, request: Request, ch: Challenge, creds: Credentials) -> str:
        uri = str(request.uri)
        parts = [
            f"username={quote(creds.username)}",
            f"realm={quote(ch.realm)}",
            f"nonce={quote(ch.nonce)}",
            f"uri={quote(uri)}",
        ]
        qop = "auth" if "auth" in ch.qop else None
        nc = cnonce = None
        if qop or ch.algorithm.upper().endswith("-SESS"):
            cnonce = self._cnonce()
        if qop:
            count = self._nc.get(ch.nonce, 0) + 1
            self._nc[ch.nonce] = count
            nc = f"{count:08x}"
        response = digest_response(
            algorithm=ch.algorithm,
            username=creds.username,
            realm=ch.realm,
            password=creds.password,
            method=request.method,
            uri=uri,
            nonce=ch.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
        )
        parts.append(f'response="{response}"')
        parts.append(f"algorithm={ch.algorithm}")
        if cnonce is not None:
            parts.append(f"cnonce={quote(cnonce)}")
        if ch.opaque is not None:
            parts.append(f"opaque={quote(ch.opaque)}")
        if qop:
            parts += [f"qop={qop}", f"nc={nc}"]
        return "Digest " + ", ".join(parts)


class AuthOutcome(Enum):
    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: send a challenge
    STALE = "stale"  # a nonce we issued, but expired: challenge with stale=true
    FAILED = "failed"  # wrong password, forged nonce, unknown user: challenge again or 403


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    username: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


class DigestServer:
    """Challenges and verifies Digest credentials for one realm with stateless nonces."""

    def __init__(
        self,
        realm: str,
        key: bytes,
        *,
        nonce_ttl: float = 300.0,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        check_uri: bool = True,
        proxy: bool = False,
    ) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self.realm = realm
        self._key = key
        self.nonce_ttl = nonce_ttl
        self.algorithms = tuple(algorithms)
        self.check_uri = check_uri
        self.proxy = proxy

    def make_nonce(self, now: float, salt: bytes) -> str:
        """``base64(time || salt || HMAC(key, time || salt || realm))`` — nothing to store."""
        body = struct.pack(">d", now) + salt
        mac = hmac.new(self._key, body + self.realm.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def _nonce_time(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) < 8 + 16:
            return None
        body, mac = raw[:-16], raw[-16:]
        expected = hmac.new(self._key, body + self.realm.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        (issued,) = struct.unpack(">d", body[:8])
        return float(issued)

    def challenge_headers(
        self, now: float, *, stale: bool = False, salt: bytes | None = None
    ) -> list[tuple[str, str]]:
        """One challenge per algorithm, preferred first (RFC 8760 §2.4)."""
        nonce = self.make_nonce(now, salt if salt is not None else secrets.token_bytes(8))
        name = "Proxy-Authenticate" if self.proxy else "WWW-Authenticate"
        extra = ", stale=true" if stale else ""
        return [
            (
                name,
                f'Digest realm={quote(self.realm)}, nonce="{nonce}", algorithm={alg}, '
                f'qop="auth"{extra}',
            )
            for alg in self.algorithms
        ]

    def verify(
        self, request: Request, now: float, password_for: Callable[[str], str | None]
    ) -> AuthResult:
        """Check the request's credentials for our realm. ``password_for(username)`` looks up
        the user's password (None = unknown user)."""
        header = "proxy-authorization" if self.proxy else "authorization"
        params: dict[str, str] | None = None
        for value in request.headers.get_all(header):
            try:
                scheme, candidate = parse_auth_header(value)
            except SIPSyntaxError:
                return AuthResult(AuthOutcome.FAILED)
            if scheme.lower() == "digest" and candidate.get("realm") == self.realm:
                params = candidate
                break
        if params is None:
            return AuthResult(AuthOutcome.MISSING)
        username = params.get("username")
        algorithm = params.get("algorithm", "MD5")
        nonce = params.get("nonce", "")
        if (
            not username
            or "response" not in params
            or algorithm.upper().removesuffix("-SESS") not in {a.upper() for a in self.algorithms}
        ):
            return AuthResult(AuthOutcome.FAILED, username)
        if self.check_uri and params.get("uri") != str(request.uri):
            return AuthResult(AuthOutcome.FAILED, username)
        issued = self._nonce_time(nonce)
        if issued is None:
            return AuthResult(AuthOutcome.FAILED, username)
        password = password_for(username)
        if password is None:
            return AuthResult(AuthOutcome.FAILED, username)
        qop = params.get("qop")
        if qop is not None and qop.lower() != "auth":
            return AuthResult(AuthOutcome.FAILED, username)
        expected = digest_response(
            algorithm=algorithm,
            username=username,
            realm=self.realm,
            password=password,
            method=request.method,
            uri=params.get("uri", ""),
            nonce=nonce,
            qop=qop,
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
        if not hmac.compare_digest(expected, params["response"].lower()):
            return AuthResult(AuthOutcome.FAILED, username)
        # Only a correct response with an old nonce is "stale" (§22.1, RFC 7616 §3.3).
        if now - issued > self.nonce_ttl or issued > now + 1.0:
            return AuthResult(AuthOutcome.STALE, username)
        return AuthResult(AuthOutcome.OK, username)

"""Promise P2: push traffic goes only to the push services the operator configured.

Every outbound request of the push senders passes :meth:`AllowedDestinations.check` before a
socket is opened: the httpx-based senders through :class:`GuardedTransport`, the APNs client
when it connects. A Web Push subscription is supplied by a device, so its endpoint is untrusted
input: without this check a crafted subscription could make the server post to any URL.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


class DestinationRefused(Exception):
    """An outbound push request to a destination that is not configured."""

    def __init__(self, url: str) -> None:
        # Only the origin: paths of push endpoints carry subscription secrets.
        parts = urlsplit(url)
        super().__init__(f"destination not configured for push: {parts.scheme}://{parts.netloc}")


@dataclass(frozen=True, slots=True)
class _Rule:
    host: str  # exact host, or ".suffix" for any subdomain of suffix
    port: int | None  # None: the scheme's default port only

    def matches(self, host: str, port: int) -> bool:
        if self.host.startswith("."):
            host_ok = host.endswith(self.host) and len(host) > len(self.host)
        else:
            host_ok = host == self.host
        return host_ok and port == (self.port if self.port is not None else 443)


def _parse_rule(pattern: str) -> _Rule:
    if "://" in pattern:
        parts = urlsplit(pattern)
        host, port = (parts.hostname or "").lower(), parts.port
    else:
        host, _, port_text = pattern.lower().partition(":")
        port = int(port_text) if port_text else None
    if host.startswith("*."):
        host = host[1:]
    if not host:
        raise ValueError(f"not a host pattern: {pattern!r}")
    return _Rule(host, port)


class AllowedDestinations:
    """HTTPS origins (host patterns with optional port) that push requests may reach."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._rules = tuple(_parse_rule(p) for p in patterns)

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        # Push credentials and payloads never travel in clear text.
        if parts.scheme != "https" or not parts.hostname:
            return False
        try:
            port = parts.port or 443
        except ValueError:
            return False
        host = parts.hostname.lower()
        return any(rule.matches(host, port) for rule in self._rules)

    def check(self, url: str) -> None:
        if not self.allows(url):
            raise DestinationRefused(url)


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that refuses requests to destinations outside the allow-list.

    Sitting below the client, it also catches redirects and any URL built anywhere else.
    """

    def __init__(self, allowed: AllowedDestinations, inner: httpx.AsyncBaseTransport) -> None:
        self._allowed = allowed
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._allowed.check(str(request.url))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(
    allowed: AllowedDestinations,
    *,
    verify: ssl.SSLContext | bool = True,
    timeout: float = 10.0,
    http2: bool = True,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """The only way the push senders make HTTP requests: through the P2 allow-list."""
    inner = httpx.AsyncHTTPTransport(
        verify=verify,
        http2=http2,
        limits=httpx.Limits(max_connections=max_connections),
    )
    return httpx.AsyncClient(
        transport=GuardedTransport(allowed, inner),
        timeout=timeout,
        follow_redirects=False,
    )

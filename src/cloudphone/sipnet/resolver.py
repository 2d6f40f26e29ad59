"""Locating SIP servers (RFC 3263 §4): NAPTR → SRV → A/AAAA with dnspython.

IP literals are used as they are; an explicit port skips NAPTR and SRV; an explicit transport
skips NAPTR. TLS targets keep the host name of the URI for certificate verification.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver

from cloudphone.sip.uri import SipURI

__all__ = ["Resolver", "Target"]

_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
_NAPTR_SERVICES = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}
_SRV_PREFIX = {"UDP": "_sip._udp", "TCP": "_sip._tcp", "TLS": "_sips._tcp"}

Lookup = Callable[[str, str], Awaitable[Sequence[Any]]]


@dataclass(frozen=True, slots=True)
class Target:
    transport: str  # "UDP", "TCP", "TLS"
    host: str  # an IP address
    port: int
    server_name: str | None = None  # the name to verify a TLS certificate against


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


async def _dnspython_lookup(name: str, rdtype: str) -> Sequence[Any]:
    try:
        answer = await dns.asyncresolver.resolve(name, rdtype)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout:
        return []
    return list(answer)


class Resolver:
    """RFC 3263 client-side resolution. ``lookup(name, rdtype)`` returns dnspython rdata."""

    def __init__(
        self, lookup: Lookup | None = None, *, supported: Sequence[str] = ("UDP", "TCP", "TLS")
    ) -> None:
        self._lookup = lookup or _dnspython_lookup
        self.supported = tuple(supported)

    async def resolve(self, uri: SipURI) -> list[Target]:
        """Targets to try in order (§4.1, §4.2)."""
        secure = uri.scheme.lower() == "sips"
        transport = uri.transport.upper() if uri.transport else None
        if transport == "TCP" and secure:
            transport = "TLS"
        host = uri.param("maddr") or uri.host
        ip = _ip(host)
        name = host.rstrip(".")
        if ip is not None:
            # §4.1: a numeric IP without transport means UDP (TLS for sips)
            chosen = transport or ("TLS" if secure else "UDP")
            return [Target(chosen, ip, uri.port or _DEFAULT_PORT[chosen], None)]
        if uri.port is not None:
            chosen = transport or ("TLS" if secure else "UDP")
            return await self._addresses(name, uri.port, chosen)
        if transport is None:
            transport_srv = await self._naptr(name, secure)
            if transport_srv:
                return transport_srv
            for candidate in ("TLS",) if secure else ("UDP", "TCP", "TLS"):
                if candidate in self.supported:
                    found = await self._srv(f"{_SRV_PREFIX[candidate]}.{name}", candidate, name)
                    if found:
                        return found
            chosen = "TLS" if secure else "UDP"
            return await self._addresses(name, _DEFAULT_PORT[chosen], chosen)
        found = await self._srv(f"{_SRV_PREFIX[transport]}.{name}", transport, name)
        return found or await self._addresses(name, _DEFAULT_PORT[transport], transport)

    async def _naptr(self, name: str, secure: bool) -> list[Target]:
        records = await self._lookup(name, "NAPTR")
        usable = []
        for rec in records:
            service = (
                rec.service.decode().upper()
                if isinstance(rec.service, bytes)
                else str(rec.service).upper()
            )
            transport = _NAPTR_SERVICES.get(service)
            if transport is None or transport not in self.supported:
                continue
            if secure and transport != "TLS":
                continue
            if (
                rec.flags.decode() if isinstance(rec.flags, bytes) else str(rec.flags)
            ).lower() != "s":
                continue
            usable.append((rec.order, rec.preference, transport, str(rec.replacement).rstrip(".")))
        out: list[Target] = []
        for _, _, transport, replacement in sorted(usable):
            out += await self._srv(replacement, transport, name)
        return out

    async def _srv(self, srv_name: str, transport: str, server_name: str) -> list[Target]:
        records = await self._lookup(srv_name, "SRV")
        # RFC 2782: lowest priority first; weight ordering simplified to highest weight first
        ordered = sorted(records, key=lambda r: (r.priority, -r.weight))
        out: list[Target] = []
        for rec in ordered:
            target = str(rec.target).rstrip(".")
            if target == "":
                continue
            out += await self._addresses(target, rec.port, transport, server_name)
        return out

    async def _addresses(
        self, name: str, port: int, transport: str, server_name: str | None = None
    ) -> list[Target]:
        ip = _ip(name)
        if ip is not None:
            return [Target(transport, ip, port, server_name)]
        out: list[Target] = []
        for rdtype in ("A", "AAAA"):
            for rec in await self._lookup(name, rdtype):
                out.append(Target(transport, str(rec.address), port, server_name or name))
        return out

"""The seam between push instances and the registration engine that keeps them registered.

``RegistrationTarget`` is the only place a SIP password lives in memory outside the database:
as a ``bytearray`` that ``wipe()`` overwrites when the instance ends (promise P4). Python may
still hold transient copies (e.g. inside a digest computation); we keep them short-lived and
never store a ``str`` of the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cloudphone.sip.headers import as_sip_uri
from cloudphone.sip.uri import SipURI, parse_uri


@dataclass(slots=True, eq=False)
class RegistrationTarget:
    instance_id: str
    contact_key: str
    address_of_record: str
    registrar: str
    outbound_proxy: str | None
    transport: str
    expiry: int
    auth_username: bytearray = field(repr=False)
    password: bytearray = field(repr=False)

    def wipe(self) -> None:
        for secret in (self.auth_username, self.password):
            secret[:] = bytes(len(secret))
            secret.clear()


class Upstream(Protocol):
    """Keeps instances registered at their provider."""

    async def register(self, target: RegistrationTarget) -> None:
        """Start (or restart) keeping ``target`` registered; returns without waiting."""
        ...

    async def unregister(self, instance_id: str) -> None:
        """Send REGISTER with Expires: 0 (best effort, bounded in time), then forget the
        instance and wipe its credentials from memory."""
        ...

    async def close(self) -> None:
        """Stop: forget every instance (wiping credentials) without unregistering, so the
        provider keeps the bindings while the gateway restarts."""
        ...


class StateSink(Protocol):
    """Where the engine reports what the provider said, so the API can show it. Batched:
    instance id -> (registered, last SIP status, granted expiry in seconds)."""

    async def registration_states(
        self, states: dict[str, tuple[bool, int | None, int | None]]
    ) -> None: ...


def parse_hop(hop: str) -> SipURI:
    """A configured ``host[:port]`` read by the SIP URI grammar (RFC 3261 §25; IPv6 references
    per RFC 5118)."""
    return as_sip_uri(parse_uri(f"sip:{hop}"))


def split_hostport(hop: str, default_port: int) -> tuple[str, int]:
    """Host and port of a hop for the socket layer (IPv6 brackets removed)."""
    uri = parse_hop(hop)
    return uri.host.strip("[]"), uri.port or default_port
